//! The one place a `CudaOptions` is filled in: from the engine-wide `BackendOptions` that every
//! front end passes its backend factory, plus the GPU settings of the command line.

use super::{CudaBackend, CudaOptions, CudaRankGroup, RankDevices, WeightsFrom};
use mlahost_engine::parallel::ParallelLayout;
use crate::quant::WeightQuant;
use crate::Result;
use mlahost_engine::rendezvous::NodeGroup;
use mlahost_engine::weights::TensorSource;
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
        let cuda = cuda_options(model, settings, options, settings.first_gpu + options.replica);
        let c = &model.config;
        if let Some(w) = model.loaded_weights() {
            return Self::with_quantization(c.clone(), &w, cuda, settings.quantization);
        }
        streamed(model, settings, |src| Self::build(c.clone(), WeightsFrom::Stream(src), cuda, settings.quantization, None, true))
    }
}

/// `load` over the model's weights read a layer at a time (FP8 weights as the file stores them
/// when the GPU keeps FP8), the progress bar closed after.
fn streamed<R>(model: &LoadedModel, settings: &CudaSettings, load: impl FnOnce(&dyn TensorSource) -> Result<R>) -> Result<R> {
    let src = model.source(settings.quantization.fp8_for(model.config.fp8.is_some()))?;
    let out = load(src.as_ref());
    model.finish_progress();
    out
}

impl CudaRankGroup {
    /// Replica `options.replica`'s ranks on GPUs `first_gpu + replica * world ..`, over NCCL.
    pub fn from_options(model: &LoadedModel, settings: &CudaSettings, options: &BackendOptions, layout: ParallelLayout) -> Result<Self> {
        let first_gpu = settings.first_gpu + options.replica * layout.world();
        // a rank's weights are its shard's, not the planned whole model's
        let cuda = CudaOptions { planned_weight_bytes: None, ..cuda_options(model, settings, options, first_gpu) };
        let devices = RankDevices::Nccl { first_gpu };
        let c = &model.config;
        if let Some(w) = model.loaded_weights() {
            return Self::new(c, &w, layout, cuda, settings.quantization, devices);
        }
        streamed(model, settings, |src| Self::stream(c, src, layout, cuda, settings.quantization, devices))
    }

    /// This node's ranks of an instance over several hosts (`--nnodes`): its share of
    /// `layout`'s ranks on GPUs `first_gpu ..`, the weights streamed from the checkpoint.
    pub fn from_options_across_nodes(model: &LoadedModel, settings: &CudaSettings, options: &BackendOptions, layout: ParallelLayout, nodes: &NodeGroup) -> Result<Self> {
        let cuda = CudaOptions { planned_weight_bytes: None, ..cuda_options(model, settings, options, settings.first_gpu) };
        streamed(model, settings, |src| Self::across_nodes(&model.config, src, layout, cuda, settings.quantization, settings.first_gpu, nodes))
    }
}

fn cuda_options(model: &LoadedModel, settings: &CudaSettings, options: &BackendOptions, ordinal: usize) -> CudaOptions {
    let c = &model.config;
    let fp8 = settings.quantization.fp8_for(c.fp8.is_some());
    CudaOptions {
        ordinal,
        page_size: options.page_size,
        num_pages: options.kv_cache_pages,
        gpu_memory_utilization: settings.gpu_memory_utilization,
        kv_dtype: options.kv_dtype,
        max_batched_tokens: options.max_batched_tokens,
        max_seqs: options.max_seqs,
        planned_weight_bytes: options.planned_weights.map(|w| w.gpu_bytes(c, fp8)),
        cuda_graphs: settings.cuda_graphs,
    }
}
