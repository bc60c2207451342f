//! Writing a CBCT phantom as a folder of single-frame CT Image Storage files (the export most CBCT
//! devices offer), signed 16-bit, one file per slice in the phantom's orientation.

use super::cbct::{CbctPhantom, Orientation};
use super::rng::Rng;
use super::write::{PhantomWriteError, WrittenSeries};
use crate::result::dataset::{ds, ds_multi};
use crate::result::uid::now_da_tm;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// Write the phantom into `dir` (created if needed).
pub fn write_cbct_series(ph: &CbctPhantom, dir: &Path) -> Result<WrittenSeries, PhantomWriteError> {
    std::fs::create_dir_all(dir).map_err(|source| PhantomWriteError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let spec = &ph.spec;
    let mut rng = Rng::new(spec.seed ^ 0xCBC7);
    let study = rng.uid();
    let series = rng.uid();
    let frame_of_ref = rng.uid();
    let n = ph.hu.shape()[0];
    let sop_uids: Vec<String> = (0..n).map(|_| rng.uid()).collect();
    let (date, time) = now_da_tm();
    let g = &ph.geometry;
    let iop = spec.orientation.iop();
    let image_type = match spec.orientation {
        Orientation::Axial => "ORIGINAL\\PRIMARY\\AXIAL",
        _ => "DERIVED\\SECONDARY\\REFORMATTED",
    };
    let [_, rows, cols] = spec.shape();
    let files: Vec<Result<PathBuf, PhantomWriteError>> = (0..n)
        .into_par_iter()
        .map(|k| {
            let path = dir.join(format!(
                "CB{:08X}.dcm",
                (k as u64).wrapping_mul(2_654_435_761) % 0xFFFF_FFFF
            ));
            let mut o = InMemDicomObject::new_empty();
            let s = |o: &mut InMemDicomObject, tag, vr, v: &str| {
                o.put(DataElement::new(tag, vr, PrimitiveValue::from(v)));
            };
            let u = |o: &mut InMemDicomObject, tag, v: u16| {
                o.put(DataElement::new(tag, VR::US, PrimitiveValue::from(v)));
            };
            let pos = g.index_to_patient(k as f64, 0.0, 0.0);
            s(&mut o, tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 100");
            s(&mut o, tags::IMAGE_TYPE, VR::CS, image_type);
            s(&mut o, tags::SOP_CLASS_UID, VR::UI, uids::CT_IMAGE_STORAGE);
            s(&mut o, tags::SOP_INSTANCE_UID, VR::UI, &sop_uids[k]);
            s(&mut o, tags::STUDY_DATE, VR::DA, &date);
            s(&mut o, tags::STUDY_TIME, VR::TM, &time);
            s(&mut o, tags::ACCESSION_NUMBER, VR::SH, "CB0001");
            s(&mut o, tags::MODALITY, VR::CS, "CT");
            s(&mut o, tags::MANUFACTURER, VR::LO, "segnode phantom");
            s(&mut o, tags::REFERRING_PHYSICIAN_NAME, VR::PN, "");
            s(
                &mut o,
                tags::SERIES_DESCRIPTION,
                VR::LO,
                &format!("Phantom CBCT temporal bone {}", spec.variant.name()),
            );
            s(
                &mut o,
                tags::PATIENT_NAME,
                VR::PN,
                &format!("PHANTOM^CBCT^{}", spec.variant.name().to_uppercase()),
            );
            s(
                &mut o,
                tags::PATIENT_ID,
                VR::LO,
                &format!("CB-{}", spec.seed),
            );
            s(&mut o, tags::PATIENT_BIRTH_DATE, VR::DA, "19700101");
            s(&mut o, tags::PATIENT_SEX, VR::CS, "O");
            s(&mut o, tags::BODY_PART_EXAMINED, VR::CS, "EAR");
            s(&mut o, tags::SLICE_THICKNESS, VR::DS, &ds(spec.slice_mm));
            s(&mut o, tags::KVP, VR::DS, "90");
            s(&mut o, tags::PATIENT_POSITION, VR::CS, "HFS");
            s(&mut o, tags::STUDY_INSTANCE_UID, VR::UI, &study);
            s(&mut o, tags::SERIES_INSTANCE_UID, VR::UI, &series);
            s(&mut o, tags::STUDY_ID, VR::SH, "1");
            s(&mut o, tags::SERIES_NUMBER, VR::IS, "3");
            s(&mut o, tags::INSTANCE_NUMBER, VR::IS, &(k + 1).to_string());
            s(
                &mut o,
                tags::IMAGE_POSITION_PATIENT,
                VR::DS,
                &ds_multi(&pos),
            );
            s(
                &mut o,
                tags::IMAGE_ORIENTATION_PATIENT,
                VR::DS,
                &ds_multi(&iop),
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
            u(&mut o, tags::ROWS, rows as u16);
            u(&mut o, tags::COLUMNS, cols as u16);
            s(
                &mut o,
                tags::PIXEL_SPACING,
                VR::DS,
                &ds_multi(&g.pixel_spacing),
            );
            u(&mut o, tags::BITS_ALLOCATED, 16);
            u(&mut o, tags::BITS_STORED, 16);
            u(&mut o, tags::HIGH_BIT, 15);
            u(&mut o, tags::PIXEL_REPRESENTATION, 1);
            s(&mut o, tags::RESCALE_INTERCEPT, VR::DS, "0");
            s(&mut o, tags::RESCALE_SLOPE, VR::DS, "1");
            s(&mut o, tags::RESCALE_TYPE, VR::LO, "HU");
            let plane = ph.hu.index_axis(ndarray::Axis(0), k);
            let mut bytes = Vec::with_capacity(plane.len() * 2);
            for &h in plane.iter() {
                bytes.extend_from_slice(&h.to_le_bytes());
            }
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
