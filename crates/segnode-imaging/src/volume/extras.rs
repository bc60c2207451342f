//! The per-slice header fields the decoder needs beyond the stack geometry (rescale, padding, UIDs,
//! series facts), read with the header and kept with a slice read ahead.

use super::SeriesInfo;

/// What the decoder needs from the header, beyond the stack geometry.
#[derive(Debug, Clone)]
pub(super) struct HeaderExtras {
    pub(super) sop_class_uid: String,
    pub(super) sop_instance_uid: String,
    pub(super) slope: f64,
    pub(super) intercept: f64,
    pub(super) padding: Option<(i32, i32)>,
    pub(super) series: SeriesInfo,
}
