//! `onnx:<name>` pipelines in segnode's configuration: where a site's manifest lies and the budget a
//! job of it runs within. The model itself is `segnode-onnx`'s business; this module turns settings
//! into its segmenter and checks at start (and on reload) that every manifest fits its model, so a
//! wrong channel count or an unsupported operator refuses the node's start with a message naming it.

use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

use segnode_onnx::{OnnxError, OnnxSegmenter, RunLimits};

/// `[pipelines.onnx.<name>]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnnxSettings {
    /// The manifest (TOML) the site wrote beside its model file.
    pub manifest: PathBuf,
    /// A job fails once its inference has run this long (s), as an external model's does.
    #[serde(default = "default_timeout_s")]
    pub timeout_s: f64,
    /// A job whose arrays would need more than this is failed before inference (MiB).
    #[serde(default = "default_max_memory_mb")]
    pub max_memory_mb: u64,
}

fn default_timeout_s() -> f64 {
    600.0
}

fn default_max_memory_mb() -> u64 {
    8192
}

impl OnnxSettings {
    pub fn limits(&self) -> RunLimits {
        RunLimits {
            timeout: Duration::from_secs_f64(self.timeout_s),
            max_memory_mb: self.max_memory_mb,
        }
    }

    /// The segmenter of `onnx:<name>`.
    pub fn segmenter(&self, name: &str) -> OnnxSegmenter {
        OnnxSegmenter::new(&format!("onnx:{name}"), &self.manifest, self.limits())
    }

    /// Load the manifest and its model (kept warm for the jobs) and check that they fit.
    pub fn check(&self) -> Result<(), OnnxError> {
        segnode_onnx::model::cached(&self.manifest).map(|_| ())
    }
}
