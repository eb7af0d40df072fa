//! AVX-512 inner kernels of `linear`: a tile of up to 4 weight rows against up to 2 token rows,
//! sixteen lanes per (row, token), over 32-element chunks of k.
//!
//! bf16 weights are widened in registers without shuffles: a 512-bit load holds 16 pairs
//! `(w[2j], w[2j+1])` as u32 lanes; `lane << 16` is `w[2j]` as f32 and `lane & 0xffff0000` is
//! `w[2j+1]`. The activations are repacked once per call to match (`pack_pairs`: each 32-chunk
//! as its 16 even then its 16 odd elements), so every product is the exact bf16 x f32 product
//! and the sums are f32, as in the other kernels. Each (row, token) has two accumulators (even
//! and odd halves of each chunk) reduced the same way whatever the tile shape, so a token's
//! result never depends on what it was batched with.

#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

/// Elements of k per step.
pub const CHUNK: usize = 32;

/// `k` rounded up to whole chunks: the stride of the packed activations.
pub fn padded(k: usize) -> usize {
    k.next_multiple_of(CHUNK)
}

/// `t` rows of `x` (stride `k`) in the bf16 kernel's order, zero-padded to `padded(k)`.
pub fn pack_pairs(x: &[f32], t: usize, k: usize) -> Vec<f32> {
    let kp = padded(k);
    let mut out = vec![0f32; t * kp];
    for (src, dst) in x.chunks_exact(k).take(t).zip(out.chunks_exact_mut(kp)) {
        for (c, d) in src.chunks(CHUNK).zip(dst.chunks_exact_mut(CHUNK)) {
            for (i, &v) in c.iter().enumerate() {
                d[(i % 2) * 16 + i / 2] = v;
            }
        }
    }
    out
}

/// `t` rows of `x` (stride `k`) zero-padded to `padded(k)` (the f32 kernel's order).
pub fn pack_flat(x: &[f32], t: usize, k: usize) -> Vec<f32> {
    let kp = padded(k);
    let mut out = vec![0f32; t * kp];
    for (src, dst) in x.chunks_exact(k).take(t).zip(out.chunks_exact_mut(kp)) {
        dst[..k].copy_from_slice(src);
    }
    out
}

/// Weight element types with an AVX-512 chunk loader.
pub trait Chunk: Copy {
    /// Elements `c..c+32` of the row at `p` as (first, second) 16-lane halves in the order the
    /// matching packed activations use; lanes at or past `n` (0 < n <= 32) read as zero.
    unsafe fn load(p: *const Self, n: usize) -> (__m512, __m512);
}

impl Chunk for u16 {
    #[inline(always)]
    unsafe fn load(p: *const u16, n: usize) -> (__m512, __m512) {
        // SAFETY: the caller guarantees `n` readable elements at `p`; masked lanes are not read.
        unsafe {
            let v = if n >= CHUNK { _mm512_loadu_si512(p.cast()) } else { _mm512_maskz_loadu_epi16(low_mask32(n), p.cast()) };
            let even = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
            let odd = _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32(0xffff0000u32 as i32)));
            (even, odd)
        }
    }
}

impl Chunk for f32 {
    #[inline(always)]
    unsafe fn load(p: *const f32, n: usize) -> (__m512, __m512) {
        // SAFETY: the caller guarantees `n` readable elements at `p`; masked lanes are not read.
        unsafe {
            if n >= CHUNK {
                (_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16)))
            } else {
                let lo = low_mask32(n) as u16;
                let hi = (low_mask32(n) >> 16) as u16;
                (_mm512_maskz_loadu_ps(lo, p), _mm512_maskz_loadu_ps(hi, p.add(16)))
            }
        }
    }
}

#[inline(always)]
fn low_mask32(n: usize) -> u32 {
    if n >= 32 {
        u32::MAX
    } else {
        (1u32 << n) - 1
    }
}

/// How far ahead of each row's loads the kernel prefetches, into L1 and, further ahead, toward
/// the core (decode streams every weight once, so the loads otherwise wait on memory; rows are
/// contiguous, so this runs into later rows). One core's streaming rate is bound by the misses
/// it keeps in flight: on the 2-core Sapphire Rapids VM, 4 KiB + 16 KiB decode 8-24% faster than
/// 1 KiB alone (examples/bench/README.md).
const PREFETCH_NEAR_BYTES: usize = 4096;
const PREFETCH_FAR_BYTES: usize = 16384;

/// `out[r][t] = w[r] · x[t]`: `R` weight rows (stride `k`) against `T` packed activation rows
/// (stride `padded(k)`).
#[inline(always)]
unsafe fn tile<W: Chunk, const R: usize, const T: usize>(xp: &[f32], w: &[W], k: usize, out: &mut [[f32; T]; R]) {
    let kp = padded(k);
    assert!(xp.len() >= T * kp && w.len() >= (R - 1) * k + k, "tile operands are too short");
    // SAFETY: weight reads stay inside w[..R*k] (chunk loads are masked at the row's end),
    // activation reads inside xp[..T*kp]; the caller runs with AVX-512 F/BW enabled.
    unsafe {
        let mut ae = [[_mm512_setzero_ps(); T]; R];
        let mut ao = [[_mm512_setzero_ps(); T]; R];
        let mut c = 0;
        while c < k {
            let n = k - c;
            let mut we = [_mm512_setzero_ps(); R];
            let mut wo = [_mm512_setzero_ps(); R];
            for r in 0..R {
                let p = w.as_ptr().add(r * k + c);
                // A prefetch never faults, so running past the matrix's end is harmless.
                _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>().wrapping_add(PREFETCH_NEAR_BYTES));
                _mm_prefetch::<_MM_HINT_T2>(p.cast::<i8>().wrapping_add(PREFETCH_FAR_BYTES));
                (we[r], wo[r]) = W::load(p, n);
            }
            for t in 0..T {
                let xe = _mm512_loadu_ps(xp.as_ptr().add(t * kp + c));
                let xo = _mm512_loadu_ps(xp.as_ptr().add(t * kp + c + 16));
                for r in 0..R {
                    ae[r][t] = _mm512_fmadd_ps(xe, we[r], ae[r][t]);
                    ao[r][t] = _mm512_fmadd_ps(xo, wo[r], ao[r][t]);
                }
            }
            c += CHUNK;
        }
        for r in 0..R {
            for t in 0..T {
                out[r][t] = _mm512_reduce_add_ps(_mm512_add_ps(ae[r][t], ao[r][t]));
            }
        }
    }
}

/// Rows `rows` of `w` (stride `k`) against all `t` packed activation rows, written to
/// `out[(row - rows.start) * t + tok]`. The caller must run with AVX-512 F/BW enabled.
#[inline(always)]
pub unsafe fn block<W: Chunk>(xp: &[f32], t: usize, w: &[W], k: usize, rows: std::ops::Range<usize>, out: &mut [f32]) {
    let kp = padded(k);
    let r0 = rows.start;
    let mut r = r0;
    while r < rows.end {
        let nr = if rows.end - r >= 4 { 4 } else { 1 };
        let wr = &w[r * k..(r + nr) * k];
        let mut tok = 0;
        while tok < t {
            let nt = if t - tok >= 2 { 2 } else { 1 };
            let xt = &xp[tok * kp..(tok + nt) * kp];
            let base = (r - r0) * t + tok;
            // SAFETY: the caller runs with AVX-512 enabled; operand lengths are checked inside.
            unsafe {
                match (nr, nt) {
                    (4, 2) => {
                        let mut o = [[0f32; 2]; 4];
                        tile::<W, 4, 2>(xt, wr, k, &mut o);
                        for (rr, v) in o.iter().enumerate() {
                            out[base + rr * t..][..2].copy_from_slice(v);
                        }
                    }
                    (4, _) => {
                        let mut o = [[0f32; 1]; 4];
                        tile::<W, 4, 1>(xt, wr, k, &mut o);
                        for (rr, v) in o.iter().enumerate() {
                            out[base + rr * t] = v[0];
                        }
                    }
                    (_, 2) => {
                        let mut o = [[0f32; 2]; 1];
                        tile::<W, 1, 2>(xt, wr, k, &mut o);
                        out[base..][..2].copy_from_slice(&o[0]);
                    }
                    _ => {
                        let mut o = [[0f32; 1]; 1];
                        tile::<W, 1, 1>(xt, wr, k, &mut o);
                        out[base] = o[0][0];
                    }
                }
            }
            tok += nt;
        }
        r += nr;
    }
}

/// bf16 rows; see `block`.
#[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
pub unsafe fn rows_bf16(xp: &[f32], t: usize, w: &[u16], k: usize, rows: std::ops::Range<usize>, out: &mut [f32]) {
    // SAFETY: this function's own target features are the ones `block` needs.
    unsafe { block::<u16>(xp, t, w, k, rows, out) }
}

/// f32 rows; see `block`.
#[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
pub unsafe fn rows_f32(xp: &[f32], t: usize, w: &[f32], k: usize, rows: std::ops::Range<usize>, out: &mut [f32]) {
    // SAFETY: this function's own target features are the ones `block` needs.
    unsafe { block::<f32>(xp, t, w, k, rows, out) }
}
