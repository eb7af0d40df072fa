//! The register-tiled inner kernel of `linear`: a tile of up to 4 weight rows against up to 2
//! token rows, eight lanes per (row, token). Each (row, token) pair is accumulated the same way
//! whatever the tile shape, so a token's result never depends on what it was batched with.

use super::isa::Isa;
use super::kernels::madd;
use crate::checkpoint::bf16_to_f32;

const LANES: usize = 8;
pub const TILE_ROWS: usize = 4;
pub const TILE_TOKENS: usize = 2;

/// Weight element types the kernel reads.
pub trait WeightElem: Copy {
    fn widen(self) -> f32;
}

impl WeightElem for f32 {
    #[inline(always)]
    fn widen(self) -> f32 {
        self
    }
}

impl WeightElem for u16 {
    #[inline(always)]
    fn widen(self) -> f32 {
        bf16_to_f32(self)
    }
}

/// `out[r][t] = w[r] · x[t]` for `R` rows of `w` (stride `k`) and `T` rows of `x` (stride `k`).
#[inline(always)]
fn tile<W: WeightElem, const R: usize, const T: usize, const FMA: bool>(x: &[f32], w: &[W], k: usize, out: &mut [[f32; T]; R]) {
    let full = k - k % LANES;
    let mut acc = [[[0f32; LANES]; T]; R];
    let xs: [&[f32]; T] = std::array::from_fn(|t| &x[t * k..t * k + k]);
    let ws: [&[W]; R] = std::array::from_fn(|r| &w[r * k..r * k + k]);
    let mut c = 0;
    while c < full {
        let wv: [[f32; LANES]; R] = std::array::from_fn(|r| std::array::from_fn(|i| ws[r][c + i].widen()));
        for t in 0..T {
            let xv: [f32; LANES] = std::array::from_fn(|i| xs[t][c + i]);
            for r in 0..R {
                for i in 0..LANES {
                    acc[r][t][i] = madd::<FMA>(xv[i], wv[r][i], acc[r][t][i]);
                }
            }
        }
        c += LANES;
    }
    for r in 0..R {
        for t in 0..T {
            let mut tail = 0f32;
            for c in full..k {
                tail = madd::<FMA>(xs[t][c], ws[r][c].widen(), tail);
            }
            let a = &acc[r][t];
            // A fixed reduction tree, the same for every tile shape.
            out[r][t] = ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7])) + tail;
        }
    }
}

/// A weight type with a tile kernel: the AVX2 one when `FMA` (the caller enabled AVX2+FMA),
/// else the portable one.
pub trait Tile: WeightElem {
    fn tile<const R: usize, const T: usize, const FMA: bool>(x: &[f32], w: &[Self], k: usize, out: &mut [[f32; T]; R]);
}

macro_rules! impl_tile {
    ($ty:ty) => {
        impl Tile for $ty {
            #[inline(always)]
            fn tile<const R: usize, const T: usize, const FMA: bool>(x: &[f32], w: &[Self], k: usize, out: &mut [[f32; T]; R]) {
                #[cfg(target_arch = "x86_64")]
                if FMA {
                    // SAFETY: FMA is only true inside the `avx2,fma` entry points, which run
                    // after a run-time check of the CPU.
                    return unsafe { avx2::tile::<$ty, R, T>(x, w, k, out) };
                }
                tile::<$ty, R, T, false>(x, w, k, out)
            }
        }
    };
}

impl_tile!(u16);
impl_tile!(f32);

/// Rows `rows` of `w` against all `t` tokens of `x`, written to `out[(row - rows.start) * t + tok]`.
#[inline(always)]
fn block<W: Tile, const FMA: bool>(x: &[f32], t: usize, w: &[W], k: usize, rows: std::ops::Range<usize>, out: &mut [f32]) {
    let r0 = rows.start;
    let mut r = r0;
    while r < rows.end {
        let nr = (rows.end - r).min(TILE_ROWS);
        let wr = &w[r * k..(r + nr) * k];
        let mut tok = 0;
        while tok < t {
            let nt = (t - tok).min(TILE_TOKENS);
            let xt = &x[tok * k..(tok + nt) * k];
            let mut put = |vals: &[f32], rr: usize, tt: usize| out[(r - r0 + rr) * t + tok + tt] = vals[0];
            match (nr, nt) {
                (4, 2) => {
                    let mut o = [[0f32; 2]; 4];
                    W::tile::<4, 2, FMA>(xt, wr, k, &mut o);
                    for (rr, row) in o.iter().enumerate() {
                        for (tt, v) in row.iter().enumerate() {
                            put(&[*v], rr, tt);
                        }
                    }
                }
                (4, _) => {
                    let mut o = [[0f32; 1]; 4];
                    W::tile::<4, 1, FMA>(xt, wr, k, &mut o);
                    for (rr, row) in o.iter().enumerate() {
                        put(row, rr, 0);
                    }
                }
                (_, 2) => {
                    for rr in 0..nr {
                        let mut o = [[0f32; 2]; 1];
                        W::tile::<1, 2, FMA>(xt, &wr[rr * k..], k, &mut o);
                        put(&o[0][..1], rr, 0);
                        put(&o[0][1..], rr, 1);
                    }
                }
                _ => {
                    for rr in 0..nr {
                        let mut o = [[0f32; 1]; 1];
                        W::tile::<1, 1, FMA>(xt, &wr[rr * k..], k, &mut o);
                        put(&o[0], rr, 0);
                    }
                }
            }
            tok += nt;
        }
        r += nr;
    }
}

/// AVX2+FMA versions of `tile`, with the same per-(row, token) arithmetic order (eight lane
/// accumulators, then the same reduction tree, then the scalar tail).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{WeightElem, LANES};
    use std::arch::x86_64::*;

    pub trait Load8: WeightElem {
        /// Eight elements from `p`, widened to f32.
        unsafe fn load8(p: *const Self) -> __m256;
    }

    impl Load8 for u16 {
        #[inline(always)]
        unsafe fn load8(p: *const u16) -> __m256 {
            // SAFETY: the caller guarantees 8 readable elements at `p`.
            unsafe { _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(p.cast())), 16)) }
        }
    }

    impl Load8 for f32 {
        #[inline(always)]
        unsafe fn load8(p: *const f32) -> __m256 {
            // SAFETY: the caller guarantees 8 readable elements at `p`.
            unsafe { _mm256_loadu_ps(p) }
        }
    }

    /// ((a0+a4)+(a2+a6)) + ((a1+a5)+(a3+a7)), as the portable version.
    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        // SAFETY: register-only arithmetic; the caller runs with AVX2 enabled.
        unsafe {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let s2 = _mm_add_ps(s, _mm_movehl_ps(s, s));
            _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)))
        }
    }

    #[inline(always)]
    pub unsafe fn tile<W: Load8, const R: usize, const T: usize>(x: &[f32], w: &[W], k: usize, out: &mut [[f32; T]; R]) {
        assert!(x.len() >= T * k && w.len() >= R * k, "tile operands are too short");
        let full = k - k % LANES;
        // SAFETY: every pointer below stays inside x[..T*k] and w[..R*k] (checked above), and
        // the caller runs with AVX2 and FMA enabled.
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); T]; R];
            let mut c = 0;
            while c < full {
                let mut wv = [_mm256_setzero_ps(); R];
                for r in 0..R {
                    wv[r] = W::load8(w.as_ptr().add(r * k + c));
                }
                for t in 0..T {
                    let xv = _mm256_loadu_ps(x.as_ptr().add(t * k + c));
                    for r in 0..R {
                        acc[r][t] = _mm256_fmadd_ps(xv, wv[r], acc[r][t]);
                    }
                }
                c += LANES;
            }
            for r in 0..R {
                for t in 0..T {
                    let mut tail = 0f32;
                    for c in full..k {
                        tail = x[t * k + c].mul_add(w[r * k + c].widen(), tail);
                    }
                    out[r][t] = hsum(acc[r][t]) + tail;
                }
            }
        }
    }
}

/// Activations prepared once per `linear` call for the active kernel family (the AVX-512
/// kernels read them repacked and zero-padded; the others read `x` as it is).
pub struct Acts<'a> {
    x: &'a [f32],
    t: usize,
    k: usize,
    isa: Isa,
    packed: Vec<f32>,
}

impl<'a> Acts<'a> {
    /// `t` rows of width `k` for weights stored as bf16 (`bf16`) or f32, for `isa`.
    pub fn new(isa: Isa, x: &'a [f32], t: usize, k: usize, bf16: bool) -> Self {
        assert!(x.len() >= t * k, "activations are shorter than t * k");
        let packed = match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 if bf16 => super::gemm_avx512::pack_pairs(x, t, k),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => super::gemm_avx512::pack_flat(x, t, k),
            _ => Vec::new(),
        };
        Self { x, t, k, isa, packed }
    }
}

macro_rules! entry {
    ($name:ident, $ty:ty, $avx512:ident) => {
        /// Rows `rows` of the weight matrix (stride `a.k`) against every token of `a`, written
        /// to `out[(row - rows.start) * t + tok]`, with `a`'s kernel family.
        pub fn $name(a: &Acts<'_>, w: &[$ty], rows: std::ops::Range<usize>, out: &mut [f32]) {
            assert!(w.len() >= rows.end * a.k && out.len() >= rows.len() * a.t, "operands do not cover the rows");
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn wide(x: &[f32], t: usize, w: &[$ty], k: usize, rows: std::ops::Range<usize>, out: &mut [f32]) {
                    block::<$ty, true>(x, t, w, k, rows, out)
                }
                match a.isa {
                    // SAFETY: an `Acts` only carries a family that `Isa::supported` allowed
                    // (`Isa::active` / `set_kernel_isa` check the CPU), so the features are there.
                    Isa::Avx512 => return unsafe { super::gemm_avx512::$avx512(&a.packed, a.t, w, a.k, rows, out) },
                    // SAFETY: as above, for AVX2 and FMA.
                    Isa::Avx2 => return unsafe { wide(a.x, a.t, w, a.k, rows, out) },
                    Isa::Scalar => {}
                }
            }
            block::<$ty, false>(a.x, a.t, w, a.k, rows, out)
        }
    };
}

entry!(rows_bf16, u16, rows_bf16);
entry!(rows_f32, f32, rows_f32);
