//! The CUDA backend: the same ragged-batch forward pass as the CPU engine, on the GPU.
//! Weights live in bf16; the residual stream stays f32; GEMMs go through cuBLAS (bf16 in, f32
//! accumulate); attention reads the paged latent cache with the kernels of kernels/cuda.

mod dp_moe;
mod forward;
mod forward_dp;
mod fp8_scratch;
mod layout;
mod ranks;
mod ranks_dp;
mod sampler;
mod settings;
pub mod workspace;

use crate::blas::Blas;
use crate::collective::DeviceCollective;
use crate::gpu::{DeviceBuffer, Gpu};
use crate::kernels::decode::{DecodeTarget, FAST_KV_LORA, FAST_ROPE};
use crate::kernels::layers::cache_entry_bytes;
use crate::module::Kernels;
use crate::quant::WeightQuant;
use crate::weights::GpuWeights;
use crate::{CudaError, Result};
use layout::BatchLayout;
use mlahost_engine::batch::{Backend, CacheGeometry, Logits, LogitsRequest, SeqChunk};
use mlahost_engine::config::ModelConfig;
use mlahost_engine::weights::{ModelWeights, TensorSource};
use mlahost_engine::capacity::{self, GpuPlanInputs};
use crate::kernels::sampling::MAX_TOP_LOGPROBS;
use mlahost_engine::{DeviceSample, EngineError, KvCacheDtype, RoutingTrace, SampleRequest, TokenRoute};
use crate::weights::GpuFfn;
use crate::graph::Graph;
use crate::profile::Phase;
use std::collections::HashMap;
use std::sync::Arc;
use workspace::{Capacity, Workspace};
pub use ranks::{CudaRankGroup, RankDevices};
pub use settings::CudaSettings;

pub use workspace::initial_capacity;

#[derive(Debug, Clone, Copy)]
pub struct CudaOptions {
    pub ordinal: usize,
    pub page_size: usize,
    /// Pages in the pool; None sizes it from `gpu_memory_utilization`.
    pub num_pages: Option<usize>,
    pub gpu_memory_utilization: f64,
    pub kv_dtype: KvCacheDtype,
    /// Tokens per forward pass the workspace is sized for up front (the scheduler's budget).
    pub max_batched_tokens: usize,
    pub max_seqs: usize,
    /// Weight bytes to plan the pool with: `mlahost plan`'s figure from the checkpoint headers
    /// (so plan and serve agree exactly); None uses the bytes actually uploaded.
    pub planned_weight_bytes: Option<u64>,
    /// Replay decode-only steps from CUDA graphs captured per (batch size, length bucket).
    pub cuda_graphs: bool,
}

pub struct CudaBackend {
    cfg: ModelConfig,
    gpu: Arc<Gpu>,
    kernels: Kernels,
    /// What the split plans know of the GPU.
    decode_target: DecodeTarget,
    blas: Blas,
    weights: GpuWeights,
    /// The FP8 linears' activation scratch (FP8 weights only).
    fp8_scratch: Option<fp8_scratch::Fp8Scratch>,
    /// One buffer per layer: `[pages, page_size, entry]`.
    cache: Vec<DeviceBuffer>,
    geometry: CacheGeometry,
    fp8: bool,
    workspace: Option<Workspace>,
    cuda_graphs: bool,
    /// Captured decode steps by (batch size, length bucket, MoE rows of a data-parallel step in
    /// slots, else 0); dropped when the workspace moves.
    graphs: HashMap<(usize, usize, usize), Graph>,
    sampler: sampler::SamplerBuffers,
    /// Set by `record_routes`: each forward copies its MoE expert ids here.
    route_log: Option<forward::RouteLog>,
    /// The last forward's sequences in device order: (batch index, tokens).
    routed: Vec<(usize, usize)>,
    /// Set for one rank of a tensor-parallel group (`CudaRankGroup`).
    collective: Option<Arc<dyn DeviceCollective>>,
    /// Set under data-parallel attention with expert parallelism: the instance-wide group the
    /// MoE layers exchange rows through (`forward_dp`).
    expert_exchange: Option<Arc<dyn DeviceCollective>>,
    /// Ranks that share one device and meet on it (`RankDevices::EmulatedInGraphs`): buffers and
    /// graphs replaced mid-step are parked here and freed by the group once every rank has issued
    /// the step, because freeing device memory waits for the whole device, where a peer may be
    /// spinning until this rank reaches its next collective. None: freed at once.
    parked: Option<Vec<Parked>>,
}

/// What a rank sharing its device keeps until the group's step is issued.
enum Parked {
    Workspace(#[allow(dead_code)] Box<Workspace>),
    Graph(#[allow(dead_code)] Graph),
}

// SAFETY: every CUDA handle inside is bound to this backend's context, which `forward` makes
// current on whichever thread runs it; the backend is used by one thread at a time (&mut self).
unsafe impl Send for CudaBackend {}

/// Whether every sequence of the batch adds one token and wants only its last logits.
fn decode_only(batch: &[SeqChunk<'_>]) -> bool {
    batch.iter().all(|c| c.tokens.len() == 1 && c.logits == LogitsRequest::Last)
}

/// A rank's place in one step of data-parallel attention (`forward_dp`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct DpStep {
    /// The MoE rows of the step over every attention group, and where this rank's group's
    /// start among them.
    pub total: usize,
    pub offset: usize,
    /// The group's first rank.
    pub leader: bool,
    /// Every rank owns an equal slot of `total / world` rows (its group's tokens, then zero
    /// rows): the rows are all-gathered and the results reduce-scattered, half the bytes of the
    /// two all-reduces the packed layout needs.
    pub slots: bool,
}

/// Where a backend's weights come from.
pub(crate) enum WeightsFrom<'a> {
    /// The whole model (or a rank's shard) in host memory.
    Host(&'a ModelWeights),
    /// Read layer by layer from a checkpoint or generator.
    Stream(&'a dyn TensorSource),
    /// Already on this GPU (a rank group's loader shards each layer for every rank).
    Uploaded(GpuWeights),
}

impl CudaBackend {
    /// Linear layers stored as the checkpoint suggests (`WeightQuant::Auto`: FP8 checkpoints
    /// stay FP8, others bf16).
    pub fn new(cfg: ModelConfig, host_weights: &ModelWeights, opts: CudaOptions) -> Result<Self> {
        Self::with_quantization(cfg, host_weights, opts, WeightQuant::Auto)
    }

    /// As `new`, with the linear layers' storage chosen by `quant` (`--quantization`).
    pub fn with_quantization(cfg: ModelConfig, host_weights: &ModelWeights, opts: CudaOptions, quant: WeightQuant) -> Result<Self> {
        Self::build(cfg, WeightsFrom::Host(host_weights), opts, quant, None, true)
    }

    /// One rank's backend over its shard (`cfg`, `host_weights`); warmed up separately, with
    /// the other ranks (`warm_up`), since the warm-up steps meet at the collectives. Ranks whose
    /// collectives cannot be captured run every step eagerly.
    pub(crate) fn build(cfg: ModelConfig, from: WeightsFrom<'_>, mut opts: CudaOptions, quant: WeightQuant, collective: Option<Arc<dyn DeviceCollective>>, warm: bool) -> Result<Self> {
        opts.cuda_graphs &= collective.as_ref().is_none_or(|c| c.capturable());
        if opts.page_size == 0 {
            return Err(CudaError::Engine(EngineError::InvalidRequest("page size must be at least 1".into())));
        }
        let fp8 = match opts.kv_dtype {
            KvCacheDtype::Bf16 => false,
            KvCacheDtype::Fp8 => true,
            KvCacheDtype::F32 => {
                return Err(CudaError::Engine(EngineError::InvalidRequest(
                    "the CUDA backend stores the latent cache in bf16 or fp8, not f32".into(),
                )))
            }
        };
        let gpu = Gpu::open(opts.ordinal)?;
        let kernels = Kernels::load(&gpu)?;
        let decode_target = DecodeTarget::of(&gpu);
        let blas = Blas::new(&gpu)?;
        let mut fp8_weights = quant.fp8_for(cfg.fp8.is_some());
        if fp8_weights && quant == WeightQuant::Auto && gpu.info.compute_capability < (8, 9) {
            tracing::warn!(arch = %gpu.arch(), "FP8 checkpoint on a GPU without FP8 tensor cores: its weights are widened to bf16");
            fp8_weights = false;
            opts.planned_weight_bytes = None; // the plan counted FP8 bytes
        }
        if fp8_weights && gpu.info.compute_capability < (8, 9) {
            return Err(CudaError::Unavailable(format!(
                "FP8 weights need fp8 tensor cores (sm_89 or newer); this GPU is sm_{}{}: pass --quantization bf16",
                gpu.info.compute_capability.0, gpu.info.compute_capability.1
            )));
        }
        let weights = match from {
            WeightsFrom::Host(w) => GpuWeights::upload(&gpu, &cfg, w, fp8_weights)?,
            WeightsFrom::Stream(src) => GpuWeights::stream(&gpu, &cfg, src, fp8_weights)?,
            WeightsFrom::Uploaded(w) if w.fp8 == fp8_weights => w,
            WeightsFrom::Uploaded(_) => return Err(CudaError::launch("weights", "uploaded in another storage than chosen")),
        };
        let mut workspace = None;
        Workspace::ensure(&mut workspace, &gpu, &cfg, workspace::initial_capacity(opts.max_batched_tokens, opts.max_seqs))?;
        let mut scratch = None;
        if fp8_weights {
            fp8_scratch::Fp8Scratch::ensure(&mut scratch, &gpu, &cfg, opts.max_batched_tokens)?;
        }
        let scratch_bytes = if fp8_weights { capacity::fp8_scratch_bytes(&cfg, opts.max_batched_tokens) } else { 0 };
        let entry = cache_entry_bytes(cfg.kv_lora_rank, cfg.qk_rope_head_dim, fp8);
        let num_pages = match opts.num_pages {
            Some(n) => n,
            None => {
                let inputs = GpuPlanInputs {
                    total_memory: gpu.info.total_memory,
                    utilization: opts.gpu_memory_utilization,
                    weight_bytes: opts.planned_weight_bytes.unwrap_or(weights.bytes),
                    workspace_bytes: capacity::workspace_bytes(&cfg, opts.max_batched_tokens, opts.max_seqs) + scratch_bytes,
                };
                capacity::pool_pages(inputs.kv_budget()?, capacity::page_bytes(&cfg, opts.kv_dtype, opts.page_size))
            }
        };
        if num_pages == 0 {
            return Err(CudaError::OutOfMemory(format!(
                "no room for a single {}-token page after {:.2} GiB of weights (raise --gpu-memory-utilization)",
                opts.page_size,
                weights.bytes as f64 / (1u64 << 30) as f64
            )));
        }
        let per_layer = num_pages * opts.page_size * entry;
        let cache = (0..cfg.num_hidden_layers).map(|_| DeviceBuffer::alloc(&gpu, per_layer)).collect::<Result<Vec<_>>>()?;
        tracing::info!(
            device = %gpu.info.name,
            arch = %gpu.arch(),
            weight_gib = weights.bytes as f64 / (1u64 << 30) as f64,
            weight_dtype = if weights.fp8 { "fp8 e4m3, 128x128 block scales (linears); bf16 embeddings, lm_head, kv_b" } else { "bf16" },
            fp8_weight_gib = weights.fp8_bytes as f64 / (1u64 << 30) as f64,
            num_pages,
            page_size = opts.page_size,
            pool_tokens = num_pages * opts.page_size,
            kv_dtype = if fp8 { "fp8" } else { "bf16" },
            "CUDA backend ready"
        );
        let mut backend = Self {
            cfg,
            gpu,
            kernels,
            decode_target,
            blas,
            weights,
            fp8_scratch: scratch,
            cache,
            geometry: CacheGeometry { num_pages, page_size: opts.page_size },
            fp8,
            workspace,
            cuda_graphs: opts.cuda_graphs,
            graphs: HashMap::new(),
            sampler: Default::default(),
            route_log: None,
            routed: Vec::new(),
            parked: None,
            collective,
            expert_exchange: None,
        };
        if warm {
            backend.warm_up(opts.max_batched_tokens)?;
        }
        Ok(backend)
    }

    /// One prefill of up to `max_batched_tokens` tokens and one decode step on the first pages,
    /// before any request: cuBLAS loads each of its kernels on first use (~50-110 ms for some of
    /// a V2-Lite prefill's GEMMs, measured on the H200), which the first request would otherwise wait
    /// for, and the decode step captures its graph. The latents written there are overwritten
    /// before anything reads them: a page is written position by position as a sequence fills it.
    pub(crate) fn warm_up(&mut self, max_batched_tokens: usize) -> Result<()> {
        let capacity = self.geometry.num_pages * self.geometry.page_size;
        let tokens = max_batched_tokens.min(capacity.saturating_sub(1));
        if tokens == 0 {
            return Ok(());
        }
        let pages: Vec<u32> = (0..(tokens + 1).div_ceil(self.geometry.page_size) as u32).collect();
        let ids = vec![0u32; tokens];
        let started = std::time::Instant::now();
        self.run(&[SeqChunk { tokens: &ids, start_pos: 0, block_table: &pages, logits: LogitsRequest::Last }])?;
        self.run(&[SeqChunk { tokens: &ids[..1], start_pos: tokens, block_table: &pages, logits: LogitsRequest::Last }])?;
        self.gpu.synchronize()?;
        tracing::debug!(tokens, ms = started.elapsed().as_secs_f64() * 1e3, "warmed up");
        Ok(())
    }

    /// Parks replaced buffers and graphs instead of freeing them (ranks sharing one device).
    pub(crate) fn park_frees(&mut self) {
        self.parked.get_or_insert_with(Vec::new);
    }

    /// Frees what was parked: every rank of the group has issued its step.
    pub(crate) fn release_parked(&mut self) {
        if let Some(p) = self.parked.as_mut() {
            p.clear();
        }
    }

    /// From now on, record which experts every MoE layer routes each token to (read back with
    /// `Backend::routing`): one device copy per MoE layer, captured into the decode graphs too.
    pub fn record_routes(&mut self) -> Result<()> {
        self.grow_route_log(64)
    }

    fn grow_route_log(&mut self, tokens: usize) -> Result<()> {
        let top_k = self.cfg.moe.as_ref().map_or(0, |m| m.num_experts_per_tok);
        if top_k == 0 || self.route_log.as_ref().is_some_and(|l| l.tokens >= tokens) {
            return Ok(());
        }
        let tokens = tokens.next_power_of_two();
        let buf = DeviceBuffer::alloc(&self.gpu, self.cfg.num_hidden_layers * tokens * top_k * 4)?;
        self.route_log = Some(forward::RouteLog { buf, tokens });
        self.graphs.clear(); // captured copies point at the old log
        Ok(())
    }

    pub fn device(&self) -> &crate::DeviceInfo {
        &self.gpu.info
    }

    /// The GPU this backend runs on (for `Gpu::set_profiling` and `Gpu::profile_report`).
    pub fn gpu(&self) -> Arc<Gpu> {
        self.gpu.clone()
    }

    pub fn weight_bytes(&self) -> u64 {
        self.weights.bytes
    }

    /// Whether the linear layers are stored in FP8, and their bytes (codes + scales).
    pub fn fp8_weights(&self) -> Option<u64> {
        self.weights.fp8.then_some(self.weights.fp8_bytes)
    }

    /// Whether attention runs on the tiled kernels (DeepSeek's 512 + 64 latent, bf16 or fp8).
    fn fast_attention(&self) -> bool {
        self.cfg.kv_lora_rank == FAST_KV_LORA && self.cfg.qk_rope_head_dim == FAST_ROPE
    }

    /// The length bucket a decode-only batch replays under, when graphs apply to it.
    fn graph_bucket(&self, batch: &[SeqChunk<'_>]) -> Option<usize> {
        // a profile times launches one by one, so it runs every step eagerly
        if !(self.cuda_graphs && self.fast_attention() && decode_only(batch) && !batch.is_empty()) || self.gpu.profiling() {
            return None;
        }
        let longest = batch.iter().map(|c| c.start_pos + 1).max().unwrap_or(1);
        Some(longest.next_power_of_two().max(256))
    }

    /// Runs the batch; its logits rows are left in the workspace (batch order).
    fn run(&mut self, batch: &[SeqChunk<'_>]) -> Result<BatchLayout> {
        self.run_with(batch, None)
    }

    /// The graph a data-parallel step may replay: only in equal slots, whose collectives' sizes
    /// depend on the slot alone (the packed layout's would bake in the other groups' token
    /// counts), and only where the exchange can be captured (NCCL, not the emulation).
    fn dp_graph_bucket(&self, batch: &[SeqChunk<'_>], dp: DpStep) -> Option<usize> {
        let capturable = self.expert_exchange.as_ref().is_some_and(|w| w.capturable());
        if !(dp.slots && capturable) {
            return None;
        }
        self.graph_bucket(batch)
    }

    /// `dp`: this rank's place in a step of data-parallel attention groups; its batch may be
    /// empty (run eagerly).
    fn run_with(&mut self, batch: &[SeqChunk<'_>], dp: Option<DpStep>) -> Result<BatchLayout> {
        if !batch.is_empty() {
            mlahost_engine::batch::validate_batch(batch, self.cfg.vocab_size, self.geometry)?;
        }
        self.gpu.bind()?;
        let heads = self.cfg.num_attention_heads;
        let bucket = match dp {
            None => self.graph_bucket(batch),
            Some(d) => self.dp_graph_bucket(batch, d),
        };
        let layout = BatchLayout::new(
            batch,
            self.geometry.page_size,
            &self.decode_target,
            heads,
            self.fast_attention(),
            self.fp8,
            bucket,
        );
        let moe_rows = layout.tokens.max(dp.map_or(0, |d| d.total));
        let need = Capacity {
            tokens: moe_rows,
            rows: layout.logit_rows.max(1),
            meta: layout.meta.len(),
            partial_rows: layout.max_partial_slots(heads),
        };
        if let (Some(parked), false) = (self.parked.as_mut(), self.workspace.as_ref().is_some_and(|w| w.cap.covers(&need))) {
            parked.extend(self.workspace.take().map(|w| Parked::Workspace(Box::new(w))));
            parked.extend(self.graphs.drain().map(|(_, g)| Parked::Graph(g)));
        }
        if Workspace::ensure(&mut self.workspace, &self.gpu, &self.cfg, need)? {
            self.graphs.clear(); // captured addresses are gone
        }
        if self.weights.fp8 && fp8_scratch::Fp8Scratch::ensure(&mut self.fp8_scratch, &self.gpu, &self.cfg, moe_rows)? {
            self.graphs.clear();
        }
        if self.route_log.is_some() {
            self.grow_route_log(moe_rows)?;
            self.routed = layout.order.iter().map(|&i| (i, batch[i].tokens.len())).collect();
        }
        let ws = self.workspace.as_ref().ok_or_else(|| CudaError::launch("forward", "no workspace"))?;
        if !layout.meta.is_empty() {
            // (an empty data-parallel share has none)
            ws.meta.write(0, &layout.meta)?;
            ws.slots.write(0, &layout.slots)?;
        }
        let f = forward::Forward {
            cfg: &self.cfg,
            k: &self.kernels,
            blas: &self.blas,
            w: &self.weights,
            ws,
            cache: &self.cache,
            geometry: self.geometry,
            fp8: self.fp8,
            layout: &layout,
            route_log: self.route_log.as_ref(),
            quant: self.fp8_scratch.as_ref(),
            num_sms: self.decode_target.num_sms,
            tp: self.collective.as_deref().map(|coll| forward::TpRank { coll, gpu: &self.gpu }),
            dp: match (dp, self.expert_exchange.as_deref()) {
                (Some(d), Some(world)) => Some(dp_moe::DpMoe { world, gpu: &self.gpu, total: d.total, offset: d.offset, leader: d.leader, slots: d.slots }),
                (Some(_), None) => return Err(CudaError::launch("forward", "a data-parallel step on a rank without the expert exchange")),
                (None, _) => None,
            },
        };
        let phase = if decode_only(batch) { Phase::Decode } else { Phase::Prefill };
        self.gpu.profile_forward(phase);
        match bucket {
            Some(b) => {
                let key = (batch.len(), b, dp.map_or(0, |d| d.total));
                if !self.graphs.contains_key(&key) {
                    let graph = Graph::capture(&self.gpu, || f.run())?;
                    tracing::debug!(batch = key.0, bucket = key.1, moe_rows = key.2, "captured a decode graph");
                    self.graphs.insert(key, graph);
                }
                // (the clock starts after a capture: it times the device, not the host)
                self.gpu.step_begin()?;
                self.graphs.get(&key).ok_or_else(|| CudaError::launch("graph", "missing"))?.launch()?;
            }
            None if batch.is_empty() => {
                self.gpu.step_begin()?;
                match f.dp {
                    Some(dp) => f.exchange_only(dp)?,
                    None => return Err(CudaError::launch("forward", "an empty batch outside a data-parallel step")),
                }
            }
            None => {
                self.gpu.step_begin()?;
                f.run()?
            }
        }
        self.gpu.step_end(phase)?;
        self.gpu.profile_collect()?;
        Ok(layout)
    }

    fn forward_checked(&mut self, batch: &[SeqChunk<'_>]) -> Result<Logits> {
        let layout = self.run(batch)?;
        self.read_logits(layout)
    }

    /// One rank's part of a data-parallel step (`dp`): its group's sequences (maybe none), and
    /// their logits when `read` (a group's first rank).
    pub(crate) fn forward_dp(&mut self, batch: &[SeqChunk<'_>], dp: DpStep, read: bool) -> Result<Option<Logits>> {
        let layout = self.run_with(batch, Some(dp))?;
        if !read || batch.is_empty() {
            return Ok(None);
        }
        self.read_logits(layout).map(Some)
    }

    fn read_logits(&self, layout: BatchLayout) -> Result<Logits> {
        let ws = self.workspace.as_ref().ok_or_else(|| CudaError::launch("forward", "no workspace"))?;
        let vocab = self.cfg.vocab_size;
        let mut data = vec![0f32; layout.logit_rows * vocab];
        ws.logits.read(0, &mut data)?;
        Ok(Logits { vocab, data, rows: layout.row_ranges })
    }

    /// Runs the batch and leaves its logits on the device (a tensor-parallel rank other than
    /// the one whose logits are read).
    pub(crate) fn forward_discarding(&mut self, batch: &[SeqChunk<'_>]) -> Result<()> {
        self.run(batch).map(|_| ())
    }

    /// One request per `Last` row and nothing the sampling kernel cannot do.
    pub(crate) fn samples_on_device(batch: &[SeqChunk<'_>], requests: &[SampleRequest<'_>]) -> bool {
        let rows = batch.iter().filter(|c| c.logits == LogitsRequest::Last).count();
        let all = batch.iter().any(|c| c.logits == LogitsRequest::All);
        !all && rows == requests.len() && requests.iter().all(|r| r.top_logprobs <= MAX_TOP_LOGPROBS)
    }

    fn forward_sampled_checked(&mut self, batch: &[SeqChunk<'_>], requests: &mut [SampleRequest<'_>]) -> Result<Option<Vec<DeviceSample>>> {
        // Checked before any generator is drawn from, so a refusal leaves the host path
        // exactly as it was.
        if !Self::samples_on_device(batch, requests) {
            return Ok(None);
        }
        self.run(batch)?;
        let ws = self.workspace.as_ref().ok_or_else(|| CudaError::launch("forward", "no workspace"))?;
        self.sampler.sample(&self.kernels, &ws.logits, self.cfg.vocab_size, requests).map(Some)
    }
}

impl Backend for CudaBackend {
    fn forward(&mut self, batch: &[SeqChunk<'_>]) -> mlahost_engine::Result<Logits> {
        self.forward_checked(batch).map_err(EngineError::from)
    }

    fn weight_storage(&self) -> Option<mlahost_engine::WeightStorage> {
        Some(mlahost_engine::WeightStorage { linears: if self.weights.fp8 { "fp8_e4m3" } else { "bf16" }, embeddings: "bf16", bytes: self.weights.bytes })
    }

    fn cache_geometry(&self) -> CacheGeometry {
        self.geometry
    }

    fn forward_sampled(&mut self, batch: &[SeqChunk<'_>], requests: &mut [SampleRequest<'_>]) -> mlahost_engine::Result<Option<Vec<DeviceSample>>> {
        self.forward_sampled_checked(batch, requests).map_err(EngineError::from)
    }
}

impl RoutingTrace for CudaBackend {
    fn routing(&self) -> mlahost_engine::Result<Option<Vec<Vec<TokenRoute>>>> {
        let (Some(log), Some(mc)) = (&self.route_log, self.cfg.moe.as_ref()) else { return Ok(None) };
        let k = mc.num_experts_per_tok;
        let ids = log.buf.to_vec::<i32>(self.cfg.num_hidden_layers * log.tokens * k).map_err(EngineError::from)?;
        // device token order -> batch order
        let mut first = vec![(0usize, 0usize); self.routed.len()];
        let mut at = 0;
        for &(i, n) in &self.routed {
            first[i] = (at, n);
            at += n;
        }
        let layers = self.weights.layers.iter().enumerate().map(|(l, layer)| match layer.ffn {
            GpuFfn::Moe(_) => first
                .iter()
                .flat_map(|&(f, n)| f..f + n)
                .map(|tok| {
                    let mut experts: Vec<u32> = ids[(l * log.tokens + tok) * k..][..k].iter().map(|&e| e as u32).collect();
                    experts.sort_unstable();
                    TokenRoute { experts, margin: f32::NAN }
                })
                .collect(),
            GpuFfn::Dense(_) => Vec::new(),
        });
        Ok(Some(layers.collect()))
    }
}
