//! How a front end gets a replica's backend: one options struct and one factory. The
//! implementation that knows the devices (CPU, CUDA) lives with the binary, so the server and
//! this crate never link a GPU library.

use crate::RuntimeError;
use mlahost_engine::capacity::WeightCount;
use mlahost_engine::{Backend, KvCacheDtype, LoadedModel};

/// What every backend needs to know about the replica it serves.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendOptions {
    /// Replica index (replica i of a CUDA server runs on the i-th GPU of its range).
    pub replica: usize,
    pub page_size: usize,
    /// Latent-cache pages, or bytes, asked for; None lets the backend size the pool.
    pub kv_cache_pages: Option<usize>,
    pub kv_cache_memory: Option<u64>,
    pub kv_dtype: KvCacheDtype,
    /// The scheduler's limits: the largest step a backend must hold workspace for.
    pub max_batched_tokens: usize,
    pub max_seqs: usize,
    /// The weights as the plan counted them, so the backend can check its own accounting in
    /// whatever dtype it stores them.
    pub planned_weights: Option<WeightCount>,
}

pub trait BackendFactory: Send + Sync {
    fn build(&self, model: &LoadedModel, options: &BackendOptions) -> Result<Box<dyn Backend>, RuntimeError>;

    /// Where the backends run (for logs), e.g. `cpu` or `cuda:0`.
    fn describe(&self) -> String;
}
