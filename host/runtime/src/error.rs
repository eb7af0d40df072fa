use thiserror::Error;

/// Why an engine core could not start or a request could not run.
#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Cache(#[from] mlahost_core::CoreError),
    #[error(transparent)]
    Engine(#[from] mlahost_engine::EngineError),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("generation failed: {0}")]
    Generation(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}
