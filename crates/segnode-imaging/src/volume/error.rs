//! Why a series could not become a volume, worded for the PACS administrator who reads the job log.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("cannot read series folder {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no usable CT slices in {dir} ({dropped} file(s) left out, e.g. {example})")]
    NoSlices {
        dir: PathBuf,
        dropped: usize,
        example: String,
    },
    #[error("only {found} usable slice(s), at least {min} are needed to form a volume")]
    TooFewSlices { found: usize, min: usize },
    #[error("slices have different orientations ({groups} groups, largest has {largest} of {total}): not one stack")]
    MixedOrientation {
        groups: usize,
        largest: usize,
        total: usize,
    },
    #[error("slices have different sizes or pixel spacings ({groups} groups, largest has {largest} of {total}): not one stack")]
    MixedSizes {
        groups: usize,
        largest: usize,
        total: usize,
    },
    #[error("gantry tilt or non-parallel slices: slice positions drift {angle_deg:.2}° off the slice normal; resample the series without tilt")]
    Tilted { angle_deg: f64 },
    #[error("gap in the slice stack at {at_mm:.2} mm: {gap_mm:.2} mm between slices where the spacing is {spacing_mm:.2} mm (missing slices?)")]
    Gap {
        at_mm: f64,
        gap_mm: f64,
        spacing_mm: f64,
    },
    #[error("irregular slice spacing: {min_mm:.3} to {max_mm:.3} mm between slices")]
    IrregularSpacing { min_mm: f64, max_mm: f64 },
    #[error("cannot decode the pixel data of {path}: {reason}")]
    Decode { path: PathBuf, reason: String },
    #[error("unsupported pixel format in {path}: {reason}")]
    UnsupportedPixels { path: PathBuf, reason: String },
}
