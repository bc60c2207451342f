//! Segmentation pipelines behind one trait: a [`Segmenter`] turns a [`Volume`] into a [`Segmentation`]
//! (a label map on the volume's grid, coded segment descriptions and per-segment measurements).
//!
//! One file per pipeline (`lung.rs` now; a `cochlear` CBCT electrode segmenter and an `external` one that
//! runs a container fit the same trait). Shared voxel operations live in `morph.rs`; the CLI entry point
//! in `cli.rs`. Nothing here knows DICOM: results are written by `crate::result`.

pub mod cochlear;
pub mod codes;
pub mod lung;
pub mod morph;

use crate::volume::Volume;
use codes::CodedConcept;
use ndarray::Array3;

/// A segmentation pipeline.
pub trait Segmenter: Send + Sync {
    /// Short pipeline name used in routing and on the CLI (`lung`, `cochlear` …).
    fn name(&self) -> &'static str;
    /// Algorithm version written into results (changes whenever the output may change).
    fn version(&self) -> &'static str;
    /// Status line when nothing is found (the CLI's `status`), e.g. "no lung found".
    fn nothing_found(&self) -> String {
        format!("no {} found", self.name())
    }
    /// The display window that shows what this pipeline segments (overlay images).
    fn display_window(&self) -> crate::result::Window {
        crate::result::Window::SOFT_TISSUE
    }
    /// Segment a volume. "Nothing found" is an `Ok` with no segments, not an error.
    fn segment(&self, volume: &Volume) -> Result<Segmentation, SegmentError>;
}

/// Why a pipeline could not run (not "nothing found", which is an empty [`Segmentation`]).
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("volume too small to segment: {0}")]
    VolumeTooSmall(String),
    #[error("unknown built-in segmenter {0:?} (built-in: {list})", list = BUILTIN.join(", "))]
    UnknownPipeline(String),
    #[error("external model: {0}")]
    External(String),
}

/// The names of the built-in segmenters, in the order they are listed to users.
pub const BUILTIN: &[&str] = &["lung", "cochlear"];

/// The built-in segmenter registered under `name` (one of [`BUILTIN`]).
pub fn pipeline(name: &str) -> Result<Box<dyn Segmenter>, SegmentError> {
    match name {
        "lung" => Ok(Box::new(lung::LungSegmenter::default())),
        "cochlear" => Ok(Box::new(cochlear::CochlearSegmenter::default())),
        other => Err(SegmentError::UnknownPipeline(other.to_string())),
    }
}

/// What a segment is, in coded form (SNOMED CT), and which algorithm produced it.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentDescription {
    pub label: String,
    pub category: CodedConcept,
    pub property_type: CodedConcept,
    /// Laterality or other modifier of the property type.
    pub modifier: Option<CodedConcept>,
    pub algorithm_name: String,
    pub algorithm_version: String,
    pub algorithm_family: CodedConcept,
    /// Display colour as CIELab scaled to 0..65535 (DICOM RecommendedDisplayCIELabValue).
    pub cielab: Option<[u16; 3]>,
}

/// A named quantity measured on a segment.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Measurement {
    pub name: &'static str,
    pub value: f64,
    pub unit: &'static str,
}

/// One segment: label value `number` in the label map.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Label value in [`Segmentation::labels`] and DICOM SegmentNumber (1-based, consecutive).
    pub number: u8,
    pub description: SegmentDescription,
    pub measurements: Vec<Measurement>,
    /// Landmarks of the segment in patient coordinates (LPS, mm), in a meaningful order: an electrode
    /// array's contacts, apical tip first. Empty for most segments.
    pub points: Vec<crate::volume::Vec3>,
}

/// The result of a segmenter: non-overlapping segments as a label map on the source grid.
#[derive(Debug, Clone)]
pub struct Segmentation {
    /// `[k, j, i]` like the volume; 0 = background, `n` = segment with number `n`.
    pub labels: Array3<u8>,
    pub segments: Vec<Segment>,
    /// Notes for the job log ("no lung found", "lungs split at the anterior junction" …).
    pub notes: Vec<String>,
    /// Structured per-result data for the job result / CLI JSON (e.g. the cochlear contact list).
    pub details: Option<serde_json::Value>,
}

impl Segmentation {
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    pub fn segment(&self, number: u8) -> Option<&Segment> {
        self.segments.iter().find(|s| s.number == number)
    }
}
