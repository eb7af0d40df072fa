//! The one place the latent page pool is sized. `mlahost serve` (CPU now, CUDA later) and
//! `mlahost plan` both call these functions, so the plan's answer is what serve allocates.

use crate::checkpoint::Checkpoint;
use crate::config::ModelConfig;
use crate::shapes;
use crate::kv_cache_dtype::KvCacheDtype;
use crate::{EngineError, Result};
use std::path::Path;

/// Tokens per page unless told otherwise (the size the fastest Hopper MLA kernels use).
pub const DEFAULT_PAGE_SIZE: usize = 64;
/// The CPU latent-cache budget when neither `--kv-cache-pages` nor `--kv-cache-memory` is given.
pub const DEFAULT_CPU_KV_CACHE_BYTES: u64 = 1 << 30;
/// Head dim of the MHA / GQA caches MLA is compared with (DeepSeek's v_head_dim, the seed's 128).
const COMPARISON_HEAD_DIM_FALLBACK: usize = 128;

/// Bytes of one page over all layers.
pub fn page_bytes(cfg: &ModelConfig, dtype: KvCacheDtype, page_size: usize) -> u64 {
    (cfg.num_hidden_layers * page_size * dtype.bytes_per_token_per_layer(cfg)) as u64
}

/// Whole pages that fit `budget_bytes`.
pub fn pool_pages(budget_bytes: u64, page_bytes: u64) -> usize {
    if page_bytes == 0 {
        return 0;
    }
    usize::try_from(budget_bytes / page_bytes).unwrap_or(usize::MAX)
}

/// Pages of the CPU pool: `pages` if given, else as many as `memory` (default 1 GiB) holds.
pub fn cpu_pool_pages(cfg: &ModelConfig, dtype: KvCacheDtype, page_size: usize, pages: Option<usize>, memory: Option<u64>) -> Result<usize> {
    if page_size == 0 {
        return Err(EngineError::Capacity("the page size must be at least 1".into()));
    }
    let per_page = page_bytes(cfg, dtype, page_size);
    let n = match pages {
        Some(p) => p,
        None => pool_pages(memory.unwrap_or(DEFAULT_CPU_KV_CACHE_BYTES), per_page),
    };
    if n == 0 {
        return Err(EngineError::Capacity(format!("the KV cache holds no page ({per_page} bytes each in {dtype})")));
    }
    Ok(n)
}

/// Sequences of `context` tokens that fit a pool, each rounded up to whole pages.
pub fn sequences_that_fit(pool_pages: usize, page_size: usize, context: usize) -> usize {
    if context == 0 || page_size == 0 {
        return 0;
    }
    pool_pages / context.div_ceil(page_size)
}

/// One GPU's memory split: weights, then the workspace, then the latent cache.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GpuPlanInputs {
    pub total_memory: u64,
    /// Share of `total_memory` mlahost may use (vLLM's --gpu-memory-utilization).
    pub utilization: f64,
    pub weight_bytes: u64,
    pub workspace_bytes: u64,
}

impl GpuPlanInputs {
    pub fn usable(&self) -> u64 {
        (self.total_memory as f64 * self.utilization).floor() as u64
    }

    /// Bytes left for the latent cache; an error naming the numbers when nothing is left.
    pub fn kv_budget(&self) -> Result<u64> {
        if !(self.utilization > 0.0 && self.utilization <= 1.0) {
            return Err(EngineError::Capacity(format!("GPU memory utilization {} is not in (0, 1]", self.utilization)));
        }
        let usable = self.usable();
        let taken = self.weight_bytes.saturating_add(self.workspace_bytes);
        if taken >= usable {
            return Err(EngineError::Capacity(format!(
                "weights ({}) + workspace ({}) = {} do not fit the usable GPU memory ({} = {} x {})",
                human(self.weight_bytes),
                human(self.workspace_bytes),
                human(taken),
                human(usable),
                human(self.total_memory),
                self.utilization
            )));
        }
        Ok(usable - taken)
    }
}

/// Rows per MoE GEMM tile of the smallest kind the GPU backend uses (its skinny decode tiles);
/// the tile list is sized for it.
pub const MOE_MIN_TILE_ROWS: u64 = 16;

/// Upper bound on the MoE GEMM tiles of `pairs` token-expert pairs over `experts` experts with
/// tiles of at most `tile_rows` rows: each expert's rows split into tiles, and no tile is empty.
pub fn moe_max_tiles(pairs: u64, experts: u64, tile_rows: u64) -> u64 {
    pairs.min(pairs.div_ceil(tile_rows) + experts)
}

/// Declares `WorkspaceLayout<T>`, one named field per buffer in allocation order, with the
/// conversions both crates need: sizes (`T = u64`) here, device buffers in the CUDA crate.
macro_rules! workspace_layout {
    ($($(#[doc = $doc:literal])* $name:ident,)*) => {
        /// The CUDA backend's activation buffers by name. `WorkspaceLayout<u64>` holds their
        /// byte sizes (`workspace_buffers`); the CUDA crate's workspace is a
        /// `WorkspaceLayout<DeviceBuffer>` made from them with `try_map`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct WorkspaceLayout<T> {
            $($(#[doc = $doc])* pub $name: T,)*
        }

        impl<T> WorkspaceLayout<T> {
            /// Converts every buffer in field order, stopping at the first error.
            pub fn try_map<U, E>(self, mut f: impl FnMut(T) -> Result<U, E>) -> Result<WorkspaceLayout<U>, E> {
                Ok(WorkspaceLayout { $($name: f(self.$name)?,)* })
            }

            pub fn map<U>(self, mut f: impl FnMut(T) -> U) -> WorkspaceLayout<U> {
                WorkspaceLayout { $($name: f(self.$name),)* }
            }

            /// Every buffer with its name, in field order.
            pub fn named(&self) -> Vec<(&'static str, &T)> {
                vec![$((stringify!($name), &self.$name),)*]
            }
        }
    };
}

workspace_layout! {
    /// residual x (f32)
    x,
    /// normalized h (bf16)
    h,
    /// normalized h (f32, router input; MoE models only)
    h32,
    /// q_a output (f32)
    qa,
    /// q_a normalized (bf16)
    qa_n,
    /// per-head queries
    q_in,
    /// kv_a output (f32)
    kv,
    /// absorbed queries (kv_lora + rope per head)
    q_full,
    /// attention output (latent, per head)
    att,
    /// attention log-sum-exp
    lse,
    /// values
    ov,
    /// dense / shared MLP gate and up
    gate_up,
    /// dense / shared MLP activation
    act,
    /// router logits
    router,
    /// expert ids
    topk_ids,
    /// expert weights
    topk_w,
    /// expert offsets
    expert_offsets,
    /// token-expert pairs sorted by expert
    sorted_pairs,
    /// each pair's position
    pair_pos,
    /// GEMM tiles (3 i32 each)
    tiles,
    /// tile count
    num_tiles,
    /// routed experts' gate and up
    expert_gate_up,
    /// routed experts' activation
    expert_act,
    /// routed experts' outputs (f32)
    expert_out,
    /// final norm, per logits row
    final_h,
    /// logits (f32), per logits row
    logits,
    /// batch metadata (i32)
    meta,
    /// cache slots
    slots,
    /// split-KV partial outputs (bf16)
    part_o,
    /// split-KV partial lse
    part_lse,
    /// split-arrival words: 2 per 16-row group, + 2 per token for each sequence's partial group
    sync,
    /// the streaming dense linear's split-k partials (f32, fixed: splits are limited to it)
    stream_part,
    /// its arrival counters, one u32 per column tile (zero at rest)
    stream_counters,
}

/// The CUDA backend's activation buffers, in bytes: the f32 residual and its normalized copies,
/// the query path, the latent and its attention output per head, values, the dense / shared MLP
/// pair, the router, per routed expert choice its gate/up pair, activation and f32 output, then
/// per logits row the final norm and f32 logits, the batch metadata (`meta` i32), cache slots,
/// the split-KV partials (`partial_rows`), and the streaming linear's split-k partials and
/// counters. Each buffer is at least 16 bytes. The backend
/// allocates exactly these; `workspace_bytes` sums them.
pub fn workspace_buffers(cfg: &ModelConfig, tokens: usize, rows: usize, meta: usize, partial_rows: usize) -> WorkspaceLayout<u64> {
    let (t, rows, meta, partial_rows) = (tokens as u64, rows as u64, meta as u64, partial_rows as u64);
    let (h, heads) = (cfg.hidden_size as u64, cfg.num_attention_heads as u64);
    let (kv_lora, d, q_lora) = (cfg.kv_lora_rank as u64, cfg.latent_dim() as u64, cfg.q_lora_rank.unwrap_or(0) as u64);
    let moe = cfg.moe.as_ref();
    let shared_inter = moe.map_or(0, |m| (m.moe_intermediate_size * m.n_shared_experts) as u64);
    let inter = (cfg.intermediate_size as u64).max(shared_inter);
    let (experts, k, moe_inter) = moe.map_or((0, 0, 0), |m| (m.n_routed_experts as u64, m.num_experts_per_tok as u64, m.moe_intermediate_size as u64));
    let pairs = t * k;
    WorkspaceLayout {
        x: t * h * 4,
        h: t * h * 2,
        h32: if moe.is_some() { t * h * 4 } else { 0 },
        qa: t * q_lora * 4,
        qa_n: t * q_lora * 2,
        q_in: t * heads * cfg.qk_head_dim() as u64 * 2,
        kv: t * d * 4,
        q_full: t * heads * d * 2,
        att: t * heads * kv_lora * 2,
        lse: t * heads * 4,
        ov: t * heads * cfg.v_head_dim as u64 * 2,
        gate_up: t * 2 * inter * 2,
        act: t * inter * 2,
        router: t * experts * 4,
        topk_ids: pairs * 4,
        topk_w: pairs * 4,
        expert_offsets: (experts + 1) * 4,
        sorted_pairs: pairs * 4,
        pair_pos: pairs * 4,
        tiles: moe_max_tiles(pairs, experts, MOE_MIN_TILE_ROWS) * 3 * 4,
        num_tiles: 4,
        expert_gate_up: pairs * 2 * moe_inter * 2,
        expert_act: pairs * moe_inter * 2,
        expert_out: pairs * h * 4,
        final_h: rows * h * 2,
        logits: rows * cfg.vocab_size as u64 * 4,
        meta: meta * 4,
        slots: t * 8,
        part_o: partial_rows * kv_lora * 2,
        part_lse: partial_rows * 4,
        sync: (t * heads).div_ceil(16).max(1) * 2 * 4 + t * 8,
        stream_part: STREAM_SPLIT_PARTIAL_BYTES,
        stream_counters: STREAM_TILE_COUNTER_BYTES + ROUTER_COUNTER_BYTES,
    }
    .map(|b| b.max(16))
}

/// The batch metadata a workspace starts with: 4 i32 per token, 64 per logits row.
pub fn workspace_meta(max_batched_tokens: usize, max_seqs: usize) -> usize {
    max_batched_tokens.max(1) * 4 + max_seqs.max(1) * 64
}

/// Bytes of the CUDA backend's workspace for a scheduler budget, as it allocates it at start
/// (split-KV partials are grown on first use: a few MB for decode batches).
pub fn workspace_bytes(cfg: &ModelConfig, max_batched_tokens: usize, max_seqs: usize) -> u64 {
    let (t, rows) = (max_batched_tokens.max(1), max_seqs.max(1));
    workspace_buffers(cfg, t, rows, workspace_meta(t, rows), 0).named().into_iter().map(|(_, &b)| b).sum()
}

/// The streaming bf16 linear's split-k partials (f32): 16 rows x 16K columns x 16 splits.
pub const STREAM_SPLIT_PARTIAL_BYTES: u64 = 16 << 20;
/// Its arrival counters: one u32 per 64-column tile of a split linear.
pub const STREAM_TILE_COUNTER_BYTES: u64 = 4096;
/// The fused small-batch router's arrival counters (one per group of 16 experts, and one for the
/// groups), after the streaming linear's in the same buffer; it borrows the linear's partials.
pub const ROUTER_COUNTER_BYTES: u64 = 256;

/// The FP8 GEMMs' split-k partials (f32): a fixed buffer; splits are limited to what fits.
pub const FP8_SPLIT_PARTIAL_BYTES: u64 = 16 << 20;
/// The skinny FP8 GEMM's arrival counters (one u32 per column tile of a split GEMM).
pub const FP8_TILE_COUNTER_BYTES: u64 = 4096;
/// cuBLASLt's workspace for the block-scaled FP8 matmuls (allocated on Hopper, where it runs).
pub const FP8_LT_WORKSPACE_BYTES: u64 = 32 << 20;

/// The CUDA backend's FP8 scratch for `tokens` tokens per forward pass, allocated beside the
/// workspace when the linear layers are stored in FP8: one quantized activation (e4m3 codes,
/// then per-128-channel f32 scales) as large as the largest linear input, dense or per routed
/// expert choice, the split-k partials, their tile counters and cuBLASLt's workspace.
pub fn fp8_scratch_buffers(cfg: &ModelConfig, tokens: usize) -> [u64; 5] {
    let t = tokens.max(1) as u64;
    let (h, heads) = (cfg.hidden_size as u64, cfg.num_attention_heads as u64);
    let moe = cfg.moe.as_ref();
    let shared_inter = moe.map_or(0, |m| (m.moe_intermediate_size * m.n_shared_experts) as u64);
    let dense_k = [h, cfg.q_lora_rank.unwrap_or(0) as u64, heads * cfg.v_head_dim as u64, cfg.intermediate_size as u64, shared_inter];
    let dense = dense_k.iter().map(|&k| (t, k)).collect::<Vec<_>>();
    let routed = moe.map(|m| (t * m.num_experts_per_tok as u64, m.moe_intermediate_size as u64));
    let codes = dense.iter().chain(routed.iter()).map(|&(r, k)| r * k).max().unwrap_or(0);
    let scales = dense.iter().chain(routed.iter()).map(|&(r, k)| r * k.div_ceil(128) * 4).max().unwrap_or(0);
    [codes.max(16), scales.max(16), FP8_SPLIT_PARTIAL_BYTES, FP8_TILE_COUNTER_BYTES, FP8_LT_WORKSPACE_BYTES]
}

pub fn fp8_scratch_bytes(cfg: &ModelConfig, tokens: usize) -> u64 {
    fp8_scratch_buffers(cfg, tokens).iter().sum()
}

/// Where a parameter count came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightSource {
    /// The safetensors headers (no tensor data read).
    Checkpoint,
    /// The config's shapes (no weight files in the directory).
    ConfigShapes,
}

impl WeightSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Checkpoint => "safetensors headers",
            Self::ConfigShapes => "config.json shapes",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeightCount {
    pub parameters: u64,
    pub source: WeightSource,
}

impl WeightCount {
    /// Bytes on the GPU: bf16, fp8 checkpoints dequantized to bf16.
    pub fn bf16_bytes(&self) -> u64 {
        self.parameters * 2
    }

    /// Bytes on the GPU with the linear layers in block-scaled FP8 (`fp8`) or in bf16: the
    /// figure `serve --device cuda` plans its pool with, as `plan` does.
    pub fn gpu_bytes(&self, cfg: &ModelConfig, fp8: bool) -> u64 {
        if !fp8 {
            return self.bf16_bytes();
        }
        let (params, bytes) = fp8_linears(cfg);
        self.bf16_bytes() - 2 * params + bytes
    }
}

/// The linear layers the CUDA backend stores in FP8 (attention projections but kv_b, dense and
/// shared MLPs with gate and up stacked, routed experts), as (parameters, bytes as e4m3 codes +
/// one f32 scale per 128x128 block). A matrix whose input width is not a multiple of 16 stays
/// bf16 (the FP8 GEMM reads 16-byte chunks).
pub fn fp8_linears(cfg: &ModelConfig) -> (u64, u64) {
    shapes::linears(cfg)
        .iter()
        .filter(|l| l.fp8)
        .fold((0, 0), |(p, b), l| (p + l.rows * l.cols * l.count, b + shapes::linear_bytes(l.rows, l.cols, true) * l.count))
}

/// Counts the checkpoint's parameters from its headers, or from the config when the directory
/// has no weight files.
pub fn count_weights(dir: &Path, cfg: &ModelConfig) -> Result<WeightCount> {
    let has_weights = dir.join("model.safetensors").exists() || dir.join("model.safetensors.index.json").exists();
    if !has_weights {
        return Ok(WeightCount { parameters: parameters_from_config(cfg), source: WeightSource::ConfigShapes });
    }
    Ok(WeightCount { parameters: Checkpoint::open(dir)?.parameter_count(), source: WeightSource::Checkpoint })
}

/// Parameters the engine loads for `cfg` (the tensors `weights.rs` reads; no MTP layers).
pub fn parameters_from_config(cfg: &ModelConfig) -> u64 {
    let linears: u64 = shapes::linears(cfg).iter().map(|l| l.rows * l.cols * l.count).sum();
    linears + shapes::small_parameters(cfg) + shapes::embedding_parameters(cfg)
}

/// Cache bytes per token per layer: MLA's parts, and MHA / GQA-8 of the same shape in the same
/// element width (2 x kv_heads x head_dim x elem: K and V).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvFootprint {
    pub dtype: KvCacheDtype,
    pub c_kv: usize,
    pub k_pe: usize,
    pub scales: usize,
    /// What the cache stores: c_kv + scales + k_pe.
    pub stored: usize,
    pub mha: usize,
    pub gqa8: usize,
}

pub fn kv_footprint(cfg: &ModelConfig, dtype: KvCacheDtype) -> KvFootprint {
    let elem = dtype.c_kv_elem_bytes();
    let head_dim = if cfg.v_head_dim > 0 { cfg.v_head_dim } else { COMPARISON_HEAD_DIM_FALLBACK };
    KvFootprint {
        dtype,
        c_kv: cfg.kv_lora_rank * elem,
        k_pe: cfg.qk_rope_head_dim * dtype.k_pe_elem_bytes(),
        scales: dtype.scale_bytes(cfg.kv_lora_rank),
        stored: dtype.bytes_per_token_per_layer(cfg),
        mha: 2 * cfg.num_attention_heads * head_dim * elem,
        gqa8: 2 * 8.min(cfg.num_attention_heads) * head_dim * elem,
    }
}

/// `1.50 GiB (1.61 GB)`-style sizes for messages and tables.
pub fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= (1u64 << 30) as f64 {
        format!("{:.2} GiB ({:.2} GB)", b / (1u64 << 30) as f64, b / 1e9)
    } else if b >= (1u64 << 20) as f64 {
        format!("{:.2} MiB ({:.2} MB)", b / (1u64 << 20) as f64, b / 1e6)
    } else {
        format!("{bytes} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v3() -> ModelConfig {
        let v = serde_json::from_str(include_str!("../../../tests/fixtures/configs/deepseek-v3.json")).unwrap();
        ModelConfig::from_json(&v).unwrap()
    }

    #[test]
    fn v3_figures() {
        let c = v3();
        let f = kv_footprint(&c, KvCacheDtype::Bf16);
        assert_eq!((f.c_kv, f.k_pe, f.scales, f.stored, f.mha, f.gqa8), (1024, 128, 0, 1152, 65536, 4096));
        assert_eq!(kv_footprint(&c, KvCacheDtype::Fp8).stored, 656);
        assert_eq!(page_bytes(&c, KvCacheDtype::Bf16, 64), 61 * 64 * 1152);
        // DeepSeek-V3: 671 B parameters without the 14 B MTP module (685 B on the hub).
        let p = parameters_from_config(&c) as f64;
        assert!((p / 671e9 - 1.0).abs() < 0.005, "{p}");
        // FP8 linears: V3's 671 B parameters take ~0.67 TB instead of 1.34 TB (the hub's 689 GB
        // less its ~15 GB MTP module): 1 byte per linear weight, bf16 for the ~3 B others.
        let w = WeightCount { parameters: p as u64, source: WeightSource::ConfigShapes };
        let (fp8_params, fp8_bytes) = fp8_linears(&c);
        assert!(fp8_params as f64 / p > 0.98, "{fp8_params}");
        assert!(fp8_bytes > fp8_params && (fp8_bytes as f64) < fp8_params as f64 * 1.001);
        let gib = w.gpu_bytes(&c, true) as f64 / 1e9;
        assert!((670.0..680.0).contains(&gib), "{gib}");
    }

    #[test]
    fn pools_and_budgets() {
        let c = v3();
        assert_eq!(cpu_pool_pages(&c, KvCacheDtype::Fp8, 64, Some(7), None).unwrap(), 7);
        let per = page_bytes(&c, KvCacheDtype::Fp8, 64);
        assert_eq!(cpu_pool_pages(&c, KvCacheDtype::Fp8, 64, None, Some(per * 3 + 1)).unwrap(), 3);
        assert!(cpu_pool_pages(&c, KvCacheDtype::Fp8, 64, None, Some(per - 1)).is_err());
        assert_eq!(sequences_that_fit(100, 64, 129), 33);
        let gpu = GpuPlanInputs { total_memory: 100, utilization: 0.9, weight_bytes: 50, workspace_bytes: 10 };
        assert_eq!(gpu.kv_budget().unwrap(), 30);
        let e = GpuPlanInputs { weight_bytes: 85, ..gpu }.kv_budget().unwrap_err().to_string();
        assert!(e.contains("85 B") && e.contains("90 B"), "{e}");
    }
}
