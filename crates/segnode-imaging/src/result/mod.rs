//! Result objects derived from a segmentation, each kind a [`form::ResultForm`]: the DICOM Segmentation
//! (`seg`), an overlay series of secondary captures (`sc`), an RT Structure Set (`rtstruct`) and a TID
//! 1500 measurement report (`sr`). Input: the source [`crate::volume::Volume`] and a
//! [`crate::segment::Segmentation`]; output: DICOM objects ready for the dispatcher. The modules every
//! form shares live in `header`, the pure geometry and pixel work in `contour` and `overlay`.

pub mod contour;
pub mod dataset;
pub mod form;
pub mod header;
pub mod object;
pub mod options;
pub mod overlay;
pub mod rtstruct;
pub mod sc;
pub mod seg;
pub mod sr;
pub mod uid;

pub use form::{build_forms, form, form_of_sop_class, ResultForm, SegForm, FORMS};
pub use object::{FormInput, ResultError, ResultObject, SegRef};
pub use options::{ResultOptions, Window};
pub use seg::{SegError, SegObject};
