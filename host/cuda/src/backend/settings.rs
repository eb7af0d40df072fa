//! The one place a `CudaOptions` is filled in: from the engine-wide `BackendOptions` that every
//! front end passes its backend factory, plus the GPU settings of the command line.

use super::{CudaBackend, CudaOptions};
use crate::quant::WeightQuant;
use crate::Result;
use mlahost_engine::LoadedModel;
use mlahost_runtime::BackendOptions;

/// The command line's GPU settings, beside the engine-wide `BackendOptions`.
#[derive(Clone, Copy, Debug)]
pub struct CudaSettings {
    /// Replica i runs on GPU `first_gpu + i`.
    pub first_gpu: usize,
    /// Share of each GPU's memory for weights, workspace and the latent cache.
    pub gpu_memory_utilization: f64,
    /// Replay decode steps from captured graphs.
    pub cuda_graphs: bool,
    /// How linear weights are stored.
    pub quantization: WeightQuant,
}

impl CudaBackend {
    /// Builds replica `options.replica`'s backend on its GPU.
    pub fn from_options(model: &LoadedModel, settings: &CudaSettings, options: &BackendOptions) -> Result<Self> {
        let c = &model.config;
        let fp8 = settings.quantization.fp8_for(c.fp8.is_some());
        let cuda = CudaOptions {
            ordinal: settings.first_gpu + options.replica,
            page_size: options.page_size,
            num_pages: options.kv_cache_pages,
            gpu_memory_utilization: settings.gpu_memory_utilization,
            kv_dtype: options.kv_dtype,
            max_batched_tokens: options.max_batched_tokens,
            max_seqs: options.max_seqs,
            planned_weight_bytes: options.planned_weights.map(|w| w.gpu_bytes(c, fp8)),
            cuda_graphs: settings.cuda_graphs,
        };
        Self::with_quantization(c.clone(), &model.weights, cuda, settings.quantization)
    }
}
