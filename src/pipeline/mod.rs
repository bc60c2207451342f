//! The pipelines a job can name: the built-in segmenters of `segnode-imaging`, `noop`, a site's own
//! `external:<name>` models run as commands and its `onnx:<name>` models run in-process; `segnode
//! segment` (the offline CLI) runs one of them on a folder, `segnode models check` checks a manifest.

pub mod cli;
pub mod external;
pub mod models_cli;
pub mod onnx;
pub mod registry;
