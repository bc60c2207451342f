//! The pipelines a job can name: the built-in segmenters of `segnode-imaging`, `noop`, and a site's own
//! `external:<name>` models; `segnode segment` (the offline CLI) runs one of them on a folder.

pub mod cli;
pub mod external;
pub mod registry;
