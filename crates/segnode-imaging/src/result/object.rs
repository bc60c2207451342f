//! What a result form takes and gives: [`FormInput`] (the volume, its segmentation, the options and the
//! SEG the other forms refer to) and [`ResultObject`]s (a DICOM object with the SOP class / instance it
//! announces), and why building one can fail ([`ResultError`]). Kept apart from the registry in `form`
//! so the form modules and the registry depend on this one, not on each other.

use std::path::Path;

use dicom_object::{FileDicomObject, InMemDicomObject};

use super::options::ResultOptions;
use super::seg::SegError;
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
    #[error("building the {form}: {reason}")]
    Build { form: &'static str, reason: String },
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

/// The SEG a result's other forms refer to.
#[derive(Debug, Clone)]
pub struct SegRef {
    pub sop_instance_uid: String,
    pub series_instance_uid: String,
}

/// What a form is built from.
#[derive(Debug, Clone, Copy)]
pub struct FormInput<'a> {
    pub volume: &'a Volume,
    pub seg: &'a Segmentation,
    pub opts: &'a ResultOptions,
    /// The SEG of the same result, when one was written.
    pub seg_ref: Option<&'a SegRef>,
}
