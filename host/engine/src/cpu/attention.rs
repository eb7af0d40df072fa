//! Multi-head latent attention on the CPU. New tokens' latents go into the paged cache first;
//! attention then reads every context token from the cache, so a prefix computed in an earlier
//! step and one computed now look the same.

use super::kv_cache::LatentCache;
use super::ops::{axpy_row, dot_row, linear, rms_norm, rms_norm_rows, softmax};
use super::kernels::{axpy_f32, dot_f32};
use crate::batch::SeqChunk;
use crate::config::ModelConfig;
use crate::rope::Rope;
use crate::weights::{AttentionWeights, QueryProj};
use rayon::prelude::*;

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
}

impl Attention<'_> {
    /// `x`: `[T, hidden]` after the input norm. Returns `[T, hidden]`.
    pub fn forward(&self, layer: usize, w: &AttentionWeights, x: &[f32], cache: &mut LatentCache) -> Vec<f32> {
        let cfg = self.cfg;
        let t = self.slots.len();
        let (heads, qk, nope) = (cfg.num_attention_heads, cfg.qk_head_dim(), cfg.qk_nope_head_dim);
        let mut q = match &w.q {
            QueryProj::Direct(m) => linear(x, t, m),
            QueryProj::LowRank { a, norm, b } => {
                let mut qa = linear(x, t, a);
                rms_norm_rows(&mut qa, norm, LATENT_NORM_EPS);
                linear(&qa, t, b)
            }
        };
        for (tok, row) in q.chunks_mut(heads * qk).enumerate() {
            for head in row.chunks_mut(qk) {
                self.rope.apply(&mut head[nope..], self.slots[tok].pos);
            }
        }
        let mut kv = linear(x, t, &w.kv_a);
        for (tok, row) in kv.chunks_mut(cfg.latent_dim()).enumerate() {
            let (c_kv, k_pe) = row.split_at_mut(cfg.kv_lora_rank);
            rms_norm(c_kv, &w.kv_a_norm, LATENT_NORM_EPS);
            let slot = self.slots[tok];
            self.rope.apply(k_pe, slot.pos);
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
        linear(&out, t, &w.o)
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
    fn absorbed(&self, layer: usize, w: &AttentionWeights, chunk: &SeqChunk, q: &[f32], cache: &LatentCache, out: &mut [f32]) {
        let cfg = self.cfg;
        let (heads, qk, nope, v, r) =
            (cfg.num_attention_heads, cfg.qk_head_dim(), cfg.qk_nope_head_dim, cfg.v_head_dim, cfg.kv_lora_rank);
        let scale = cfg.softmax_scale();
        let context = cache.context(layer, chunk.block_table, chunk.start_pos + chunk.tokens.len());
        out.par_chunks_mut(v).enumerate().for_each(|(i, o)| {
            let (tok, head) = (i / heads, i % heads);
            let qh = &q[tok * heads * qk + head * qk..][..qk];
            let (q_nope, q_pe) = qh.split_at(nope);
            let row0 = head * (nope + v);
            let mut q_lat = vec![0f32; r];
            for (d, &qd) in q_nope.iter().enumerate() {
                axpy_row(&w.kv_b, row0 + d, qd, &mut q_lat);
            }
            let pos = chunk.start_pos + tok;
            let mut scores: Vec<f32> = (0..=pos)
                .map(|j| {
                    let lat = context.row(j);
                    (dot_f32(&q_lat, &lat[..r]) + dot_f32(q_pe, &lat[r..])) * scale
                })
                .collect();
            softmax(&mut scores);
            let mut o_lat = vec![0f32; r];
            for (j, &p) in scores.iter().enumerate() {
                axpy_f32(p, &context.row(j)[..r], &mut o_lat);
            }
            for (k, ok) in o.iter_mut().enumerate() {
                *ok = dot_row(&w.kv_b, row0 + nope + k, &o_lat);
            }
        });
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
            latents.extend_from_slice(&lat[..r]);
            k_pe.extend_from_slice(&lat[r..]);
        }
        let expanded = linear(&latents, ctx, &w.kv_b); // [ctx, heads * (nope + v)]
        let stride = heads * (nope + v);
        let rope = cfg.qk_rope_head_dim;
        out.par_chunks_mut(v).enumerate().for_each(|(i, o)| {
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
