use std::path::PathBuf;
use thiserror::Error;

/// Everything that can go wrong while loading a checkpoint or running the model.
#[derive(Debug, Error)]
pub enum EngineError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{file}: invalid JSON: {message}")]
    Json { file: PathBuf, message: String },
    #[error("config.json: field `{field}`: {message}")]
    Config { field: String, message: String },
    #[error("unsupported architecture {0:?}: expected DeepseekV2ForCausalLM or DeepseekV3ForCausalLM")]
    UnknownArchitecture(String),
    #[error("{file}: malformed safetensors: {message}")]
    Safetensors { file: PathBuf, message: String },
    #[error("tensor `{name}`: {message}")]
    Tensor { name: String, message: String },
    #[error("tensor `{0}` is missing from the checkpoint")]
    MissingTensor(String),
    #[error("tokenizer ({file}): {message}")]
    Tokenizer { file: PathBuf, message: String },
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
    /// A failure of the device backend (CUDA), carried through the engine's interface.
    #[error("device: {0}")]
    Device(String),
    #[error(transparent)]
    Cache(#[from] mlahost_core::CoreError),
    /// The latent cache or the weights do not fit the memory given.
    #[error("capacity: {0}")]
    Capacity(String),
    /// A layout over several GPUs the model cannot be split into.
    #[error("parallel layout: {0}")]
    Layout(String),
    /// A collective between the ranks of a model spread over several devices failed.
    #[error("collective: {0}")]
    Collective(String),
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

impl EngineError {
    pub(crate) fn config(field: &str, message: impl Into<String>) -> Self {
        Self::Config { field: field.to_string(), message: message.into() }
    }

    pub(crate) fn tensor(name: &str, message: impl Into<String>) -> Self {
        Self::Tensor { name: name.to_string(), message: message.into() }
    }
}
