//! What a written phantom series is made of, shared by the chest and CBCT writers and by the multi-frame
//! writer: the series-level tags that differ between phantom kinds, one slice's stored pixels, the
//! summary of what was written and the write error.

use std::path::PathBuf;

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

/// The values that differ between phantom kinds; the rest of a phantom CT slice file is common.
pub(crate) struct SeriesTags<'a> {
    pub image_type: &'a str,
    pub accession: &'a str,
    pub series_description: String,
    pub patient_name: String,
    pub patient_id: String,
    pub birth_date: &'a str,
    pub body_part: &'a str,
    pub slice_thickness: f64,
    pub kvp: &'a str,
    pub patient_position: &'a str,
    pub series_number: &'a str,
    pub iop: [f64; 6],
    pub rows: usize,
    pub columns: usize,
    pub pixel_spacing: [f64; 2],
    pub study: &'a str,
    pub series: &'a str,
    pub frame_of_reference: &'a str,
    pub date: &'a str,
    pub time: &'a str,
}

/// One slice's stored pixels and how to read them back as HU (slope 1).
pub(crate) struct SlicePixels {
    pub bits_stored: u16,
    pub signed: bool,
    pub intercept: &'static str,
    /// Pixel Padding Value, when the slice uses one.
    pub padding: Option<i16>,
    /// Little-endian 16-bit samples, row by row.
    pub bytes: Vec<u8>,
}
