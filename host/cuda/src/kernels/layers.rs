//! Launchers for the per-layer elementwise families: RMSNorm (+ residual), RoPE on queries,
//! the latent cache write, SiLU-and-mul, and the embedding lookup.

use super::{ensure, View};
use crate::module::{Arg, Kernels};
use crate::Result;

/// Rotary-embedding constants shared by the query and cache-write kernels (device inv_freq).
#[derive(Debug, Clone, Copy)]
pub struct RopeArgs {
    pub inv_freq: View,
    pub attention_factor: f32,
    pub rope_dim: usize,
    pub interleaved: bool,
}

/// `rmsnorm_residual`'s operands: for each output row r, `x[src] += delta[src]` (when given),
/// `out[r] = rmsnorm(x[src]) * weight` (bf16) with src = rows[r] (or r); `out_f32` optionally
/// receives the f32 values too.
#[derive(Debug, Clone, Copy)]
pub struct RmsNorm {
    /// f32 `[rows, dim]` (the residual stream when `delta` is given).
    pub x: View,
    pub delta: Option<View>,
    pub weight: View,
    pub out: View,
    pub out_f32: Option<View>,
    /// Gathered source rows (device i32) and how many rows `x` has.
    pub rows: Option<(View, usize)>,
    pub n_rows: usize,
    pub dim: usize,
    pub eps: f32,
}

impl RmsNorm {
    /// `out[r] = rmsnorm(x[r]) * weight` for `n_rows` rows, nothing else.
    pub fn rows(x: View, weight: View, out: View, n_rows: usize, dim: usize, eps: f32) -> Self {
        Self { x, delta: None, weight, out, out_f32: None, rows: None, n_rows, dim, eps }
    }
}

pub fn rmsnorm_residual(k: &Kernels, p: RmsNorm) -> Result<()> {
    const K: &str = "rmsnorm_residual";
    let RmsNorm { x, delta, weight, out, out_f32, rows, n_rows, dim, eps } = p;
    let src_rows = match rows {
        Some((_, total)) => total,
        None => n_rows,
    };
    let x = x.need(K, "x", src_rows * dim * 4)?;
    let delta = delta.map(|d| d.need(K, "delta", src_rows * dim * 4)).transpose()?.unwrap_or(0);
    let weight = weight.need(K, "weight", dim * 4)?;
    let out = out.need(K, "out", n_rows * dim * 2)?;
    let out_f32 = out_f32.map(|o| o.need(K, "out_f32", n_rows * dim * 4)).transpose()?.unwrap_or(0);
    let rows = rows.map(|(r, _)| r.need(K, "rows", n_rows * 4)).transpose()?.unwrap_or(0);
    k.launch_step(K, (n_rows as u32, 1, 1), 256, 0, &[
        Arg::Ptr(x), Arg::Ptr(delta), Arg::Ptr(weight), Arg::Ptr(out), Arg::Ptr(out_f32), Arg::Ptr(rows),
        Arg::I32(dim as i32), Arg::F32(eps),
    ])
}

/// `rope_query`'s operands: each head's rope part of `q` ([tokens, heads, q_stride] bf16, rope
/// part at `rope_offset`) is rotated into `out[t, h, out_offset ..]` ([tokens, heads,
/// out_stride] bf16).
#[derive(Debug, Clone, Copy)]
pub struct RopeQuery {
    pub q: View,
    pub out: View,
    /// Each token's position (device i32).
    pub pos: View,
    pub rope: RopeArgs,
    pub tokens: usize,
    pub heads: usize,
    pub q_stride: usize,
    pub rope_offset: usize,
    pub out_stride: usize,
    pub out_offset: usize,
}

pub fn rope_query(k: &Kernels, p: RopeQuery) -> Result<()> {
    const K: &str = "rope_query";
    let RopeQuery { q, out, pos, rope, tokens, heads, q_stride, rope_offset, out_stride, out_offset } = p;
    ensure(K, rope.rope_dim % 2 == 0 && rope_offset + rope.rope_dim <= q_stride && out_offset + rope.rope_dim <= out_stride, || {
        format!("rope {} at {rope_offset} does not fit strides {q_stride}/{out_stride}", rope.rope_dim)
    })?;
    let args = [
        Arg::Ptr(q.need(K, "q", tokens * heads * q_stride * 2)?),
        Arg::Ptr(out.need(K, "out", tokens * heads * out_stride * 2)?),
        Arg::Ptr(pos.need(K, "positions", tokens * 4)?),
        Arg::Ptr(rope.inv_freq.need(K, "inv_freq", rope.rope_dim / 2 * 4)?),
        Arg::F32(rope.attention_factor),
        Arg::I32(heads as i32),
        Arg::I32(q_stride as i32),
        Arg::I32(rope_offset as i32),
        Arg::I32(out_stride as i32),
        Arg::I32(out_offset as i32),
        Arg::I32(rope.rope_dim as i32),
        Arg::I32(rope.interleaved as i32),
    ];
    k.launch_step(K, (tokens as u32, 1, 1), 128, 0, &args)
}

/// Bytes of one token's cache entry per layer: bf16 `[kv_lora + rope]`, or the fp8 layout
/// `[kv_lora e4m3][ceil(kv_lora/128) f32 scales][rope bf16]`.
pub fn cache_entry_bytes(kv_lora: usize, rope: usize, fp8: bool) -> usize {
    if fp8 {
        kv_lora + kv_lora.div_ceil(128) * 4 + rope * 2
    } else {
        (kv_lora + rope) * 2
    }
}

/// `latent_cache_write`'s operands: each token's c_kv (f32 `kv[t, ..kv_lora]`) is normalized,
/// its k_pe (`kv[t, kv_lora..]`) rotated, and both stored at `slots[t]` of one layer's cache.
#[derive(Debug, Clone, Copy)]
pub struct CacheWrite {
    pub kv: View,
    pub norm_weight: View,
    /// Each token's position (device i32).
    pub pos: View,
    /// Each token's cache slot (device i64).
    pub slots: View,
    pub rope: RopeArgs,
    pub cache: View,
    /// Slots the layer's cache holds.
    pub cache_slots: usize,
    pub tokens: usize,
    pub kv_lora: usize,
    pub eps: f32,
    /// The cache stores the fp8 layout (`cache_entry_bytes`).
    pub fp8: bool,
}

impl CacheWrite {
    /// The operands checked against the kernel's limits and the buffers' sizes: the device
    /// pointers of kv, the norm weight, positions, slots, inv_freq and the cache, in that order.
    pub(crate) fn pointers(&self, kernel: &'static str) -> Result<[u64; 6]> {
        let CacheWrite { kv, norm_weight, pos, slots, rope, cache, cache_slots, tokens, kv_lora, fp8, .. } = *self;
        let d = kv_lora + rope.rope_dim;
        ensure(kernel, d <= 1024 && kv_lora <= 2048, || format!("latent width {d} is over the kernel's 1024"))?;
        Ok([
            kv.need(kernel, "kv", tokens * d * 4)?,
            norm_weight.need(kernel, "norm weight", kv_lora * 4)?,
            pos.need(kernel, "positions", tokens * 4)?,
            slots.need(kernel, "slots", tokens * 8)?,
            rope.inv_freq.need(kernel, "inv_freq", rope.rope_dim / 2 * 4)?,
            cache.need(kernel, "cache", cache_slots * cache_entry_bytes(kv_lora, rope.rope_dim, fp8))?,
        ])
    }
}

pub fn latent_cache_write(k: &Kernels, p: CacheWrite) -> Result<()> {
    const K: &str = "latent_cache_write";
    let [kv, norm_w, pos, slots, inv_freq, cache] = p.pointers(K)?;
    let args = [
        Arg::Ptr(kv),
        Arg::Ptr(norm_w),
        Arg::Ptr(pos),
        Arg::Ptr(slots),
        Arg::Ptr(inv_freq),
        Arg::F32(p.rope.attention_factor),
        Arg::Ptr(cache),
        Arg::I32(p.kv_lora as i32),
        Arg::I32(p.rope.rope_dim as i32),
        Arg::I32(p.rope.interleaved as i32),
        Arg::F32(p.eps),
        Arg::I32(p.fp8 as i32),
    ];
    k.launch_step(K, (p.tokens as u32, 1, 1), 128, 0, &args)
}

/// `out[r] = silu(gate_up[r, :inter]) * gate_up[r, inter:]`, bf16.
pub fn silu_mul(k: &Kernels, gate_up: View, out: View, rows: usize, inter: usize) -> Result<()> {
    const K: &str = "silu_mul";
    let n = rows * inter;
    let blocks = n.div_ceil(256).clamp(1, 65535) as u32;
    k.launch_step(K, (blocks, 1, 1), 256, 0, &[
        Arg::Ptr(gate_up.need(K, "gate_up", 2 * n * 2)?),
        Arg::Ptr(out.need(K, "out", n * 2)?),
        Arg::I32(rows as i32),
        Arg::I32(inter as i32),
    ])
}

/// `x[t] = table[tokens[t]]` widened to f32 (token ids were validated against the vocabulary).
pub fn embedding(k: &Kernels, tokens: View, table: View, vocab: usize, x: View, n: usize, dim: usize) -> Result<()> {
    const K: &str = "embedding";
    k.launch_step(K, (n as u32, 1, 1), 256, 0, &[
        Arg::Ptr(tokens.need(K, "tokens", n * 4)?),
        Arg::Ptr(table.need(K, "table", vocab * dim * 2)?),
        Arg::Ptr(x.need(K, "x", n * dim * 4)?),
        Arg::I32(dim as i32),
    ])
}
