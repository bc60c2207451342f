//! Why an ONNX model could not be set up or run. Setup errors (manifest, model file, a mismatch between
//! the two) refuse the node's start; run errors fail the job with the message, as external models do.

/// What went wrong with an ONNX pipeline.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    /// The manifest on its own is wrong (parse error, a value out of range).
    #[error("manifest: {0}")]
    Manifest(String),
    /// The model file could not be read or translated by the runtime (unsupported operator …).
    #[error("model {file}: {message}")]
    Model { file: String, message: String },
    /// Manifest and model do not fit each other (channel count, patch size, output classes).
    #[error("manifest does not fit model {file}: {message}")]
    Mismatch { file: String, message: String },
    /// Running the model failed.
    #[error("inference: {0}")]
    Inference(String),
    /// The series is not what the model takes (modality, size).
    #[error("input: {0}")]
    Input(String),
    /// The job's time ran out between two patches.
    #[error("model exceeded its timeout of {timeout_s} s after {done} of {total} patches")]
    Timeout {
        timeout_s: f64,
        done: usize,
        total: usize,
    },
    /// The job would need more memory than its budget allows.
    #[error("needs about {need_mb} MB, more than the budget of {budget_mb} MB")]
    Memory { need_mb: u64, budget_mb: u64 },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}
