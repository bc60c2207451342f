//! Result objects derived from a segmentation: the DICOM Segmentation (SEG) writer now, RTSTRUCT /
//! secondary-capture overlay / SR measurements later. Input: the source [`crate::volume::Volume`] and a
//! [`crate::segment::Segmentation`]; output: a DICOM file ready for the dispatcher.

pub mod dataset;
pub mod seg;
pub mod uid;

pub use seg::{SegError, SegObject, SegOptions};
