//! The modules every result object shares, whatever its form: SOP Common, Patient and General Study
//! copied from the source series, a new series of the form's own modality / number / description, the
//! source's Frame of Reference, General Equipment and Contributing Equipment naming segnode, and the
//! Part 10 file meta. One place, so a SEG, an overlay series, an RT Structure Set and a report can never
//! disagree on the study they belong to or the software that made them.

use super::dataset::{code_item, item, put_seq, put_str, Obj};
use super::options::ResultOptions;
use super::uid::now_da_tm;
use crate::segment::codes::CodedConcept;
use crate::volume::SeriesInfo;
use crate::{IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME};
use dicom_core::VR;
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileDicomObject, FileMetaTableBuilder};

/// Purpose of reference "Processing Equipment" (DCM 109103), for Contributing Equipment.
const PROCESSING_EQUIPMENT: CodedConcept =
    CodedConcept::new("109103", "DCM", "Processing Equipment");

/// Identity of a new result object and its series.
#[derive(Debug, Clone)]
pub struct NewObject<'a> {
    pub sop_class_uid: &'a str,
    pub sop_instance_uid: &'a str,
    pub series_instance_uid: &'a str,
    pub modality: &'a str,
}

/// The creation date and time written into a result (DA, TM).
#[derive(Debug, Clone)]
pub struct Stamp {
    pub date: String,
    pub time: String,
}

impl Stamp {
    pub fn now() -> Stamp {
        let (date, time) = now_da_tm();
        Stamp { date, time }
    }
}

/// Fill SOP Common, Patient, General Study, General Series, Frame of Reference, General Equipment and
/// Contributing Equipment.
pub fn put_common(
    o: &mut Obj,
    info: &SeriesInfo,
    new: &NewObject,
    opts: &ResultOptions,
    at: &Stamp,
) {
    // SOP Common
    put_str(o, tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192");
    put_str(o, tags::SOP_CLASS_UID, VR::UI, new.sop_class_uid);
    put_str(o, tags::SOP_INSTANCE_UID, VR::UI, new.sop_instance_uid);
    put_str(o, tags::INSTANCE_CREATION_DATE, VR::DA, &at.date);
    put_str(o, tags::INSTANCE_CREATION_TIME, VR::TM, &at.time);
    // Patient
    put_str(o, tags::PATIENT_NAME, VR::PN, &info.patient_name);
    put_str(o, tags::PATIENT_ID, VR::LO, &info.patient_id);
    put_str(
        o,
        tags::PATIENT_BIRTH_DATE,
        VR::DA,
        &info.patient_birth_date,
    );
    put_str(o, tags::PATIENT_SEX, VR::CS, &info.patient_sex);
    // General Study
    put_str(
        o,
        tags::STUDY_INSTANCE_UID,
        VR::UI,
        &info.study_instance_uid,
    );
    put_str(o, tags::STUDY_DATE, VR::DA, &info.study_date);
    put_str(o, tags::STUDY_TIME, VR::TM, &info.study_time);
    put_str(
        o,
        tags::REFERRING_PHYSICIAN_NAME,
        VR::PN,
        &info.referring_physician_name,
    );
    put_str(o, tags::STUDY_ID, VR::SH, &info.study_id);
    put_str(o, tags::ACCESSION_NUMBER, VR::SH, &info.accession_number);
    // General Series (or the form's own series module: the same attributes)
    put_str(o, tags::MODALITY, VR::CS, new.modality);
    put_str(
        o,
        tags::SERIES_INSTANCE_UID,
        VR::UI,
        new.series_instance_uid,
    );
    put_str(
        o,
        tags::SERIES_NUMBER,
        VR::IS,
        &opts.series_number.to_string(),
    );
    put_str(
        o,
        tags::SERIES_DESCRIPTION,
        VR::LO,
        &opts.series_description,
    );
    put_str(o, tags::SERIES_DATE, VR::DA, &at.date);
    put_str(o, tags::SERIES_TIME, VR::TM, &at.time);
    // Frame of Reference: the source's
    put_str(
        o,
        tags::FRAME_OF_REFERENCE_UID,
        VR::UI,
        &info.frame_of_reference_uid,
    );
    put_str(o, tags::POSITION_REFERENCE_INDICATOR, VR::LO, "");
    // General Equipment
    put_str(o, tags::MANUFACTURER, VR::LO, &opts.manufacturer);
    put_str(o, tags::MANUFACTURER_MODEL_NAME, VR::LO, &opts.model_name);
    put_str(
        o,
        tags::DEVICE_SERIAL_NUMBER,
        VR::LO,
        &opts.device_serial_number,
    );
    put_str(o, tags::SOFTWARE_VERSIONS, VR::LO, &opts.software_version);
    // Contributing Equipment: segnode and its version
    put_seq(
        o,
        tags::CONTRIBUTING_EQUIPMENT_SEQUENCE,
        vec![item(|e| {
            put_seq(
                e,
                tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE,
                vec![code_item(&PROCESSING_EQUIPMENT)],
            );
            put_str(e, tags::MANUFACTURER, VR::LO, &opts.manufacturer);
            put_str(e, tags::MANUFACTURER_MODEL_NAME, VR::LO, &opts.model_name);
            put_str(e, tags::SOFTWARE_VERSIONS, VR::LO, &opts.software_version);
            put_str(
                e,
                tags::CONTRIBUTION_DESCRIPTION,
                VR::ST,
                "Automatic segmentation and derived objects",
            );
        })],
    );
}

/// Wrap a data set with its Part 10 file meta (Explicit VR Little Endian).
pub fn with_meta(
    o: Obj,
    sop_class_uid: &str,
    sop_instance_uid: &str,
) -> Result<FileDicomObject<Obj>, String> {
    let meta = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(sop_class_uid)
        .media_storage_sop_instance_uid(sop_instance_uid)
        .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
        .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
        .implementation_version_name(IMPLEMENTATION_VERSION_NAME)
        .build()
        .map_err(|e| e.to_string())?;
    Ok(o.with_exact_meta(meta))
}

/// A reference to one source slice (SOP Instance Reference macro, plus the frame of a multi-frame
/// source) with an optional purpose of reference.
pub fn source_slice_ref(slice: &crate::volume::SliceRef, purpose: Option<&CodedConcept>) -> Obj {
    item(|s| {
        put_str(
            s,
            tags::REFERENCED_SOP_CLASS_UID,
            VR::UI,
            &slice.sop_class_uid,
        );
        put_str(
            s,
            tags::REFERENCED_SOP_INSTANCE_UID,
            VR::UI,
            &slice.sop_instance_uid,
        );
        if let Some(f) = slice.frame_number {
            put_str(s, tags::REFERENCED_FRAME_NUMBER, VR::IS, &f.to_string());
        }
        if let Some(p) = purpose {
            put_seq(
                s,
                tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE,
                vec![code_item(p)],
            );
        }
    })
}
