//! Writing a phantom as a series folder of CT Image Storage files (Explicit VR Little Endian), with file
//! names that do not follow the slice order and the storage convention of the variant; or as one
//! multi-frame object (`multiframe.rs`) with the same pixels, UIDs and frame order.

use crate::multiframe::{write_multiframe, Anatomy, Frame, MultiFrame, ObjectUids};
use crate::slices::{PhantomWriteError, SeriesTags, SlicePixels, WrittenSeries};
use crate::{rng::Rng, Phantom, Storage};
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use rayon::prelude::*;
use segnode_imaging::result::uid::now_da_tm;
use std::path::Path;

/// Write the phantom into `dir` (created if needed), one file per slice.
pub fn write_series(ph: &Phantom, dir: &Path) -> Result<WrittenSeries, PhantomWriteError> {
    write_chest(ph, dir, None)
}

/// Write the phantom into `dir` (created if needed) as one multi-frame object of the given IOD; frames
/// in the order of the single-frame files' InstanceNumber. Study / series / frame of reference UIDs are
/// those of [`write_series`] with the same seed.
pub fn write_series_multiframe(
    ph: &Phantom,
    dir: &Path,
    kind: MultiFrame,
) -> Result<WrittenSeries, PhantomWriteError> {
    write_chest(ph, dir, Some(kind))
}

fn write_chest(
    ph: &Phantom,
    dir: &Path,
    multiframe: Option<MultiFrame>,
) -> Result<WrittenSeries, PhantomWriteError> {
    std::fs::create_dir_all(dir).map_err(|source| PhantomWriteError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let spec = &ph.spec;
    let mut rng = Rng::new(spec.seed ^ 0x5EED);
    let study = rng.uid();
    let series = rng.uid();
    let frame_of_ref = rng.uid();
    let sop_uids: Vec<String> = (0..ph.hu.shape()[0]).map(|_| rng.uid()).collect();
    let (date, time) = now_da_tm();
    let g = &ph.geometry;
    let n = ph.hu.shape()[0];
    // inferior end first when numbering from the feet
    let inferior_first = g.normal[2] > 0.0;
    let series_tags = SeriesTags {
        image_type: "ORIGINAL\\PRIMARY\\AXIAL",
        accession: "PH0001",
        series_description: format!("Phantom chest {}", spec.variant.name()),
        patient_name: format!("PHANTOM^{}", spec.variant.name().to_uppercase()),
        patient_id: format!("PH-{}", spec.seed),
        birth_date: "19600101",
        body_part: "CHEST",
        slice_thickness: spec.slice_spacing,
        kvp: "120",
        patient_position: spec.patient_position,
        series_number: "2",
        iop: spec.iop,
        rows: spec.matrix,
        columns: spec.matrix,
        pixel_spacing: g.pixel_spacing,
        study: &study,
        series: &series,
        frame_of_reference: &frame_of_ref,
        date: &date,
        time: &time,
    };
    let slice = |k: usize| {
        let from_feet = if inferior_first { k } else { n - 1 - k };
        let number = if spec.number_from_feet {
            from_feet + 1
        } else {
            n - from_feet
        };
        let plane = ph.hu.index_axis(ndarray::Axis(0), k);
        let oof = ph.out_of_field.index_axis(ndarray::Axis(0), k);
        let mut bytes = Vec::with_capacity(plane.len() * 2);
        let pixels = match spec.storage {
            Storage::Unsigned => {
                for (&h, &out) in plane.iter().zip(oof.iter()) {
                    let v: u16 = if out {
                        0
                    } else {
                        (h as i32 + 1024).clamp(0, 4095) as u16
                    };
                    bytes.extend_from_slice(&v.to_le_bytes());
                }
                SlicePixels {
                    bits_stored: 12,
                    signed: false,
                    intercept: "-1024",
                    padding: None,
                    bytes,
                }
            }
            Storage::SignedPadding | Storage::SignedOutOfField => {
                let fill: i16 = if spec.storage == Storage::SignedPadding {
                    -2000
                } else {
                    -3024
                };
                for (&h, &out) in plane.iter().zip(oof.iter()) {
                    let v = if out { fill } else { h };
                    bytes.extend_from_slice(&v.to_le_bytes());
                }
                let padding = (spec.storage == Storage::SignedPadding).then_some(fill);
                SlicePixels {
                    bits_stored: 16,
                    signed: true,
                    intercept: "0",
                    padding,
                    bytes,
                }
            }
        };
        (number, g.index_to_patient(k as f64, 0.0, 0.0), pixels)
    };
    let object = multiframe.map(|kind| {
        let anatomy = Anatomy {
            region: segnode_imaging::segment::codes::CodedConcept::new("51185008", "SCT", "Thorax"),
            laterality: "U",
        };
        (kind, anatomy)
    });
    // file names scrambled relative to the position
    write_slices(
        dir,
        "IM",
        n,
        &series_tags,
        &sop_uids,
        &mut rng,
        object,
        slice,
    )
}

/// Write the `n` slices of a phantom series — `slice(k)` gives slice k's (instance number, position,
/// pixels) — as one multi-frame object (`object`: its IOD and anatomy; its own UIDs drawn next from
/// `rng`), or else as single-frame files named `<prefix><k scrambled>.dcm`, so that file names do not
/// follow the slice order.
#[allow(clippy::too_many_arguments)]
pub(super) fn write_slices(
    dir: &Path,
    prefix: &str,
    n: usize,
    series_tags: &SeriesTags,
    sop_uids: &[String],
    rng: &mut Rng,
    object: Option<(MultiFrame, Anatomy)>,
    slice: impl Fn(usize) -> (usize, [f64; 3], SlicePixels) + Sync,
) -> Result<WrittenSeries, PhantomWriteError> {
    let files = match object {
        Some((kind, anatomy)) => {
            let uids = ObjectUids {
                sop_instance: rng.uid(),
                dimension_organization: rng.uid(),
                irradiation_event: rng.uid(),
            };
            let path = dir.join(format!("{}.dcm", kind.name()));
            let frames = frames_in_number_order((0..n).into_par_iter().map(&slice).collect());
            write_multiframe(&path, kind, series_tags, &anatomy, &uids, frames)?;
            vec![path]
        }
        None => (0..n)
            .into_par_iter()
            .map(|k| {
                let path = dir.join(format!(
                    "{prefix}{:08X}.dcm",
                    (k as u64).wrapping_mul(2_654_435_761) % 0xFFFF_FFFF
                ));
                let (number, position, pixels) = slice(k);
                write_ct_slice(&path, series_tags, &sop_uids[k], number, position, pixels)?;
                Ok(path)
            })
            .collect::<Result<Vec<_>, PhantomWriteError>>()?,
    };
    Ok(WrittenSeries {
        study_instance_uid: series_tags.study.to_string(),
        series_instance_uid: series_tags.series.to_string(),
        files,
    })
}

/// (instance number, position, pixels) of each slice → frames ordered by instance number.
pub(super) fn frames_in_number_order(
    mut slices: Vec<(usize, [f64; 3], SlicePixels)>,
) -> Vec<Frame> {
    slices.sort_by_key(|s| s.0);
    slices
        .into_iter()
        .map(|(_, position, pixels)| Frame { position, pixels })
        .collect()
}

/// Write one CT Image Storage file (Explicit VR Little Endian).
pub(super) fn write_ct_slice(
    path: &Path,
    t: &SeriesTags,
    sop_uid: &str,
    instance_number: usize,
    position: [f64; 3],
    pixels: SlicePixels,
) -> Result<(), PhantomWriteError> {
    use segnode_imaging::result::dataset::{ds, ds_multi};
    let mut o = InMemDicomObject::new_empty();
    let mut s = |tag, vr, v: &str| {
        o.put(DataElement::new(tag, vr, PrimitiveValue::from(v)));
    };
    s(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 100");
    s(tags::IMAGE_TYPE, VR::CS, t.image_type);
    s(tags::SOP_CLASS_UID, VR::UI, uids::CT_IMAGE_STORAGE);
    s(tags::SOP_INSTANCE_UID, VR::UI, sop_uid);
    s(tags::STUDY_DATE, VR::DA, t.date);
    s(tags::STUDY_TIME, VR::TM, t.time);
    s(tags::ACCESSION_NUMBER, VR::SH, t.accession);
    s(tags::MODALITY, VR::CS, "CT");
    s(tags::MANUFACTURER, VR::LO, "segnode phantom");
    s(tags::REFERRING_PHYSICIAN_NAME, VR::PN, "");
    s(tags::SERIES_DESCRIPTION, VR::LO, &t.series_description);
    s(tags::PATIENT_NAME, VR::PN, &t.patient_name);
    s(tags::PATIENT_ID, VR::LO, &t.patient_id);
    s(tags::PATIENT_BIRTH_DATE, VR::DA, t.birth_date);
    s(tags::PATIENT_SEX, VR::CS, "O");
    s(tags::BODY_PART_EXAMINED, VR::CS, t.body_part);
    s(tags::SLICE_THICKNESS, VR::DS, &ds(t.slice_thickness));
    s(tags::KVP, VR::DS, t.kvp);
    s(tags::PATIENT_POSITION, VR::CS, t.patient_position);
    s(tags::STUDY_INSTANCE_UID, VR::UI, t.study);
    s(tags::SERIES_INSTANCE_UID, VR::UI, t.series);
    s(tags::STUDY_ID, VR::SH, "1");
    s(tags::SERIES_NUMBER, VR::IS, t.series_number);
    s(tags::INSTANCE_NUMBER, VR::IS, &instance_number.to_string());
    s(tags::IMAGE_POSITION_PATIENT, VR::DS, &ds_multi(&position));
    s(tags::IMAGE_ORIENTATION_PATIENT, VR::DS, &ds_multi(&t.iop));
    s(tags::FRAME_OF_REFERENCE_UID, VR::UI, t.frame_of_reference);
    s(tags::POSITION_REFERENCE_INDICATOR, VR::LO, "");
    s(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2");
    s(tags::PIXEL_SPACING, VR::DS, &ds_multi(&t.pixel_spacing));
    s(tags::RESCALE_INTERCEPT, VR::DS, pixels.intercept);
    s(tags::RESCALE_SLOPE, VR::DS, "1");
    s(tags::RESCALE_TYPE, VR::LO, "HU");
    let mut u = |tag, v: u16| {
        o.put(DataElement::new(tag, VR::US, PrimitiveValue::from(v)));
    };
    u(tags::SAMPLES_PER_PIXEL, 1);
    u(tags::ROWS, t.rows as u16);
    u(tags::COLUMNS, t.columns as u16);
    u(tags::BITS_ALLOCATED, 16);
    u(tags::BITS_STORED, pixels.bits_stored);
    u(tags::HIGH_BIT, pixels.bits_stored - 1);
    u(tags::PIXEL_REPRESENTATION, u16::from(pixels.signed));
    if let Some(fill) = pixels.padding {
        o.put(DataElement::new(
            tags::PIXEL_PADDING_VALUE,
            VR::SS,
            PrimitiveValue::from(fill),
        ));
    }
    o.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::from(pixels.bytes),
    ));
    let derr = |reason: String| PhantomWriteError::Dicom {
        path: path.to_path_buf(),
        reason,
    };
    let meta = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(uids::CT_IMAGE_STORAGE)
        .media_storage_sop_instance_uid(sop_uid)
        .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
        .implementation_class_uid(segnode_imaging::IMPLEMENTATION_CLASS_UID)
        .build()
        .map_err(|e| derr(e.to_string()))?;
    o.with_exact_meta(meta)
        .write_to_file(path)
        .map_err(|e| derr(e.to_string()))
}
