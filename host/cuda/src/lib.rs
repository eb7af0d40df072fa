//! The CUDA backend of mlahost: kernels compiled by NVRTC at run time (no toolkit at build
//! time), dense GEMMs through cuBLAS, weights and the paged latent cache on the GPU.
//!
//! Every CUDA library is loaded when first used, so this crate builds and links everywhere;
//! `Gpu::open` returns `CudaError::Unavailable` on machines without a driver.

pub mod blas;
pub mod blas_lt;
pub mod collective;
pub mod collective_graphs;
pub mod compile;
mod device;
mod error;
pub mod gpu;
pub mod graph;
pub mod kernels;
pub mod module;
pub mod nccl;
pub mod profile;
pub mod quant;
pub mod sources;
mod step_clock;

pub use error::{CudaError, Result};
pub use gpu::{DeviceBuffer, DeviceInfo, Gpu};
pub use module::{Arg, Kernels};
pub mod backend;
pub mod weights;

pub use backend::{CudaBackend, CudaOptions, CudaRankGroup, CudaSettings, RankDevices};
pub use device::Device;
