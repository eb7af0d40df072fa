//! Dense building blocks over row-major f32 activations: linear layers, RMSNorm, SiLU gating.

use super::gemm::{rows_bf16, rows_f32, TILE_ROWS};
use super::kernels::{axpy_bf16, axpy_f32, dot_bf16, dot_f32};
use crate::tensor::{Matrix, Storage};
use rayon::prelude::*;

/// Multiply-adds below which a matmul stays on the calling thread.
const PARALLEL_WORK: usize = 1 << 15;

/// `w.row(r) · x`.
pub fn dot_row(w: &Matrix, r: usize, x: &[f32]) -> f32 {
    let range = r * w.cols..(r + 1) * w.cols;
    match &w.data {
        Storage::F32(d) => dot_f32(x, &d[range]),
        Storage::Bf16(d) => dot_bf16(x, &d[range]),
    }
}

/// `y += alpha * w.row(r)`.
pub fn axpy_row(w: &Matrix, r: usize, alpha: f32, y: &mut [f32]) {
    let range = r * w.cols..(r + 1) * w.cols;
    match &w.data {
        Storage::F32(d) => axpy_f32(alpha, &d[range], y),
        Storage::Bf16(d) => axpy_bf16(alpha, &d[range], y),
    }
}

/// `x [t, k] @ w[n, k]^T -> [t, n]` (a linear layer without bias).
pub fn linear(x: &[f32], t: usize, w: &Matrix) -> Vec<f32> {
    let (n, k) = (w.rows, w.cols);
    debug_assert_eq!(x.len(), t * k);
    if t == 0 {
        return Vec::new();
    }
    // Work on the transposed output [n, t] so each task owns whole weight rows.
    let mut out_t = vec![0f32; n * t];
    let rows_per_task = (PARALLEL_WORK / (k * t).max(1)).next_multiple_of(TILE_ROWS).clamp(1, n);
    let body = |(chunk, out): (usize, &mut [f32])| {
        let r0 = chunk * rows_per_task;
        let rows = r0..r0 + out.len() / t;
        match &w.data {
            Storage::Bf16(d) => rows_bf16(x, t, d, k, rows, out),
            Storage::F32(d) => rows_f32(x, t, d, k, rows, out),
        }
    };
    if n * k * t < PARALLEL_WORK {
        out_t.chunks_mut(rows_per_task * t).enumerate().for_each(body);
    } else {
        out_t.par_chunks_mut(rows_per_task * t).enumerate().for_each(body);
    }
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
