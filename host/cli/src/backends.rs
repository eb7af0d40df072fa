//! The one place backends are built from command-line settings: the CPU engine, or the CUDA
//! backend on GPU `first + replica`. `serve` and `generate` both go through it.

use mlahost_cuda::Gpu;
use mlahost_cuda::quant::WeightQuant;
use mlahost_cuda::{CudaBackend, CudaRankGroup, CudaSettings, Device};
use mlahost_engine::cpu::{AttentionMode, CpuOptions, CpuRankGroup};
use mlahost_engine::parallel::ParallelLayout;
use mlahost_engine::rendezvous::NodeGroup;
use mlahost_engine::{capacity, Backend, CacheGeometry, LoadedModel};
use mlahost_runtime::{BackendFactory, BackendOptions, RuntimeError};
use std::sync::{Arc, Mutex};

pub struct DeviceBackends {
    pub device: Device,
    /// One model over several ranks: on the CPU a group of threads (`CpuRankGroup`).
    pub layout: ParallelLayout,
    /// CPU: absorbed, unabsorbed or chosen per step.
    pub attention: AttentionMode,
    /// CUDA: share of each GPU's memory for weights, workspace and the latent cache.
    pub gpu_memory_utilization: f64,
    /// CUDA: replay decode steps from captured graphs.
    pub cuda_graphs: bool,
    /// CUDA: how linear weights are stored.
    pub quantization: WeightQuant,
    /// CUDA: time every kernel (the GPU handles are kept for the report).
    pub profile: bool,
    /// With `profile`: the GPU of each rank of the last backend built, in rank order.
    pub profiled: Mutex<Vec<Arc<Gpu>>>,
    /// CUDA, one GPU: time each forward pass on the device (`Gpu::step_device_time`); the GPU
    /// of the last backend built is kept in `clocked`.
    pub step_clock: bool,
    pub clocked: Mutex<Option<Arc<Gpu>>>,
    /// CUDA: this host's place when one instance spans several (`--nnodes`).
    pub nodes: Option<NodeGroup>,
}

impl DeviceBackends {
    pub fn new(device: Device) -> Self {
        Self {
            device,
            layout: ParallelLayout::SINGLE,
            attention: AttentionMode::Auto,
            gpu_memory_utilization: 0.92,
            cuda_graphs: true,
            quantization: WeightQuant::Auto,
            profile: false,
            profiled: Mutex::new(Vec::new()),
            step_clock: false,
            clocked: Mutex::new(None),
            nodes: None,
        }
    }
}

impl DeviceBackends {
    fn settings(&self, first_gpu: usize) -> CudaSettings {
        CudaSettings { first_gpu, gpu_memory_utilization: self.gpu_memory_utilization, cuda_graphs: self.cuda_graphs, quantization: self.quantization }
    }
}

impl BackendFactory for DeviceBackends {
    fn build(&self, model: &LoadedModel, o: &BackendOptions) -> Result<Box<dyn Backend>, RuntimeError> {
        let c = &model.config;
        match self.device {
            Device::Cpu => {
                let num_pages = capacity::cpu_pool_pages(c, o.kv_dtype, o.page_size, o.kv_cache_pages, o.kv_cache_memory)?;
                let geometry = CacheGeometry { num_pages, page_size: o.page_size };
                let opts = CpuOptions { geometry, attention: self.attention, kv_dtype: o.kv_dtype };
                if self.layout != ParallelLayout::SINGLE {
                    return Ok(Box::new(CpuRankGroup::new(c, &*model.weights()?, self.layout, opts)?));
                }
                Ok(Box::new(model.cpu_backend(opts)?))
            }
            Device::Cuda(first_gpu) if self.layout != ParallelLayout::SINGLE || self.nodes.is_some() => {
                let settings = self.settings(first_gpu);
                let ranks = match &self.nodes {
                    Some(g) => CudaRankGroup::from_options_across_nodes(model, &settings, o, self.layout, g),
                    None => CudaRankGroup::from_options(model, &settings, o, self.layout),
                }
                .map_err(mlahost_engine::EngineError::from)?;
                if self.profile {
                    let mut profiled = self.profiled.lock().unwrap_or_else(|p| p.into_inner());
                    for gpu in ranks.gpus() {
                        gpu.set_profiling(true);
                        profiled.push(gpu);
                    }
                }
                Ok(Box::new(ranks))
            }
            Device::Cuda(first_gpu) => {
                let settings = self.settings(first_gpu);
                let backend = CudaBackend::from_options(model, &settings, o)
                    .map_err(mlahost_engine::EngineError::from)?;
                if self.profile {
                    let gpu = backend.gpu();
                    gpu.set_profiling(true);
                    self.profiled.lock().unwrap_or_else(|p| p.into_inner()).push(gpu);
                }
                if self.step_clock {
                    let gpu = backend.gpu();
                    gpu.set_step_clock(true).map_err(mlahost_engine::EngineError::from)?;
                    *self.clocked.lock().unwrap_or_else(|p| p.into_inner()) = Some(gpu);
                }
                Ok(Box::new(backend))
            }
        }
    }

    fn describe(&self) -> String {
        self.device.to_string()
    }
}
