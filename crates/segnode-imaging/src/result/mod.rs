//! Result objects derived from a segmentation, each kind a [`form::ResultForm`]: the DICOM Segmentation
//! (SEG) now; RTSTRUCT / secondary-capture overlay / SR measurements are further forms. Input: the source
//! [`crate::volume::Volume`] and a [`crate::segment::Segmentation`]; output: DICOM objects ready for the
//! dispatcher.

pub mod dataset;
pub mod form;
pub mod seg;
pub mod uid;

pub use form::{form, ResultError, ResultForm, ResultObject, SegForm, FORMS};
pub use seg::{SegError, SegObject, SegOptions};
