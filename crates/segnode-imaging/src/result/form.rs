//! Result forms behind one trait: a [`ResultForm`] turns the source volume and its segmentation into the
//! DICOM objects a destination receives. SEG is the first form; an overlay series, an RT Structure Set or
//! a measurement report is one more file implementing the same trait and one more entry in [`form`].
//!
//! The caller (a worker) only sees [`ResultObject`]s: what to write, and the SOP class / instance it
//! announces when sending them.

use std::path::Path;

use dicom_dictionary_std::uids;
use dicom_object::{FileDicomObject, InMemDicomObject};
use serde_json::json;

use super::seg::{SegError, SegObject, SegOptions};
use crate::segment::Segmentation;
use crate::volume::Volume;

/// Why a result form could not be built or written.
#[derive(Debug, thiserror::Error)]
pub enum ResultError {
    #[error("building the {form}: {source}")]
    Seg {
        form: &'static str,
        #[source]
        source: SegError,
    },
    #[error("cannot write {path}: {reason}")]
    Write { path: String, reason: String },
}

/// One DICOM object written by a result form.
pub struct ResultObject {
    pub object: FileDicomObject<InMemDicomObject>,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub series_instance_uid: String,
    /// What the job summary records about this object (e.g. a SEG's frame count).
    pub summary: serde_json::Value,
}

impl std::fmt::Debug for ResultObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResultObject")
            .field("sop_class_uid", &self.sop_class_uid)
            .field("sop_instance_uid", &self.sop_instance_uid)
            .finish()
    }
}

impl ResultObject {
    /// Write as a Part 10 file at `path` (the caller makes it durable and visible).
    pub fn write(&self, path: &Path) -> Result<(), ResultError> {
        self.object
            .write_to_file(path)
            .map_err(|e| ResultError::Write {
                path: path.display().to_string(),
                reason: e.to_string(),
            })
    }
}

/// A kind of result object.
pub trait ResultForm: Send + Sync {
    /// Name in the configuration and the job summary (`seg`).
    fn name(&self) -> &'static str;
    /// The objects for one segmentation of `volume` (a SEG is one object; an overlay series is many).
    fn build(
        &self,
        volume: &Volume,
        seg: &Segmentation,
        opts: &SegOptions,
    ) -> Result<Vec<ResultObject>, ResultError>;
}

/// DICOM Segmentation Storage, BINARY, one object per result.
#[derive(Debug, Clone, Copy, Default)]
pub struct SegForm;

impl ResultForm for SegForm {
    fn name(&self) -> &'static str {
        "seg"
    }

    fn build(
        &self,
        volume: &Volume,
        seg: &Segmentation,
        opts: &SegOptions,
    ) -> Result<Vec<ResultObject>, ResultError> {
        let obj = SegObject::build(volume, seg, opts).map_err(|source| ResultError::Seg {
            form: "SEG",
            source,
        })?;
        Ok(vec![ResultObject {
            summary: json!({ "frames": obj.frames.len() }),
            sop_class_uid: uids::SEGMENTATION_STORAGE.to_string(),
            sop_instance_uid: obj.sop_instance_uid,
            series_instance_uid: obj.series_instance_uid,
            object: obj.object,
        }])
    }
}

/// The names of the result forms, in the order they are listed to users.
pub const FORMS: &[&str] = &["seg"];

/// The result form called `name` (one of [`FORMS`]).
pub fn form(name: &str) -> Option<Box<dyn ResultForm>> {
    match name {
        "seg" => Some(Box::new(SegForm)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_form_exists_and_knows_its_name() {
        for name in FORMS {
            assert_eq!(form(name).expect("listed form").name(), *name);
        }
        assert!(form("pdf").is_none());
    }
}
