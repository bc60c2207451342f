//! The attributes the index keeps of each instance, read from a received file's header (everything
//! before Pixel Data), and the checks that decide whether the instance may be filed at all.
//!
//! An enhanced multi-frame object (Enhanced CT / MR, X-Ray 3D Craniofacial) keeps orientation, pixel
//! spacing and slice thickness in its functional groups: when they are absent at the top level they are
//! taken from the shared group (else the first frame's), so routing on orientation or thickness matches
//! a multi-frame series like a stack of slices. The header is read up to Pixel Data anyway, so the
//! per-frame groups (5200,9230) are parsed too; for a 1000-frame object that is a few hundred kB of
//! sequence items, small beside its pixel data.

use dicom_dictionary_std::tags;
use dicom_object::{InMemDicomObject, OpenFileOptions};
use std::path::Path;

use super::uid;

/// Indexed attributes of one instance.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InstanceHeader {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub study_uid: String,
    pub series_uid: String,
    pub patient_id: Option<String>,
    pub patient_name: Option<String>,
    pub study_date: Option<String>,
    pub modality: Option<String>,
    pub body_part: Option<String>,
    pub series_description: Option<String>,
    pub protocol_name: Option<String>,
    pub series_number: Option<i64>,
    pub instance_number: Option<i64>,
    pub acquisition_number: Option<i64>,
    pub images_in_acquisition: Option<i64>,
    pub number_of_frames: Option<i64>,
    pub frame_of_reference_uid: Option<String>,
    pub rows: Option<i64>,
    pub columns: Option<i64>,
    pub ipp: Option<[f64; 3]>,
    pub iop: Option<[f64; 6]>,
    pub pixel_spacing: Option<[f64; 2]>,
    pub slice_thickness: Option<f64>,
    /// The file meta's transfer syntax (empty for a data set read without file meta).
    pub transfer_syntax: String,
}

/// Why an instance is refused (each maps to a DIMSE failure status).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HeaderError {
    #[error("data set cannot be parsed: {0}")]
    Unparsable(String),
    #[error("{0} is missing or empty")]
    MissingUid(&'static str),
    #[error("{0} is not a valid UID: {1}")]
    BadUid(&'static str, uid::UidError),
    #[error("SOPInstanceUID {dataset} differs from the command's {command}")]
    InstanceMismatch { dataset: String, command: String },
    #[error("SOPClassUID {dataset} differs from the command's {command}")]
    ClassMismatch { dataset: String, command: String },
}

/// Read the header of a Part 10 file (stops before Pixel Data), once its declared lengths are checked
/// ([`super::lengths`]).
pub fn read_header(path: &Path) -> Result<InstanceHeader, HeaderError> {
    // declared lengths first: the parser zero-fills a value's length before reading it
    super::lengths::check(path).map_err(HeaderError::Unparsable)?;
    let obj = OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(path)
        .map_err(|e| HeaderError::Unparsable(e.to_string()))?;
    Ok(from_file_object(&obj))
}

/// [`read_header`] for a Part 10 file held in memory (preamble included): an instance received for the
/// journal, or a journal record replayed at start.
pub fn read_header_bytes(bytes: &[u8]) -> Result<InstanceHeader, HeaderError> {
    super::lengths::check_bytes(bytes).map_err(HeaderError::Unparsable)?;
    let body = bytes
        .get(128..)
        .ok_or_else(|| HeaderError::Unparsable("shorter than the Part 10 preamble".into()))?;
    let obj = OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .read_preamble(dicom_object::file::ReadPreamble::Never)
        .from_reader(body)
        .map_err(|e| HeaderError::Unparsable(e.to_string()))?;
    Ok(from_file_object(&obj))
}

/// The header of a Part 10 object read up to its pixel data, with the file meta's transfer syntax.
fn from_file_object(obj: &dicom_object::FileDicomObject<InMemDicomObject>) -> InstanceHeader {
    let mut header = from_object(obj);
    header.transfer_syntax = obj
        .meta()
        .transfer_syntax()
        .trim_end_matches(['\0', ' '])
        .to_string();
    header
}

fn text(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<String> {
    let v = obj.get(tag)?.to_str().ok()?;
    let t = v.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    (!t.is_empty()).then(|| t.to_string())
}

fn int(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<i64> {
    obj.get(tag)?.to_int::<i64>().ok()
}

fn floats<const N: usize>(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<[f64; N]> {
    let v = obj.get(tag)?.to_multi_float64().ok()?;
    let arr: [f64; N] = v.get(..N)?.try_into().ok()?;
    arr.iter().all(|x| x.is_finite()).then_some(arr)
}

/// A functional-group attribute of a multi-frame object (shared, else first frame), as `N` finite values.
fn group_floats<const N: usize>(
    obj: &InMemDicomObject,
    seq: dicom_core::Tag,
    tag: dicom_core::Tag,
) -> Option<[f64; N]> {
    let v = segnode_imaging::volume::frames::shared_or_first_frame(obj, seq, tag)?;
    v.get(..N)?.try_into().ok()
}

/// Extract the indexed attributes from a parsed data set (UIDs are trimmed, not yet validated).
pub fn from_object(obj: &InMemDicomObject) -> InstanceHeader {
    let mut h = top_level(obj);
    h.iop = h.iop.or_else(|| {
        group_floats::<6>(
            obj,
            tags::PLANE_ORIENTATION_SEQUENCE,
            tags::IMAGE_ORIENTATION_PATIENT,
        )
    });
    h.pixel_spacing = h
        .pixel_spacing
        .or_else(|| group_floats::<2>(obj, tags::PIXEL_MEASURES_SEQUENCE, tags::PIXEL_SPACING));
    h.slice_thickness = h.slice_thickness.or_else(|| {
        group_floats::<1>(obj, tags::PIXEL_MEASURES_SEQUENCE, tags::SLICE_THICKNESS).map(|[t]| t)
    });
    h
}

fn top_level(obj: &InMemDicomObject) -> InstanceHeader {
    InstanceHeader {
        sop_class_uid: text(obj, tags::SOP_CLASS_UID).unwrap_or_default(),
        sop_instance_uid: text(obj, tags::SOP_INSTANCE_UID).unwrap_or_default(),
        study_uid: text(obj, tags::STUDY_INSTANCE_UID).unwrap_or_default(),
        series_uid: text(obj, tags::SERIES_INSTANCE_UID).unwrap_or_default(),
        patient_id: text(obj, tags::PATIENT_ID),
        patient_name: text(obj, tags::PATIENT_NAME),
        study_date: text(obj, tags::STUDY_DATE),
        modality: text(obj, tags::MODALITY),
        body_part: text(obj, tags::BODY_PART_EXAMINED),
        series_description: text(obj, tags::SERIES_DESCRIPTION),
        protocol_name: text(obj, tags::PROTOCOL_NAME),
        series_number: int(obj, tags::SERIES_NUMBER),
        instance_number: int(obj, tags::INSTANCE_NUMBER),
        acquisition_number: int(obj, tags::ACQUISITION_NUMBER),
        images_in_acquisition: int(obj, tags::IMAGES_IN_ACQUISITION),
        number_of_frames: int(obj, tags::NUMBER_OF_FRAMES),
        frame_of_reference_uid: text(obj, tags::FRAME_OF_REFERENCE_UID),
        rows: int(obj, tags::ROWS),
        columns: int(obj, tags::COLUMNS),
        ipp: floats::<3>(obj, tags::IMAGE_POSITION_PATIENT),
        iop: floats::<6>(obj, tags::IMAGE_ORIENTATION_PATIENT),
        pixel_spacing: floats::<2>(obj, tags::PIXEL_SPACING),
        slice_thickness: obj
            .get(tags::SLICE_THICKNESS)
            .and_then(|e| e.to_float64().ok())
            .filter(|v| v.is_finite()),
        transfer_syntax: String::new(),
    }
}

impl InstanceHeader {
    /// The checks before filing: the three UIDs that make the path exist and are valid, and the data set
    /// agrees with the command set that announced it.
    pub fn check(&self, command_class: &str, command_instance: &str) -> Result<(), HeaderError> {
        for (name, value) in [
            ("StudyInstanceUID", &self.study_uid),
            ("SeriesInstanceUID", &self.series_uid),
            ("SOPInstanceUID", &self.sop_instance_uid),
        ] {
            if value.is_empty() {
                return Err(HeaderError::MissingUid(name));
            }
            uid::validate(value).map_err(|e| HeaderError::BadUid(name, e))?;
        }
        if self.sop_instance_uid != command_instance {
            return Err(HeaderError::InstanceMismatch {
                dataset: self.sop_instance_uid.clone(),
                command: command_instance.to_string(),
            });
        }
        // A blank SOPClassUID in the data set (seen in anonymised exports) is taken from the command,
        // which the file meta records; a different one is a mismatch.
        if !self.sop_class_uid.is_empty() && self.sop_class_uid != command_class {
            return Err(HeaderError::ClassMismatch {
                dataset: self.sop_class_uid.clone(),
                command: command_class.to_string(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::{DataElement, PrimitiveValue, VR};

    fn obj(study: &str, sop: &str) -> InMemDicomObject {
        let mut o = InMemDicomObject::new_empty();
        o.put(DataElement::new(
            tags::SOP_CLASS_UID,
            VR::UI,
            PrimitiveValue::from("1.2.840.10008.5.1.4.1.1.2"),
        ));
        o.put(DataElement::new(
            tags::SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from(sop),
        ));
        o.put(DataElement::new(
            tags::STUDY_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from(study),
        ));
        o.put(DataElement::new(
            tags::SERIES_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from("1.2.3"),
        ));
        o.put(DataElement::new(
            tags::IMAGE_POSITION_PATIENT,
            VR::DS,
            PrimitiveValue::Strs(
                ["-10".to_string(), "20.5".into(), "-300".into()]
                    .into_iter()
                    .collect(),
            ),
        ));
        o
    }

    #[test]
    fn extracts_and_checks() {
        let h = from_object(&obj("1.2", "1.2.3.4"));
        assert_eq!(h.ipp, Some([-10.0, 20.5, -300.0]));
        assert_eq!(h.check("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4"), Ok(()));
        assert!(matches!(
            h.check("1.2.840.10008.5.1.4.1.1.2", "1.2.3.5"),
            Err(HeaderError::InstanceMismatch { .. })
        ));
        assert!(matches!(
            h.check("1.2.840.10008.5.1.4.1.1.4", "1.2.3.4"),
            Err(HeaderError::ClassMismatch { .. })
        ));
        let blank_class = InstanceHeader {
            sop_class_uid: String::new(),
            ..h
        };
        assert_eq!(
            blank_class.check("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4"),
            Ok(())
        );
    }

    #[test]
    fn multiframe_orientation_spacing_thickness_from_the_shared_groups() {
        use dicom_core::value::DataSetSequence;
        let mut o = obj("1.2", "1.2.3.4");
        let strs = |v: &[&str]| PrimitiveValue::Strs(v.iter().map(|s| s.to_string()).collect());
        let macro_item = |seq, tag, v: PrimitiveValue| {
            let mut i = InMemDicomObject::new_empty();
            i.put(DataElement::new(tag, VR::DS, v));
            let mut m = InMemDicomObject::new_empty();
            m.put(DataElement::new(
                seq,
                VR::SQ,
                DataSetSequence::from(vec![i]),
            ));
            m
        };
        let mut shared = macro_item(
            tags::PLANE_ORIENTATION_SEQUENCE,
            tags::IMAGE_ORIENTATION_PATIENT,
            strs(&["1", "0", "0", "0", "0", "-1"]),
        );
        let mut pm = InMemDicomObject::new_empty();
        pm.put(DataElement::new(
            tags::PIXEL_SPACING,
            VR::DS,
            strs(&["0.2", "0.2"]),
        ));
        pm.put(DataElement::new(
            tags::SLICE_THICKNESS,
            VR::DS,
            PrimitiveValue::from("0.2"),
        ));
        shared.put(DataElement::new(
            tags::PIXEL_MEASURES_SEQUENCE,
            VR::SQ,
            DataSetSequence::from(vec![pm]),
        ));
        o.put(DataElement::new(
            tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE,
            VR::SQ,
            DataSetSequence::from(vec![shared]),
        ));
        let h = from_object(&o);
        assert_eq!(h.iop, Some([1.0, 0.0, 0.0, 0.0, 0.0, -1.0]));
        assert_eq!(h.pixel_spacing, Some([0.2, 0.2]));
        assert_eq!(h.slice_thickness, Some(0.2));

        // a top-level value wins (single-frame objects are read as before)
        o.put(DataElement::new(
            tags::SLICE_THICKNESS,
            VR::DS,
            PrimitiveValue::from("1.5"),
        ));
        assert_eq!(from_object(&o).slice_thickness, Some(1.5));
    }

    #[test]
    fn blank_study_uid_is_refused() {
        let h = from_object(&obj("", "1.2.3.4"));
        assert_eq!(
            h.check("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4"),
            Err(HeaderError::MissingUid("StudyInstanceUID"))
        );
    }
}
