//! Dense building blocks over row-major f32 activations: linear layers, RMSNorm, SiLU gating.

use super::gemm::{rows_bf16, rows_f32, Acts, TILE_ROWS};
use super::isa::Isa;
use crate::tensor::{Matrix, Storage};
use super::pool;

/// Multiply-adds below which a matmul stays on the calling thread.
const PARALLEL_WORK: usize = 1 << 15;

/// Channels per activation scale of the GPU's FP8 linears.
const FP8_ACT_BLOCK: usize = 128;

/// What the CPU does to the input of a linear layer a GPU keeps in FP8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fp8Inputs {
    /// Nothing: the exact model.
    #[default]
    Exact,
    /// Rounded as the GPU's `fp8_quant_act` rounds it: the reference of a GPU running FP8.
    Rounded,
    /// As `Rounded`, after moving every value by 2^-9 of itself (up or down by a hash of its
    /// index), below bf16's resolution: how far two honest FP8 runs part when their upstream
    /// arithmetic differs by rounding alone (the floor a GPU-vs-CPU comparison cannot beat).
    Jittered,
}

/// A linear layer's input as the GPU hands it to an FP8 weight (`fp8_quant_act`), when `mode`
/// asks and the GPU keeps `w` in FP8 (input width a multiple of 16): rounded to bf16 (the
/// activation buffer's type), then per row per 128 channels scaled by amax/448, rounded to
/// e4m3 and scaled back. Otherwise `x` as it is.
pub fn fp8_input<'a>(mode: Fp8Inputs, x: &'a [f32], w: &Matrix) -> std::borrow::Cow<'a, [f32]> {
    if mode == Fp8Inputs::Exact || w.cols % 16 != 0 {
        return std::borrow::Cow::Borrowed(x);
    }
    if mode == Fp8Inputs::Jittered {
        let moved: Vec<f32> = x.iter().enumerate().map(|(i, &v)| v * (1.0 + jitter_sign(i) * 2f32.powi(-9))).collect();
        return std::borrow::Cow::Owned(fp8_round_rows(&moved, w.cols));
    }
    std::borrow::Cow::Owned(fp8_round_rows(x, w.cols))
}

/// +1 or -1 from a hash of `i` (splitmix64's finaliser).
fn jitter_sign(i: usize) -> f32 {
    let mut z = (i as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    if (z ^ (z >> 31)) & 1 == 0 { 1.0 } else { -1.0 }
}

/// `x` (rows of `cols`) through bf16 and per-128-channel e4m3 with an amax/448 scale.
pub fn fp8_round_rows(x: &[f32], cols: usize) -> Vec<f32> {
    use crate::checkpoint::{bf16_to_f32, f32_to_bf16, f8e4m3_to_f32};
    use crate::kv_cache_dtype::f32_to_f8e4m3;
    let mut out: Vec<f32> = x.iter().map(|&v| bf16_to_f32(f32_to_bf16(v))).collect();
    for row in out.chunks_mut(cols) {
        for block in row.chunks_mut(FP8_ACT_BLOCK) {
            let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
            if amax == 0.0 {
                continue;
            }
            let scale = amax / 448.0;
            block.iter_mut().for_each(|v| *v = f8e4m3_to_f32(f32_to_f8e4m3(*v / scale)) * scale);
        }
    }
    out
}

/// `x [t, k] @ w[n, k]^T -> [t, n]` (a linear layer without bias).
pub fn linear(x: &[f32], t: usize, w: &Matrix) -> Vec<f32> {
    linear_many(&[Lin::new(w, x, t)]).pop().unwrap_or_default()
}

/// One linear layer of a `linear_many` call: `x [t, w.cols] @ w[rows]^T -> [t, rows.len()]`.
pub struct Lin<'a> {
    pub w: &'a Matrix,
    pub rows: std::ops::Range<usize>,
    pub x: &'a [f32],
    pub t: usize,
}

impl<'a> Lin<'a> {
    /// All rows of `w`.
    pub fn new(w: &'a Matrix, x: &'a [f32], t: usize) -> Self {
        Self { w, rows: 0..w.rows, x, t }
    }

    /// Rows `rows` of `w` only (e.g. one head's block of `kv_b_proj`).
    pub fn rows(w: &'a Matrix, rows: std::ops::Range<usize>, x: &'a [f32], t: usize) -> Self {
        assert!(rows.end <= w.rows, "row range past the matrix");
        Self { w, rows, x, t }
    }
}

/// Several linear layers in one parallel op (their row blocks share the team), each `[t, n]`.
pub fn linear_many(jobs: &[Lin<'_>]) -> Vec<Vec<f32>> {
    let isa = Isa::active();
    let acts: Vec<Acts> = jobs.iter().map(|j| Acts::new(isa, j.x, j.t, j.w.cols, matches!(j.w.data, Storage::Bf16(_)))).collect();
    // Work on the transposed outputs [n, t] so each part owns whole weight rows.
    let mut outs: Vec<Vec<f32>> = jobs.iter().map(|j| vec![0f32; j.rows.len() * j.t]).collect();
    let work: usize = jobs.iter().map(|j| j.rows.len() * j.w.cols * j.t).sum();
    let threads = pool::team().threads();
    // Parts of at least PARALLEL_WORK multiply-adds, and several per thread to even out.
    let part_work = (work / (4 * threads)).max(PARALLEL_WORK);
    let rows_per_part: Vec<usize> =
        jobs.iter().map(|j| (part_work / (j.w.cols * j.t).max(1)).next_multiple_of(TILE_ROWS).clamp(1, j.rows.len().max(1))).collect();
    let chunks: Vec<pool::Chunks<f32>> = outs.iter_mut().zip(jobs.iter().zip(&rows_per_part)).map(|(o, (j, &r))| pool::Chunks::new(o, r * j.t)).collect();
    let parts: Vec<(usize, usize)> = chunks.iter().enumerate().flat_map(|(j, c)| (0..c.count()).map(move |i| (j, i))).collect();
    let body = |p: usize| {
        let (j, i) = parts[p];
        // SAFETY: each part index, and so each (job, chunk) pair, is taken exactly once.
        let out = unsafe { chunks[j].get(i) };
        let r0 = jobs[j].rows.start + i * rows_per_part[j];
        let rows = r0..r0 + out.len() / jobs[j].t;
        match &jobs[j].w.data {
            Storage::Bf16(d) => rows_bf16(&acts[j], d, rows, out),
            Storage::F32(d) => rows_f32(&acts[j], d, rows, out),
            // FP8 weights reach the CPU only when a loader kept them as stored: each part's
            // rows are dequantized (exactly) into f32 and multiplied as f32 weights.
            Storage::Fp8(_) => {
                let w = jobs[j].w;
                let mut local = vec![0f32; rows.len() * w.cols];
                for (i, r) in rows.clone().enumerate() {
                    w.row_into(r, &mut local[i * w.cols..(i + 1) * w.cols]);
                }
                rows_f32(&acts[j], &local, 0..rows.len(), out)
            }
        }
    };
    if work < PARALLEL_WORK {
        (0..parts.len()).for_each(body);
    } else {
        pool::team().run(parts.len(), &body);
    }
    drop(chunks);
    outs.into_iter().zip(jobs).map(|(o, j)| transpose(o, j.rows.len(), j.t)).collect()
}

/// `[n, t] -> [t, n]`.
fn transpose(out_t: Vec<f32>, n: usize, t: usize) -> Vec<f32> {
    if t == 1 {
        return out_t;
    }
    let mut out = vec![0f32; t * n];
    for r in 0..n {
        for tok in 0..t {
            out[tok * n + r] = out_t[r * t + tok];
        }
    }
    out
}

/// RMSNorm over each row of `x` (width `w.len()`), in place: `w * x / sqrt(mean(x^2) + eps)`.
pub fn rms_norm_rows(x: &mut [f32], w: &[f32], eps: f32) {
    for row in x.chunks_mut(w.len()) {
        rms_norm(row, w, eps);
    }
}

pub fn rms_norm(row: &mut [f32], w: &[f32], eps: f32) {
    let mean_sq = row.iter().map(|v| v * v).sum::<f32>() / row.len() as f32;
    let inv = 1.0 / (mean_sq + eps).sqrt();
    for (v, g) in row.iter_mut().zip(w) {
        *v = g * (*v * inv);
    }
}

/// `[t, 2i]` gate|up rows -> `[t, i]` of `silu(gate) * up`.
pub fn silu_mul(gate_up: &[f32], inter: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(gate_up.len() / 2);
    for row in gate_up.chunks(2 * inter) {
        let (g, u) = row.split_at(inter);
        out.extend(g.iter().zip(u).map(|(&g, &u)| g / (1.0 + (-g).exp()) * u));
    }
    out
}

/// In-place softmax of one row.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in x.iter_mut() {
        *v /= sum;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_matches_naive_for_both_storages() {
        let (t, n, k) = (5, 37, 70);
        let x: Vec<f32> = (0..t * k).map(|i| ((i * 7919) % 101) as f32 / 50.0 - 1.0).collect();
        let wv: Vec<f32> = (0..n * k).map(|i| ((i * 104729) % 97) as f32 / 48.0 - 1.0).collect();
        let bf: Vec<u16> = wv.iter().map(|&v| crate::checkpoint::f32_to_bf16(v)).collect();
        for w in [Matrix::from_f32(n, k, wv.clone()), Matrix { rows: n, cols: k, data: Storage::Bf16(bf) }] {
            let wf = w.to_f32_vec();
            let y = linear(&x, t, &w);
            for a in 0..t {
                for b in 0..n {
                    let naive: f32 = (0..k).map(|i| x[a * k + i] * wf[b * k + i]).sum();
                    assert!((y[a * n + b] - naive).abs() < 1e-3, "{a},{b}");
                }
            }
            // Batch invariance: a token alone gives bit-identical results.
            for a in 0..t {
                assert_eq!(&linear(&x[a * k..(a + 1) * k], 1, &w)[..], &y[a * n..(a + 1) * n]);
            }
        }
    }
}
