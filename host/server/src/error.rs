use thiserror::Error;

/// Failures that stop the server from starting or running.
#[derive(Debug, Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error(transparent)]
    Engine(#[from] mlahost_engine::EngineError),
    #[error(transparent)]
    Cache(#[from] mlahost_core::CoreError),
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Plugin(#[from] mlahost_plugins::PluginError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}
