//! Multi-head latent attention on the CPU. New tokens' latents go into the paged cache first;
//! attention then reads every context token from the cache, so a prefix computed in an earlier
//! step and one computed now look the same.

use super::kv_cache::LatentCache;
use super::rope_at::RopeAt;
use super::ops::{fp8_input, linear, linear_many, rms_norm, rms_norm_rows, softmax, Fp8Inputs, Lin};
use super::kernels::{axpy_f32, dot_f32};
use crate::batch::SeqChunk;
use crate::config::ModelConfig;
use crate::rope::Rope;
use crate::tensor::{Matrix, Storage};
use crate::weights::{AttentionWeights, QueryProj};

/// q_a_layernorm and kv_a_layernorm are built with the default eps in DeepSeek's reference
/// code and in transformers, whatever `rms_norm_eps` says.
const LATENT_NORM_EPS: f32 = 1e-6;

/// Which algebraic form computes attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttentionMode {
    /// The cheaper form per sequence chunk, from its length and context.
    #[default]
    Auto,
    /// Fold W_UK into the query and W_UV after the weighted sum: reads only the latent cache.
    Absorbed,
    /// Expand per-head keys and values from the cached latents, then ordinary attention.
    Unabsorbed,
}

/// Where each flattened token of the batch comes from.
#[derive(Debug, Clone, Copy)]
pub struct TokenSlot {
    pub seq: usize,
    pub pos: usize,
}

pub struct Attention<'a> {
    pub cfg: &'a ModelConfig,
    pub rope: &'a Rope,
    pub mode: AttentionMode,
    pub chunks: &'a [SeqChunk<'a>],
    /// Per chunk, the index of its first token in the flattened batch.
    pub chunk_offsets: &'a [usize],
    pub slots: &'a [TokenSlot],
    /// Per layer, `uk_transposed` of its `kv_b_proj`.
    pub uk_t: &'a [Matrix],
    /// Round the inputs of the FP8-on-GPU projections as the GPU does (`ops::fp8_input`).
    pub fp8_activations: Fp8Inputs,
}

/// Per head `W_UK^T` (`[kv_lora, nope]`, heads stacked): the absorbed query `q_lat = W_UK^T
/// q_nope` as an ordinary row-major GEMM, repacked once at load from `kv_b_proj` (same dtype,
/// exact).
pub fn uk_transposed(kv_b: &Matrix, heads: usize, nope: usize, v: usize) -> Matrix {
    let r = kv_b.cols;
    let src = |h: usize, d: usize| (h * (nope + v) + d) * r;
    let data = match &kv_b.data {
        Storage::F32(s) => Storage::F32(transpose_heads(s, heads, nope, r, src)),
        Storage::Bf16(s) => Storage::Bf16(transpose_heads(s, heads, nope, r, src)),
        Storage::Fp8(_) => return uk_transposed(&kv_b.widened(), heads, nope, v),
    };
    Matrix { rows: heads * r, cols: nope, data }
}

fn transpose_heads<T: Copy + Default>(s: &[T], heads: usize, nope: usize, r: usize, src: impl Fn(usize, usize) -> usize) -> Vec<T> {
    let mut out = vec![T::default(); heads * r * nope];
    for h in 0..heads {
        for d in 0..nope {
            let row = &s[src(h, d)..src(h, d) + r];
            for (c, &x) in row.iter().enumerate() {
                out[(h * r + c) * nope + d] = x;
            }
        }
    }
    out
}

impl Attention<'_> {
    /// `x`: `[T, hidden]` after the input norm. Returns `[T, hidden]`.
    pub fn forward(&self, layer: usize, w: &AttentionWeights, x: &[f32], cache: &mut LatentCache) -> Vec<f32> {
        let cfg = self.cfg;
        let t = self.slots.len();
        let (heads, qk, nope) = (cfg.num_attention_heads, cfg.qk_head_dim(), cfg.qk_nope_head_dim);
        // The query's first projection and kv_a read the same x: one parallel op for both.
        let first = match &w.q {
            QueryProj::Direct(m) => m,
            QueryProj::LowRank { a, .. } => a,
        };
        let fp8 = self.fp8_activations;
        let (xq, xkv) = (fp8_input(fp8, x, first), fp8_input(fp8, x, &w.kv_a));
        let mut both = linear_many(&[Lin::new(first, &xq, t), Lin::new(&w.kv_a, &xkv, t)]);
        let mut kv = both.pop().unwrap_or_default();
        let mut q = both.pop().unwrap_or_default();
        if let QueryProj::LowRank { norm, b, .. } = &w.q {
            rms_norm_rows(&mut q, norm, LATENT_NORM_EPS);
            q = linear(&fp8_input(fp8, &q, b), t, b);
        }
        for ((tok, row), kv_row) in q.chunks_mut(heads * qk).enumerate().zip(kv.chunks_mut(cfg.latent_dim())) {
            let slot = self.slots[tok];
            let rope = RopeAt::new(self.rope, slot.pos);
            for head in row.chunks_mut(qk) {
                rope.apply(&mut head[nope..]);
            }
            let (c_kv, k_pe) = kv_row.split_at_mut(cfg.kv_lora_rank);
            rms_norm(c_kv, &w.kv_a_norm, LATENT_NORM_EPS);
            rope.apply(k_pe);
            let row = &*kv_row;
            cache.write(layer, self.chunks[slot.seq].block_table, slot.pos, row);
        }
        let cache = &*cache;
        let mut out = vec![0f32; t * heads * cfg.v_head_dim];
        for (i, chunk) in self.chunks.iter().enumerate() {
            let first = self.chunk_offsets[i];
            let rows = &mut out[first * heads * cfg.v_head_dim..(first + chunk.tokens.len()) * heads * cfg.v_head_dim];
            let q_rows = &q[first * heads * qk..(first + chunk.tokens.len()) * heads * qk];
            if self.use_absorbed(chunk) {
                self.absorbed(layer, w, chunk, q_rows, cache, rows);
            } else {
                self.unabsorbed(layer, w, chunk, q_rows, cache, rows);
            }
        }
        linear(&fp8_input(self.fp8_activations, &out, &w.o), t, &w.o)
    }

    fn use_absorbed(&self, chunk: &SeqChunk) -> bool {
        match self.mode {
            AttentionMode::Absorbed => true,
            AttentionMode::Unabsorbed => false,
            AttentionMode::Auto => {
                let cfg = self.cfg;
                let (l, ctx) = (chunk.tokens.len(), chunk.start_pos + chunk.tokens.len());
                let per_head_expand = (cfg.qk_nope_head_dim + cfg.v_head_dim) * cfg.kv_lora_rank;
                let absorbed = l * per_head_expand + l * ctx * 2 * cfg.latent_dim();
                let unabsorbed = ctx * per_head_expand + l * ctx * (cfg.qk_head_dim() + cfg.v_head_dim);
                absorbed <= unabsorbed
            }
        }
    }

    /// score = q_lat · c_kv + q_pe · k_pe with q_lat = W_UK^T q_nope; out = W_UV (Σ p c_kv).
    /// Three parallel ops: every head's q_lat (a GEMM against the head's W_UK^T, repacked at
    /// load), the attention over the latents per (head, token), every head's W_UV product.
    fn absorbed(&self, layer: usize, w: &AttentionWeights, chunk: &SeqChunk, q: &[f32], cache: &LatentCache, out: &mut [f32]) {
        let cfg = self.cfg;
        let (heads, qk, nope, v, r) =
            (cfg.num_attention_heads, cfg.qk_head_dim(), cfg.qk_nope_head_dim, cfg.v_head_dim, cfg.kv_lora_rank);
        let (l, uk_t) = (chunk.tokens.len(), &self.uk_t[layer]);
        let scale = cfg.softmax_scale();
        let q_nope: Vec<Vec<f32>> =
            (0..heads).map(|h| (0..l).flat_map(|tok| &q[tok * heads * qk + h * qk..][..nope]).copied().collect()).collect();
        let q_lat = linear_many(&(0..heads).map(|h| Lin::rows(uk_t, h * r..(h + 1) * r, &q_nope[h], l)).collect::<Vec<_>>());
        let context = cache.context(layer, chunk.block_table, chunk.start_pos + l);
        // [head][token][r]
        let mut o_lat = vec![0f32; heads * l * r];
        super::pool::for_each_chunk(&mut o_lat, r, &|i, o| {
            let (head, tok) = (i / l, i % l);
            // The cached row is [c_kv | k_pe]: one dot against [q_lat | q_pe], pre-scaled.
            let q_pe = &q[tok * heads * qk + head * qk + nope..][..qk - nope];
            let ql = &q_lat[head][tok * r..(tok + 1) * r];
            let query: Vec<f32> = ql.iter().chain(q_pe).map(|&x| x * scale).collect();
            let mut scores = vec![0f32; chunk.start_pos + tok + 1];
            context.dots(&query, &mut scores);
            softmax(&mut scores);
            context.weighted_sum(&scores, o);
        });
        let uv = |h: usize| h * (nope + v) + nope..h * (nope + v) + nope + v;
        let ys = linear_many(&(0..heads).map(|h| Lin::rows(&w.kv_b, uv(h), &o_lat[h * l * r..(h + 1) * l * r], l)).collect::<Vec<_>>());
        for (h, y) in ys.iter().enumerate() {
            for tok in 0..l {
                out[(tok * heads + h) * v..][..v].copy_from_slice(&y[tok * v..(tok + 1) * v]);
            }
        }
    }

    /// Expand k_nope and v for the whole context, then attend per head with head dim nope+rope.
    fn unabsorbed(&self, layer: usize, w: &AttentionWeights, chunk: &SeqChunk, q: &[f32], cache: &LatentCache, out: &mut [f32]) {
        let cfg = self.cfg;
        let (heads, qk, nope, v, r) =
            (cfg.num_attention_heads, cfg.qk_head_dim(), cfg.qk_nope_head_dim, cfg.v_head_dim, cfg.kv_lora_rank);
        let scale = cfg.softmax_scale();
        let ctx = chunk.start_pos + chunk.tokens.len();
        let mut latents = Vec::with_capacity(ctx * r);
        let mut k_pe = Vec::with_capacity(ctx * cfg.qk_rope_head_dim);
        let context = cache.context(layer, chunk.block_table, ctx);
        for j in 0..ctx {
            let lat = context.row(j);
            lat.slice(0..r).to_f32(&mut latents);
            lat.slice(r..cfg.latent_dim()).to_f32(&mut k_pe);
        }
        let expanded = linear(&latents, ctx, &w.kv_b); // [ctx, heads * (nope + v)]
        let stride = heads * (nope + v);
        let rope = cfg.qk_rope_head_dim;
        super::pool::for_each_chunk(out, v, &|i, o| {
            let (tok, head) = (i / heads, i % heads);
            let qh = &q[tok * heads * qk + head * qk..][..qk];
            let (q_nope, q_pe) = qh.split_at(nope);
            let pos = chunk.start_pos + tok;
            let mut scores: Vec<f32> = (0..=pos)
                .map(|j| {
                    let k_nope = &expanded[j * stride + head * (nope + v)..][..nope];
                    (dot_f32(q_nope, k_nope) + dot_f32(q_pe, &k_pe[j * rope..(j + 1) * rope])) * scale
                })
                .collect();
            softmax(&mut scores);
            for (j, &p) in scores.iter().enumerate() {
                axpy_f32(p, &expanded[j * stride + head * (nope + v) + nope..][..v], o);
            }
        });
    }
}
