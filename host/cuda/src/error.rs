use thiserror::Error;

/// Everything the CUDA backend can fail with.
#[derive(Debug, Error)]
pub enum CudaError {
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("CUDA driver: {context}: {message}")]
    Driver { context: String, message: String },
    #[error("NVRTC could not compile {file} for {arch}: {log}")]
    Compile { file: String, arch: String, log: String },
    #[error("cuBLAS: {context}: {message}")]
    Blas { context: String, message: String },
    #[error("kernel {kernel}: {message}")]
    Launch { kernel: &'static str, message: String },
    #[error("NCCL: {context}: {message}")]
    Nccl { context: String, message: String },
    #[error("out of GPU memory: {0}")]
    OutOfMemory(String),
    #[error(transparent)]
    Engine(#[from] mlahost_engine::EngineError),
}

pub type Result<T, E = CudaError> = std::result::Result<T, E>;

impl CudaError {
    pub fn launch(kernel: &'static str, message: impl Into<String>) -> Self {
        Self::Launch { kernel, message: message.into() }
    }
}

/// Adds context to a driver call's error.
pub(crate) trait DriverContext<T> {
    fn ctx(self, what: &str) -> Result<T>;
}

impl<T> DriverContext<T> for std::result::Result<T, cudarc::driver::DriverError> {
    fn ctx(self, what: &str) -> Result<T> {
        self.map_err(|e| CudaError::Driver { context: what.to_string(), message: format!("{e:?}") })
    }
}

impl<T> DriverContext<T> for std::result::Result<T, cudarc::cublas::result::CublasError> {
    fn ctx(self, what: &str) -> Result<T> {
        self.map_err(|e| CudaError::Blas { context: what.to_string(), message: format!("{e:?}") })
    }
}

impl From<CudaError> for mlahost_engine::EngineError {
    fn from(e: CudaError) -> Self {
        match e {
            CudaError::Engine(e) => e,
            other => mlahost_engine::EngineError::Device(other.to_string()),
        }
    }
}
