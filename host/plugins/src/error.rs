use std::path::PathBuf;
use thiserror::Error;

/// Why a plugin could not be loaded or a call into it failed.
#[derive(Debug, Error)]
pub enum PluginError {
    #[error("plugin {path}: {message}")]
    Load { path: PathBuf, message: String },
    #[error("plugin spec {spec:?}: {message}")]
    Spec { spec: String, message: String },
    #[error("plugin `{plugin}`: init failed: {message}")]
    Init { plugin: String, message: String },
    #[error("plugin `{plugin}`: {hook} exceeded its {deadline_ms} ms deadline")]
    Timeout { plugin: String, hook: &'static str, deadline_ms: u64 },
    #[error("plugin `{plugin}`: {hook} trapped: {message}")]
    Trap { plugin: String, hook: &'static str, message: String },
    #[error("plugin `{plugin}`: {hook} found no free instance within {waited_ms} ms")]
    Busy { plugin: String, hook: &'static str, waited_ms: u64 },
    #[error("plugin `{plugin}`: {hook} returned an invalid result: {message}")]
    BadResult { plugin: String, hook: &'static str, message: String },
    #[error("plugin `{0}` is not loaded")]
    Unknown(String),
}

impl PluginError {
    /// The message for an HTTP client: no file paths (operators find those in the log).
    pub fn public_message(&self) -> String {
        match self {
            Self::Load { message, .. } => message.clone(),
            Self::Spec { message, .. } => format!("invalid plugin spec: {message}"),
            other => other.to_string(),
        }
    }
}
