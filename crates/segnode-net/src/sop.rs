//! What the node accepts: every Storage SOP class of the standard and Verification, and per class the
//! transfer syntaxes taken.
//!
//! Image classes a pipeline may read ([`PIPELINE_IMAGE_CLASSES`]) are taken only in a transfer syntax
//! the volume loader can decode — acknowledging pixel data we cannot use would be a silent loss — so
//! for them 12-bit lossy JPEG, MPEG and big endian are refused per presentation context and the sender
//! falls back to a syntax we take. JPEG-LS (lossless and near-lossless) is decoded by CharLS. Every other storage class (dose reports, key objects,
//! presentation states, PDFs, scouts of other modalities …) is stored as received, in any transfer
//! syntax whose data set dicom-rs can read, so a PACS forwarding a whole study never sees a refusal;
//! such objects are indexed and kept but never fed to a pipeline.

pub const VERIFICATION: &str = "1.2.840.10008.1.1";

/// Every Storage SOP class accepted by the C-STORE SCP, with its name.
pub const STORAGE_SOP_CLASSES: &[(&str, &str)] = crate::storage_classes::ALL_STORAGE;

/// The image classes a pipeline may read: accepted only in a decodable transfer syntax
/// ([`TRANSFER_SYNTAXES`]).
pub const PIPELINE_IMAGE_CLASSES: &[(&str, &str)] = &[
    ("1.2.840.10008.5.1.4.1.1.2", "CT Image Storage"),
    ("1.2.840.10008.5.1.4.1.1.2.1", "Enhanced CT Image Storage"),
    (
        "1.2.840.10008.5.1.4.1.1.2.2",
        "Legacy Converted Enhanced CT Image Storage",
    ),
    ("1.2.840.10008.5.1.4.1.1.4", "MR Image Storage"),
    ("1.2.840.10008.5.1.4.1.1.4.1", "Enhanced MR Image Storage"),
    (
        "1.2.840.10008.5.1.4.1.1.13.1.2",
        "X-Ray 3D Craniofacial Image Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.7",
        "Secondary Capture Image Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.7.2",
        "Multi-frame Grayscale Byte Secondary Capture Image Storage",
    ),
    (
        "1.2.840.10008.5.1.4.1.1.7.3",
        "Multi-frame Grayscale Word Secondary Capture Image Storage",
    ),
];

/// Whether a pipeline may read instances of `sop_class` (an image class of [`PIPELINE_IMAGE_CLASSES`]).
pub fn is_pipeline_image(sop_class: &str) -> bool {
    let c = sop_class.trim_end_matches('\0').trim();
    PIPELINE_IMAGE_CLASSES.iter().any(|(uid, _)| *uid == c)
}

/// Transfer syntaxes accepted, in the order we prefer when a peer offers several in one context.
pub const TRANSFER_SYNTAXES: &[(&str, &str)] = &[
    ("1.2.840.10008.1.2.1", "Explicit VR Little Endian"),
    ("1.2.840.10008.1.2", "Implicit VR Little Endian"),
    (
        "1.2.840.10008.1.2.1.99",
        "Deflated Explicit VR Little Endian",
    ),
    ("1.2.840.10008.1.2.5", "RLE Lossless"),
    ("1.2.840.10008.1.2.4.50", "JPEG Baseline (Process 1)"),
    (
        "1.2.840.10008.1.2.4.57",
        "JPEG Lossless, Non-Hierarchical (Process 14)",
    ),
    (
        "1.2.840.10008.1.2.4.70",
        "JPEG Lossless, First-Order Prediction (Process 14, SV1)",
    ),
    (
        "1.2.840.10008.1.2.4.80",
        "JPEG-LS Lossless Image Compression",
    ),
    (
        "1.2.840.10008.1.2.4.81",
        "JPEG-LS Lossy (Near-Lossless) Image Compression",
    ),
    (
        "1.2.840.10008.1.2.4.90",
        "JPEG 2000 Image Compression (Lossless Only)",
    ),
    ("1.2.840.10008.1.2.4.91", "JPEG 2000 Image Compression"),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Every transfer syntax we accept must be one the dicom-rs registry in this build can decode.
    #[test]
    fn every_accepted_transfer_syntax_is_decodable() {
        for (uid, name) in TRANSFER_SYNTAXES {
            assert!(
                dicom_ul::association::server::is_supported(uid),
                "{name} ({uid}) not supported"
            );
            let ts = dicom_transfer_syntax_registry::TransferSyntaxRegistry
                .get(uid)
                .unwrap_or_else(|| panic!("{uid} unknown"));
            assert!(ts.can_decode_all(), "{name} ({uid}) has no pixel decoder");
        }
    }

    use dicom_encoding::transfer_syntax::TransferSyntaxIndex;

    #[test]
    fn pipeline_images_are_storage_classes_and_others_are_not_pipeline_images() {
        for (uid, name) in PIPELINE_IMAGE_CLASSES {
            assert!(
                STORAGE_SOP_CLASSES.iter().any(|(u, _)| u == uid),
                "{name} is not a storage class"
            );
        }
        assert!(is_pipeline_image("1.2.840.10008.5.1.4.1.1.2\0"));
        for other in [
            "1.2.840.10008.5.1.4.1.1.88.67", // X-Ray Radiation Dose SR
            "1.2.840.10008.5.1.4.1.1.88.59", // Key Object Selection
            "1.2.840.10008.5.1.4.1.1.11.1",  // Grayscale Softcopy Presentation State
            "1.2.840.10008.5.1.4.1.1.104.1", // Encapsulated PDF
            "1.2.840.10008.5.1.4.1.1.66.4",  // Segmentation
        ] {
            assert!(
                STORAGE_SOP_CLASSES.iter().any(|(u, _)| *u == other),
                "{other}"
            );
            assert!(!is_pipeline_image(other), "{other}");
        }
    }
}
