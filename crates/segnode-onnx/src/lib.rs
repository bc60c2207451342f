//! A site's own model as an ONNX file, run in-process by tract (pure Rust): no Python, no container.
//!
//! `[pipelines.onnx.<name>]` in segnode's configuration points at a manifest (TOML) the site writes once
//! beside the model file; routing rules send series to `onnx:<name>`. The modules, in the order a
//! volume goes through them:
//! - `manifest`: the manifest's format and its own checks;
//! - `model`: the model file (operators, tensors, SHA-256), the manifest-fits-model check, and the
//!   runnable plan, loaded once per process and kept warm;
//! - `companion`: channels from other series of the study, resampled onto the job's series;
//! - `normalise`: per-channel intensity normalisation;
//! - `grid`: orientation and resampling to the model's grid and back;
//! - `window`: sliding-window inference with Gaussian blending;
//! - `labels`: probabilities → coded segments with the manifest's clean-up;
//! - `segmenter`: all of it behind segnode-imaging's `Segmenter` trait.

pub mod companion;
pub mod error;
pub mod grid;
pub mod labels;
pub mod manifest;
pub mod model;
pub mod normalise;
pub mod segmenter;
pub mod window;

pub use error::OnnxError;
pub use manifest::Manifest;
pub use model::{fit, inspect, load, ModelInfo};
pub use segmenter::{OnnxSegmenter, RunLimits};
