//! Launchers of absorb.cu: the absorbed attention's per-head projections for a few tokens
//! (`W_UK` with the query's rope, and `W_UV`), each one launch in the step's programmatic chain
//! instead of a cuBLAS batched GEMM.

use super::layers::{CacheWrite, RopeArgs};
use super::{ensure, View};
use crate::module::{Arg, Kernels};
use crate::Result;

/// Tokens up to which the kernels run (absorb.cu ABSORB_TOKENS).
pub const MAX_TOKENS: usize = 16;
const QUERY_COLS: usize = 64;
const MAX_NOPE: usize = 128;
const VALUE_COLS: usize = 16;
const MAX_LATENT: usize = 512;

/// The absorbed-attention widths of one layer's `kv_b` ([heads, nope + vd, kv_lora] bf16).
#[derive(Debug, Clone, Copy)]
pub struct Heads {
    pub tokens: usize,
    pub heads: usize,
    pub nope: usize,
    pub vd: usize,
    pub kv_lora: usize,
}

impl Heads {
    /// Whether the kernels take these widths (else the forward pass keeps cuBLAS): at most 16
    /// tokens, the latent width a multiple of 64 up to 512, the nope width up to 128 (every DeepSeek model's).
    pub fn fits(&self) -> bool {
        self.tokens > 0 && self.tokens <= MAX_TOKENS && self.kv_lora > 0 && self.kv_lora % QUERY_COLS == 0 && self.kv_lora <= MAX_LATENT && self.nope <= MAX_NOPE && self.nope > 0 && self.vd > 0
    }

    fn kv_b_bytes(&self) -> usize {
        self.heads * (self.nope + self.vd) * self.kv_lora * 2
    }

    fn check(&self, kernel: &'static str) -> Result<()> {
        ensure(kernel, self.fits(), || format!("{} tokens, latent {}, nope {}, v {}: at most {MAX_TOKENS} tokens, latent a multiple of {QUERY_COLS} up to {MAX_LATENT}, nope up to {MAX_NOPE}", self.tokens, self.kv_lora, self.nope, self.vd))
    }
}

/// `out[t, h, :kv_lora] = q[t, h, :nope] · W_UK[h]` and `out[t, h, kv_lora ..]` the rotated rope
/// part of `q[t, h, nope ..]`: `q` is `[tokens, heads, nope + rope]`, `out` `[tokens, heads,
/// kv_lora + rope]`, both bf16; `pos` each token's position (i32). With `cache`, the same launch
/// also writes the tokens' latents into the layer's cache, as `layers::latent_cache_write` does
/// (same tokens, positions, rope and latent width).
#[allow(clippy::too_many_arguments)]
pub fn query(k: &Kernels, s: Heads, q: View, kv_b: View, out: View, pos: View, rope: RopeArgs, cache: Option<CacheWrite>) -> Result<()> {
    const K: &str = "absorb_query";
    s.check(K)?;
    ensure(K, rope.rope_dim % 2 == 0, || format!("rope width {}", rope.rope_dim))?;
    ensure(K, kv_b.ptr % 16 == 0, || "kv_b must be 16-byte aligned".into())?;
    let (qk, d) = (s.nope + rope.rope_dim, s.kv_lora + rope.rope_dim);
    let write = match cache {
        Some(cw) => {
            let same = cw.tokens == s.tokens && cw.kv_lora == s.kv_lora && cw.pos.ptr == pos.ptr && cw.rope.rope_dim == rope.rope_dim
                && cw.rope.inv_freq.ptr == rope.inv_freq.ptr && cw.rope.interleaved == rope.interleaved && cw.rope.attention_factor == rope.attention_factor;
            ensure(K, same, || "the cache write must share the query's tokens, positions, rope and latent width".into())?;
            let [kv, norm_w, _, slots, _, cache_ptr] = cw.pointers(K)?;
            [Arg::Ptr(kv), Arg::Ptr(norm_w), Arg::Ptr(slots), Arg::Ptr(cache_ptr), Arg::F32(cw.eps), Arg::I32(cw.fp8 as i32)]
        }
        None => [Arg::Ptr(0), Arg::Ptr(0), Arg::Ptr(0), Arg::Ptr(0), Arg::F32(0.0), Arg::I32(0)],
    };
    let rows = (s.kv_lora / QUERY_COLS + usize::from(cache.is_some())) as u32;
    let mut args = vec![
        Arg::Ptr(q.need(K, "q", s.tokens * s.heads * qk * 2)?),
        Arg::Ptr(kv_b.need(K, "kv_b", s.kv_b_bytes())?),
        Arg::Ptr(out.need(K, "out", s.tokens * s.heads * d * 2)?),
        Arg::Ptr(pos.need(K, "positions", s.tokens * 4)?),
        Arg::Ptr(rope.inv_freq.need(K, "inv_freq", rope.rope_dim / 2 * 4)?),
        Arg::F32(rope.attention_factor),
        Arg::I32(s.tokens as i32),
        Arg::I32(s.heads as i32),
        Arg::I32(s.nope as i32),
        Arg::I32(s.vd as i32),
        Arg::I32(s.kv_lora as i32),
        Arg::I32(rope.rope_dim as i32),
        Arg::I32(rope.interleaved as i32),
    ];
    args.extend(write);
    k.launch_step(K, (s.heads as u32, rows, 1), 128, 0, &args)
}

/// `out[t, h, :vd] = o[t, h, :kv_lora] · W_UV[h]^T`: `o` is `[tokens, heads, kv_lora]`, `out`
/// `[tokens, heads, vd]`, both bf16.
pub fn value(k: &Kernels, s: Heads, o: View, kv_b: View, out: View) -> Result<()> {
    const K: &str = "absorb_value";
    s.check(K)?;
    ensure(K, kv_b.ptr % 16 == 0 && o.ptr % 16 == 0, || "kv_b and o must be 16-byte aligned".into())?;
    k.launch_step(K, (s.heads as u32, s.vd.div_ceil(VALUE_COLS) as u32, 1), 128, 0, &[
        Arg::Ptr(o.need(K, "o", s.tokens * s.heads * s.kv_lora * 2)?),
        Arg::Ptr(kv_b.need(K, "kv_b", s.kv_b_bytes())?),
        Arg::Ptr(out.need(K, "out", s.tokens * s.heads * s.vd * 2)?),
        Arg::I32(s.tokens as i32),
        Arg::I32(s.heads as i32),
        Arg::I32(s.nope as i32),
        Arg::I32(s.vd as i32),
        Arg::I32(s.kv_lora as i32),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn define(name: &str) -> usize {
        crate::sources::ABSORB.define(name)
    }

    #[test]
    fn limits_match_the_kernel_source() {
        assert_eq!(MAX_TOKENS, define("ABSORB_TOKENS"));
        assert_eq!(QUERY_COLS, define("AQ_COLS"));
        assert_eq!(MAX_NOPE, define("AQ_MAX_NOPE"));
        assert_eq!(VALUE_COLS, define("AV_COLS"));
        assert_eq!(MAX_LATENT, define("AV_MAX_K"));
    }

    #[test]
    fn the_deepseek_widths_fit_and_wide_batches_do_not() {
        let s = Heads { tokens: 16, heads: 128, nope: 128, vd: 128, kv_lora: 512 };
        assert!(s.fits());
        assert!(!Heads { tokens: 17, ..s }.fits());
        assert!(!Heads { kv_lora: 576, ..s }.fits());
        assert!(!Heads { tokens: 0, ..s }.fits());
    }
}
