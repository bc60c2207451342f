//! segnode-imaging: from a DICOM series to results, with no network, database or runtime attached.
//!
//! - [`volume`]: a series (single-frame slices or one multi-frame object) → a [`volume::Volume`] in HU
//!   with its index → patient (LPS, mm) affine; irregular stacks are refused with a reason.
//! - [`segment`]: the segmenters behind one trait (lung, cochlear), their coded segment descriptions and
//!   the voxel operations they share.
//! - [`result`]: result objects written from a segmentation (DICOM SEG today).
//!
//! No tokio, no sqlx, no clap: a research group can use this crate on its own, and a change in a
//! segmenter rebuilds only this crate and what links it.

pub mod result;
pub mod segment;
pub mod volume;

/// segnode's Implementation Class UID (file meta and association negotiation).
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.14345763612760638638775095632467294471";
/// segnode's Implementation Version Name (≤ 16 characters).
pub const IMPLEMENTATION_VERSION_NAME: &str = concat!("SEGNODE_", env!("CARGO_PKG_VERSION"));
