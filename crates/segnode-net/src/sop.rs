//! What the node accepts: the SOP classes (abstract syntaxes) of the Storage and Verification service
//! classes, and the transfer syntaxes the node can decode later in the pipeline.
//!
//! Offering a transfer syntax that the volume loader cannot decode would acknowledge data we cannot use,
//! so the list is short on purpose: JPEG-LS, 12-bit lossy JPEG, MPEG and big endian are refused per
//! presentation context, and the sender can fall back to a syntax we take.

pub const VERIFICATION: &str = "1.2.840.10008.1.1";

/// Storage SOP classes accepted by the C-STORE SCP, with a short name for logs.
pub const STORAGE_SOP_CLASSES: &[(&str, &str)] = &[
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
    ("1.2.840.10008.5.1.4.1.1.66.4", "Segmentation Storage"),
    ("1.2.840.10008.5.1.4.1.1.481.3", "RT Structure Set Storage"),
];

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
}
