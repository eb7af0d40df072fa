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

/// For each output row r: `x[src] += delta[src]` (when given), `out[r] = rmsnorm(x[src]) * weight`
/// with src = rows[r] (or r). `out_f32` optionally receives the f32 values too.
#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_residual(
    k: &Kernels,
    x: View,
    delta: Option<View>,
    weight: View,
    out: View,
    out_f32: Option<View>,
    rows: Option<(View, usize)>,
    n_rows: usize,
    dim: usize,
    eps: f32,
) -> Result<()> {
    const K: &str = "rmsnorm_residual";
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
    k.launch(K, (n_rows as u32, 1, 1), 256, 0, &[
        Arg::Ptr(x), Arg::Ptr(delta), Arg::Ptr(weight), Arg::Ptr(out), Arg::Ptr(out_f32), Arg::Ptr(rows),
        Arg::I32(dim as i32), Arg::F32(eps),
    ])
}

/// Rotates each head's rope part of `q` ([T, heads, q_stride] bf16, rope part at `rope_offset`)
/// into `out[t, h, out_offset ..]` ([T, heads, out_stride] bf16).
#[allow(clippy::too_many_arguments)]
pub fn rope_query(
    k: &Kernels,
    q: View,
    out: View,
    pos: View,
    rope: RopeArgs,
    tokens: usize,
    heads: usize,
    q_stride: usize,
    rope_offset: usize,
    out_stride: usize,
    out_offset: usize,
) -> Result<()> {
    const K: &str = "rope_query";
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
    k.launch(K, (tokens as u32, 1, 1), 128, 0, &args)
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

/// Normalizes c_kv, rotates k_pe and stores both at `slots[t]` of one layer's cache.
#[allow(clippy::too_many_arguments)]
pub fn latent_cache_write(
    k: &Kernels,
    kv: View,
    norm_w: View,
    pos: View,
    slots: View,
    rope: RopeArgs,
    cache: View,
    cache_slots: usize,
    tokens: usize,
    kv_lora: usize,
    eps: f32,
    fp8: bool,
) -> Result<()> {
    const K: &str = "latent_cache_write";
    let d = kv_lora + rope.rope_dim;
    ensure(K, d <= 1024 && kv_lora <= 2048, || format!("latent width {d} is over the kernel's 1024"))?;
    let args = [
        Arg::Ptr(kv.need(K, "kv", tokens * d * 4)?),
        Arg::Ptr(norm_w.need(K, "norm weight", kv_lora * 4)?),
        Arg::Ptr(pos.need(K, "positions", tokens * 4)?),
        Arg::Ptr(slots.need(K, "slots", tokens * 8)?),
        Arg::Ptr(rope.inv_freq.need(K, "inv_freq", rope.rope_dim / 2 * 4)?),
        Arg::F32(rope.attention_factor),
        Arg::Ptr(cache.need(K, "cache", cache_slots * cache_entry_bytes(kv_lora, rope.rope_dim, fp8))?),
        Arg::I32(kv_lora as i32),
        Arg::I32(rope.rope_dim as i32),
        Arg::I32(rope.interleaved as i32),
        Arg::F32(eps),
        Arg::I32(fp8 as i32),
    ];
    k.launch(K, (tokens as u32, 1, 1), 128, 0, &args)
}

/// `out[r] = silu(gate_up[r, :inter]) * gate_up[r, inter:]`, bf16.
pub fn silu_mul(k: &Kernels, gate_up: View, out: View, rows: usize, inter: usize) -> Result<()> {
    const K: &str = "silu_mul";
    let n = rows * inter;
    let blocks = n.div_ceil(256).clamp(1, 65535) as u32;
    k.launch(K, (blocks, 1, 1), 256, 0, &[
        Arg::Ptr(gate_up.need(K, "gate_up", 2 * n * 2)?),
        Arg::Ptr(out.need(K, "out", n * 2)?),
        Arg::I32(rows as i32),
        Arg::I32(inter as i32),
    ])
}

/// `x[t] = table[tokens[t]]` widened to f32 (token ids were validated against the vocabulary).
pub fn embedding(k: &Kernels, tokens: View, table: View, vocab: usize, x: View, n: usize, dim: usize) -> Result<()> {
    const K: &str = "embedding";
    k.launch(K, (n as u32, 1, 1), 256, 0, &[
        Arg::Ptr(tokens.need(K, "tokens", n * 4)?),
        Arg::Ptr(table.need(K, "table", vocab * dim * 2)?),
        Arg::Ptr(x.need(K, "x", n * dim * 4)?),
        Arg::I32(dim as i32),
    ])
}
