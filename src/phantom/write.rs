//! Writing a phantom as a series folder of CT Image Storage files (Explicit VR Little Endian), with file
//! names that do not follow the slice order and the storage convention of the variant.

use super::{rng::Rng, Phantom, Storage};
use crate::result::uid::now_da_tm;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PhantomWriteError {
    #[error("cannot create {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {reason}")]
    Dicom { path: PathBuf, reason: String },
}

/// UIDs of a written phantom series.
#[derive(Debug, Clone)]
pub struct WrittenSeries {
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub files: Vec<PathBuf>,
}

/// Write the phantom into `dir` (created if needed), one file per slice.
pub fn write_series(ph: &Phantom, dir: &Path) -> Result<WrittenSeries, PhantomWriteError> {
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
    let files: Vec<Result<PathBuf, PhantomWriteError>> = (0..n)
        .into_par_iter()
        .map(|k| {
            let from_feet = if inferior_first { k } else { n - 1 - k };
            let number = if spec.number_from_feet {
                from_feet + 1
            } else {
                n - from_feet
            };
            // file names scrambled relative to the position
            let name = format!(
                "IM{:08X}.dcm",
                (k as u64).wrapping_mul(2_654_435_761) % 0xFFFF_FFFF
            );
            let path = dir.join(name);
            let mut o = InMemDicomObject::new_empty();
            let s = |o: &mut InMemDicomObject, tag, vr, v: &str| {
                o.put(DataElement::new(tag, vr, PrimitiveValue::from(v)));
            };
            let u = |o: &mut InMemDicomObject, tag, v: u16| {
                o.put(DataElement::new(tag, VR::US, PrimitiveValue::from(v)));
            };
            let pos = g.index_to_patient(k as f64, 0.0, 0.0);
            s(&mut o, tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 100");
            s(&mut o, tags::IMAGE_TYPE, VR::CS, "ORIGINAL\\PRIMARY\\AXIAL");
            s(&mut o, tags::SOP_CLASS_UID, VR::UI, uids::CT_IMAGE_STORAGE);
            s(&mut o, tags::SOP_INSTANCE_UID, VR::UI, &sop_uids[k]);
            s(&mut o, tags::STUDY_DATE, VR::DA, &date);
            s(&mut o, tags::STUDY_TIME, VR::TM, &time);
            s(&mut o, tags::ACCESSION_NUMBER, VR::SH, "PH0001");
            s(&mut o, tags::MODALITY, VR::CS, "CT");
            s(&mut o, tags::MANUFACTURER, VR::LO, "segnode phantom");
            s(&mut o, tags::REFERRING_PHYSICIAN_NAME, VR::PN, "");
            s(
                &mut o,
                tags::SERIES_DESCRIPTION,
                VR::LO,
                &format!("Phantom chest {}", spec.variant.name()),
            );
            s(
                &mut o,
                tags::PATIENT_NAME,
                VR::PN,
                &format!("PHANTOM^{}", spec.variant.name().to_uppercase()),
            );
            s(
                &mut o,
                tags::PATIENT_ID,
                VR::LO,
                &format!("PH-{}", spec.seed),
            );
            s(&mut o, tags::PATIENT_BIRTH_DATE, VR::DA, "19600101");
            s(&mut o, tags::PATIENT_SEX, VR::CS, "O");
            s(&mut o, tags::BODY_PART_EXAMINED, VR::CS, "CHEST");
            s(
                &mut o,
                tags::SLICE_THICKNESS,
                VR::DS,
                &crate::result::dataset::ds(spec.slice_spacing),
            );
            s(&mut o, tags::KVP, VR::DS, "120");
            s(
                &mut o,
                tags::PATIENT_POSITION,
                VR::CS,
                spec.patient_position,
            );
            s(&mut o, tags::STUDY_INSTANCE_UID, VR::UI, &study);
            s(&mut o, tags::SERIES_INSTANCE_UID, VR::UI, &series);
            s(&mut o, tags::STUDY_ID, VR::SH, "1");
            s(&mut o, tags::SERIES_NUMBER, VR::IS, "2");
            s(&mut o, tags::INSTANCE_NUMBER, VR::IS, &number.to_string());
            s(
                &mut o,
                tags::IMAGE_POSITION_PATIENT,
                VR::DS,
                &crate::result::dataset::ds_multi(&pos),
            );
            s(
                &mut o,
                tags::IMAGE_ORIENTATION_PATIENT,
                VR::DS,
                &crate::result::dataset::ds_multi(&spec.iop),
            );
            s(&mut o, tags::FRAME_OF_REFERENCE_UID, VR::UI, &frame_of_ref);
            s(&mut o, tags::POSITION_REFERENCE_INDICATOR, VR::LO, "");
            u(&mut o, tags::SAMPLES_PER_PIXEL, 1);
            s(
                &mut o,
                tags::PHOTOMETRIC_INTERPRETATION,
                VR::CS,
                "MONOCHROME2",
            );
            u(&mut o, tags::ROWS, spec.matrix as u16);
            u(&mut o, tags::COLUMNS, spec.matrix as u16);
            s(
                &mut o,
                tags::PIXEL_SPACING,
                VR::DS,
                &crate::result::dataset::ds_multi(&g.pixel_spacing),
            );
            u(&mut o, tags::BITS_ALLOCATED, 16);
            let plane = ph.hu.index_axis(ndarray::Axis(0), k);
            let oof = ph.out_of_field.index_axis(ndarray::Axis(0), k);
            let mut bytes = Vec::with_capacity(plane.len() * 2);
            match spec.storage {
                Storage::Unsigned => {
                    u(&mut o, tags::BITS_STORED, 12);
                    u(&mut o, tags::HIGH_BIT, 11);
                    u(&mut o, tags::PIXEL_REPRESENTATION, 0);
                    s(&mut o, tags::RESCALE_INTERCEPT, VR::DS, "-1024");
                    for (&h, &out) in plane.iter().zip(oof.iter()) {
                        let v: u16 = if out {
                            0
                        } else {
                            (h as i32 + 1024).clamp(0, 4095) as u16
                        };
                        bytes.extend_from_slice(&v.to_le_bytes());
                    }
                }
                Storage::SignedPadding | Storage::SignedOutOfField => {
                    u(&mut o, tags::BITS_STORED, 16);
                    u(&mut o, tags::HIGH_BIT, 15);
                    u(&mut o, tags::PIXEL_REPRESENTATION, 1);
                    s(&mut o, tags::RESCALE_INTERCEPT, VR::DS, "0");
                    let fill: i16 = if spec.storage == Storage::SignedPadding {
                        -2000
                    } else {
                        -3024
                    };
                    if spec.storage == Storage::SignedPadding {
                        o.put(DataElement::new(
                            tags::PIXEL_PADDING_VALUE,
                            VR::SS,
                            PrimitiveValue::from(fill),
                        ));
                    }
                    for (&h, &out) in plane.iter().zip(oof.iter()) {
                        let v = if out { fill } else { h };
                        bytes.extend_from_slice(&v.to_le_bytes());
                    }
                }
            }
            s(&mut o, tags::RESCALE_SLOPE, VR::DS, "1");
            s(&mut o, tags::RESCALE_TYPE, VR::LO, "HU");
            o.put(DataElement::new(
                tags::PIXEL_DATA,
                VR::OW,
                PrimitiveValue::from(bytes),
            ));
            let derr = |reason: String| PhantomWriteError::Dicom {
                path: path.clone(),
                reason,
            };
            let meta = FileMetaTableBuilder::new()
                .media_storage_sop_class_uid(uids::CT_IMAGE_STORAGE)
                .media_storage_sop_instance_uid(sop_uids[k].as_str())
                .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
                .implementation_class_uid(crate::IMPLEMENTATION_CLASS_UID)
                .build()
                .map_err(|e| derr(e.to_string()))?;
            o.with_exact_meta(meta)
                .write_to_file(&path)
                .map_err(|e| derr(e.to_string()))?;
            Ok(path)
        })
        .collect();
    let files = files.into_iter().collect::<Result<Vec<_>, _>>()?;
    Ok(WrittenSeries {
        study_instance_uid: study,
        series_instance_uid: series,
        files,
    })
}
