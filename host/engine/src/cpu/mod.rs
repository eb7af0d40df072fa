//! The CPU backend: f32 compute over bf16/f32 weights, all cores through rayon. It is the
//! reference the CUDA backend is checked against and the default without a GPU.

mod attention;
mod dp_experts;
mod gemm;
#[cfg(target_arch = "x86_64")]
mod gemm_avx512;
#[cfg(test)]
mod gemm_tests;
mod isa;
mod kernels;
mod kv_cache;
mod moe;
mod ops;
mod pool;
mod rope_at;
mod tensor_parallel;

pub use attention::AttentionMode;
pub use isa::{set_kernel_isa, Isa};
pub use moe::route_logits;
pub use ops::{fp8_round_rows, Fp8Inputs};
pub use tensor_parallel::CpuRankGroup;
pub(crate) use kernels::{max_f32, sum_exp};

use crate::batch::{Backend, CacheGeometry, Logits, LogitsRequest, RoutingTrace, SeqChunk, TokenRoute};
use crate::comm::Communicator;
use crate::config::ModelConfig;
use crate::kv_cache_dtype::KvCacheDtype;
use crate::rope::Rope;
use crate::tensor::Matrix;
use crate::weights::{FeedForward, ModelWeights};
use crate::{EngineError, Result};
use attention::{Attention, TokenSlot};
use kv_cache::LatentCache;
use std::sync::Arc;

#[derive(Debug, Clone, Copy)]
pub struct CpuOptions {
    pub geometry: CacheGeometry,
    pub attention: AttentionMode,
    /// What the latent cache stores (f32 is the reference; bf16 and fp8 quantize on write).
    pub kv_dtype: KvCacheDtype,
}

pub struct CpuBackend {
    cfg: ModelConfig,
    weights: Arc<ModelWeights>,
    rope: Rope,
    cache: LatentCache,
    attention: AttentionMode,
    /// `[layer][token]` own routing of the last forward (empty for dense layers).
    routing: Vec<Vec<TokenRoute>>,
    /// Set by `record_routes`: keep `routing` (and accept `follow_routing`).
    record_routes: bool,
    /// Set by `follow_routing` for the next forward.
    follow: Option<(Vec<Vec<TokenRoute>>, f32)>,
    /// Per layer, W_UK^T of `kv_b_proj` (`attention::uk_transposed`), for the absorbed form.
    uk_t: Arc<Vec<Matrix>>,
    /// Set for one rank of a tensor-parallel group (`shard`): its partial attention and MLP
    /// outputs are summed with the other ranks', its vocabulary's logits gathered.
    comm: Option<Arc<dyn Communicator>>,
    /// Set by `emulate_fp8_activations`.
    fp8_activations: Fp8Inputs,
    /// Set for a rank under data-parallel attention with expert parallelism: its routed
    /// experts run over every attention group's tokens (`dp_experts`).
    expert_group: Option<dp_experts::ExpertGroup>,
}

impl CpuBackend {
    /// Weights are shared so several replicas (or test backends) can run one loaded model.
    pub fn new(cfg: ModelConfig, weights: Arc<ModelWeights>, opts: CpuOptions) -> Result<Self> {
        if weights.lm_head.rows != cfg.vocab_size {
            return Err(EngineError::Layout(format!("lm_head has {} rows for a vocabulary of {}: a shard needs its group", weights.lm_head.rows, cfg.vocab_size)));
        }
        Self::build(cfg, weights, opts, None)
    }

    /// One rank of a tensor-parallel group: `cfg` and `weights` are its share (`shard::shard`),
    /// `comm` its end of the group's collectives.
    pub fn rank(cfg: ModelConfig, weights: Arc<ModelWeights>, opts: CpuOptions, comm: Arc<dyn Communicator>) -> Result<Self> {
        Self::build(cfg, weights, opts, Some(comm))
    }

    fn build(cfg: ModelConfig, weights: Arc<ModelWeights>, opts: CpuOptions, comm: Option<Arc<dyn Communicator>>) -> Result<Self> {
        if opts.geometry.page_size == 0 {
            return Err(EngineError::InvalidRequest("page size must be at least 1".into()));
        }
        let cache = LatentCache::new(cfg.num_hidden_layers, cfg.kv_lora_rank, cfg.latent_dim(), opts.kv_dtype, opts.geometry);
        let (heads, nope, v) = (cfg.num_attention_heads, cfg.qk_nope_head_dim, cfg.v_head_dim);
        let uk_t = Arc::new(weights.layers.iter().map(|l| attention::uk_transposed(&l.attn.kv_b, heads, nope, v)).collect());
        Ok(Self { rope: Rope::new(&cfg), cfg, weights, cache, attention: opts.attention, routing: Vec::new(), record_routes: false, follow: None, uk_t, comm, fp8_activations: Fp8Inputs::Exact, expert_group: None })
    }

    /// Makes this rank's routed experts serve every attention group of the instance.
    fn join_expert_group(&mut self, group: dp_experts::ExpertGroup) {
        self.expert_group = Some(group);
    }

    /// From now on, record each token's routing at every MoE layer (`Backend::routing`) and take
    /// `Backend::follow_routing`; off by default, so serving pays for neither.
    pub fn record_routes(&mut self) {
        self.record_routes = true;
    }

    /// From now on, round the inputs of every linear layer a GPU keeps in FP8 as that GPU does
    /// (bf16, then e4m3 per token per 128 channels: `ops::fp8_input`): the CPU reference for a
    /// GPU running FP8 weights, given the same (dequantized) weights.
    pub fn emulate_fp8_activations(&mut self) {
        self.fp8_activations = Fp8Inputs::Rounded;
    }

    /// As `emulate_fp8_activations`, with every rounded input first moved below bf16's
    /// resolution (`Fp8Inputs::Jittered`): a second honest reference, to measure how far two
    /// FP8 runs part by rounding alone.
    pub fn emulate_fp8_activations_jittered(&mut self) {
        self.fp8_activations = Fp8Inputs::Jittered;
    }

    pub fn kv_cache_dtype(&self) -> KvCacheDtype {
        self.cache.dtype()
    }

    pub fn set_attention_mode(&mut self, mode: AttentionMode) {
        self.attention = mode;
    }
}

impl Backend for CpuBackend {
    fn cache_geometry(&self) -> CacheGeometry {
        self.cache.geometry()
    }

    /// The weights as the checkpoint stores them (bf16 kept, others widened to f32).
    fn weight_storage(&self) -> Option<crate::batch::WeightStorage> {
        let dtype = |m: &crate::tensor::Matrix| match m.data {
            crate::tensor::Storage::Bf16(_) => "bf16",
            crate::tensor::Storage::F32(_) => "f32",
            crate::tensor::Storage::Fp8(_) => "fp8_e4m3",
        };
        let linears = self.weights.layers.first().map_or("none", |l| dtype(&l.attn.o));
        Some(crate::batch::WeightStorage { linears, embeddings: dtype(&self.weights.embed), bytes: self.weights.bytes() as u64 })
    }

    fn forward(&mut self, batch: &[SeqChunk<'_>]) -> Result<Logits> {
        crate::batch::validate_batch(batch, self.cfg.vocab_size, self.cache.geometry())?;
        // The team's workers stay hot (spinning, not parked) through the whole pass, so the
        // many small parallel ops of a decode step cost no wake-ups.
        pool::team().hot(|| self.forward_validated(batch))
    }
}

impl RoutingTrace for CpuBackend {
    fn routing(&self) -> Result<Option<Vec<Vec<TokenRoute>>>> {
        Ok(self.record_routes.then(|| self.routing.clone()))
    }

    fn follow_routing(&mut self, routes: Vec<Vec<TokenRoute>>, within: f32) {
        if self.record_routes {
            self.follow = Some((routes, within));
        }
    }
}

impl CpuBackend {
    fn forward_validated(&mut self, batch: &[SeqChunk<'_>]) -> Result<Logits> {
        let (cfg, w) = (&self.cfg, &*self.weights);
        let hidden = cfg.hidden_size;
        let mut slots = Vec::new();
        let mut offsets = Vec::with_capacity(batch.len());
        for (seq, chunk) in batch.iter().enumerate() {
            offsets.push(slots.len());
            slots.extend((0..chunk.tokens.len()).map(|i| TokenSlot { seq, pos: chunk.start_pos + i }));
        }
        let t = slots.len();
        let mut x = vec![0f32; t * hidden];
        for (tok, row) in batch.iter().flat_map(|c| c.tokens).zip(x.chunks_mut(hidden)) {
            w.embed.row_into(*tok as usize, row);
        }
        let attn = Attention { cfg, rope: &self.rope, mode: self.attention, chunks: batch, chunk_offsets: &offsets, slots: &slots, uk_t: &self.uk_t, fp8_activations: self.fp8_activations };
        let mut routing = Vec::with_capacity(w.layers.len());
        let follow = self.follow.take();
        for (l, layer) in w.layers.iter().enumerate() {
            let mut h = x.clone();
            ops::rms_norm_rows(&mut h, &layer.input_norm, cfg.rms_norm_eps);
            let mut a = attn.forward(l, &layer.attn, &h, &mut self.cache);
            if let Some(c) = &self.comm {
                c.all_reduce_sum(&mut a)?;
            }
            x.iter_mut().zip(&a).for_each(|(x, a)| *x += a);
            let mut h = x.clone();
            ops::rms_norm_rows(&mut h, &layer.post_attention_norm, cfg.rms_norm_eps);
            let mut f = match (&layer.ffn, &cfg.moe) {
                (FeedForward::Moe(m), Some(mc)) if self.expert_group.is_some() => {
                    // Summed over the instance and the group already.
                    routing.push(Vec::new());
                    let group = self.expert_group.as_ref().ok_or_else(|| EngineError::Collective("no expert group".into()))?;
                    let f = dp_experts::moe_over_groups(group, self.comm.as_deref(), m, mc, &h, t, hidden, self.fp8_activations)?;
                    x.iter_mut().zip(&f).for_each(|(x, f)| *x += f);
                    continue;
                }
                (FeedForward::Dense(m), _) => {
                    routing.push(Vec::new());
                    moe::mlp(m, &h, t, self.fp8_activations)
                }
                (FeedForward::Moe(m), Some(mc)) => {
                    let tracking = moe::RouteTracking {
                        record: self.record_routes,
                        follow: follow.as_ref().and_then(|(r, within)| r.get(l).map(|r| (r.as_slice(), *within))),
                    };
                    let (f, routes) = moe::moe(m, mc, &h, t, hidden, tracking, self.fp8_activations);
                    routing.push(routes);
                    f
                }
                // Loading refuses MoE weights without MoE config fields; kept as an error, not a panic.
                (FeedForward::Moe(_), None) => return Err(EngineError::config("n_routed_experts", "an MoE layer needs the MoE fields")),
            };
            if let Some(c) = &self.comm {
                c.all_reduce_sum(&mut f)?;
            }
            x.iter_mut().zip(&f).for_each(|(x, f)| *x += f);
        }
        self.routing = routing;
        // Final norm and lm_head only for the rows that were asked for.
        let mut picked = Vec::new();
        let mut rows = Vec::with_capacity(batch.len());
        for (i, chunk) in batch.iter().enumerate() {
            let (first, n) = (offsets[i], chunk.tokens.len());
            let wanted = match chunk.logits {
                LogitsRequest::None => 0..0,
                LogitsRequest::Last => first + n - 1..first + n,
                LogitsRequest::All => first..first + n,
            };
            let start = picked.len() / hidden;
            picked.extend_from_slice(&x[wanted.start * hidden..wanted.end * hidden]);
            rows.push(start..picked.len() / hidden);
        }
        let n_rows = picked.len() / hidden;
        ops::rms_norm_rows(&mut picked, &w.norm, cfg.rms_norm_eps);
        let mut data = ops::linear(&picked, n_rows, &w.lm_head);
        if let Some(c) = &self.comm {
            data = tensor_parallel::gather_vocab(c.as_ref(), &data, n_rows, cfg.vocab_size)?;
        }
        Ok(Logits { vocab: cfg.vocab_size, data, rows })
    }
}

/// Sizes the global worker pool the CPU backend runs on; call before the first forward pass.
pub fn set_threads(n: usize) -> Result<()> {
    if !pool::init(n) {
        return Err(EngineError::InvalidRequest("the CPU worker team is already sized".into()));
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .map_err(|e| EngineError::InvalidRequest(format!("cannot size the thread pool: {e}")))
}
