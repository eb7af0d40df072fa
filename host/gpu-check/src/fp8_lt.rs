//! cuBLASLt's block-scaled FP8 matmul (`mlahost_cuda::blas_lt`) against a naive f64 reference on
//! fresh random codes and scales, with N and K off the 128 grid. cuBLASLt's documentation fixes
//! the scale modes but not plainly the order of each scale tensor, so every case runs with the
//! activation scales token-major (`[m][k/128]`, as `fp8_quant_act` writes them) and K-major
//! (`[k/128][m]`), and the weight scales row-major (`[n/128][k/128]`, as checkpoints store them)
//! and transposed: the row names the order that matches. Informational where cuBLASLt is not
//! available (not Hopper, an older library, no algorithm for the scale modes).

use super::{Check, Rng};
use mlahost_cuda::blas_lt::{BlockScaledFp8, Fp8Matmul};
use mlahost_cuda::gpu::DeviceBuffer;
use mlahost_cuda::module::Kernels;
use mlahost_cuda::Result;
use mlahost_engine::checkpoint::{bf16_to_f32, f8e4m3_to_f32};
use mlahost_engine::kv_cache_dtype::f32_to_f8e4m3;

const BLOCK: usize = 128;

/// The orders tried: (activation scales K-major, weight scales transposed).
const ORDERS: [(bool, bool); 4] = [(false, false), (true, false), (false, true), (true, true)];

fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..cols).flat_map(|c| (0..rows).map(move |r| x[r * cols + c])).collect()
}

pub fn run_all(k: &Kernels, rng: &mut Rng) -> Vec<Check> {
    let gpu = k.gpu();
    let lt = match BlockScaledFp8::new(gpu) {
        Ok(lt) => lt,
        Err(e) => return vec![Check { name: "cuBLASLt block-scaled fp8".into(), error: 0.0, tolerance: 0.0, detail: format!("not available: {e}"), informational: true }],
    };
    [(1usize, 576usize, 7168usize), (7, 1536, 1040), (64, 400, 2048), (300, 704, 528)]
        .into_iter()
        .map(|(m, n, kd)| {
            one(&lt, gpu, rng, m, n, kd).unwrap_or_else(|e| Check {
                name: format!("cuBLASLt block-scaled fp8 {m}x{n}x{kd}"),
                error: 0.0,
                tolerance: 0.0,
                detail: format!("not available: {e}"),
                informational: true,
            })
        })
        .collect()
}

fn one(lt: &BlockScaledFp8, gpu: &std::sync::Arc<mlahost_cuda::Gpu>, rng: &mut Rng, m: usize, n: usize, kd: usize) -> Result<Check> {
    let (kb, nb) = (kd.div_ceil(BLOCK), n.div_ceil(BLOCK));
    let code = |rng: &mut Rng| f32_to_f8e4m3(rng.sym() * 400.0);
    let xq: Vec<u8> = (0..m * kd).map(|_| code(rng)).collect();
    let wq: Vec<u8> = (0..n * kd).map(|_| code(rng)).collect();
    let scale = |rng: &mut Rng| 10f32.powf(rng.sym() * 2.0) * 1e-3;
    let xs: Vec<f32> = (0..m * kb).map(|_| scale(rng)).collect();
    let ws: Vec<f32> = (0..nb * kb).map(|_| scale(rng)).collect();
    let want: Vec<f64> = (0..m * n)
        .map(|i| {
            let (r, c) = (i / n, i % n);
            (0..kd).map(|j| f8e4m3_to_f32(xq[r * kd + j]) as f64 * xs[r * kb + j / BLOCK] as f64 * f8e4m3_to_f32(wq[c * kd + j]) as f64 * ws[(c / BLOCK) * kb + j / BLOCK] as f64).sum()
        })
        .collect();
    let (x, w, out) = (DeviceBuffer::from_slice(gpu, &xq)?, DeviceBuffer::from_slice(gpu, &wq)?, DeviceBuffer::alloc(gpu, m * n * 2)?);
    let norm = want.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-30);
    let mut tried = Vec::new();
    for (x_kmajor, w_transposed) in ORDERS {
        let xsd = DeviceBuffer::from_slice(gpu, &if x_kmajor { transpose(&xs, m, kb) } else { xs.clone() })?;
        let wsd = DeviceBuffer::from_slice(gpu, &if w_transposed { transpose(&ws, nb, kb) } else { ws.clone() })?;
        lt.matmul(&Fp8Matmul { m, n, k: kd, x: x.ptr(), x_scales: xsd.ptr(), w: w.ptr(), w_scales: wsd.ptr(), out: out.ptr() })?;
        gpu.synchronize()?;
        let got: Vec<u16> = out.to_vec(m * n)?;
        let diff = got.iter().zip(&want).map(|(&g, &w)| (bf16_to_f32(g) as f64 - w).powi(2)).sum::<f64>().sqrt();
        tried.push((diff / norm, x_kmajor, w_transposed));
    }
    tried.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (best, x_kmajor, w_transposed) = tried[0];
    let order = |km: bool, tr: bool| format!("activation scales {}, weight scales {}", if km { "[k/128][m]" } else { "[m][k/128]" }, if tr { "[k/128][n/128]" } else { "[n/128][k/128]" });
    Ok(Check {
        name: format!("cuBLASLt block-scaled fp8 {m}x{n}x{kd}"),
        error: best,
        // bf16 output: half an ulp is 2^-9 of each value
        tolerance: 5e-3,
        detail: format!(
            "matches with {} (rel err {best:.2e}); the other orders: {}",
            order(x_kmajor, w_transposed),
            tried[1..].iter().map(|(e, a, b)| format!("{} {e:.1e}", order(*a, *b))).collect::<Vec<_>>().join("; ")
        ),
        informational: false,
    })
}
