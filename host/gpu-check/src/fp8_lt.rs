//! cuBLASLt's block-scaled FP8 matmul (`mlahost_cuda::blas_lt`) against a naive f64 reference on
//! fresh random codes and scales, with N and K off the 128 grid. cuBLASLt's documentation fixes
//! the scale modes but not plainly the order of each scale tensor, so every case runs with the
//! activation scales token-major (`[m][k/128]`, as `fp8_quant_act` writes them) and K-major
//! (`[k/128][m]`), and the weight scales row-major (`[n/128][k/128]`, as checkpoints store them)
//! and transposed: the row names the order that matches. Informational where cuBLASLt is not
//! available (not Hopper, an older library, no algorithm for the scale modes). The forward pass
//! calls it only for shapes `blas_lt::shape_ok` admits, with the order found here; the rows with
//! f32 output (written, and added into what is there) are the forward's residual-stream modes.

use super::{Check, Rng};
use mlahost_cuda::blas_lt::{shape_ok, BlockScaledFp8, Fp8Matmul, LtOut};
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
    // shapes shape_ok refuses (m < 16, k off the 128 grid) first, for the record; then the ones
    // the forward pass sends, in each output mode
    let cases = [
        (1usize, 576usize, 7168usize, LtOut::Bf16),
        (7, 1536, 1040, LtOut::Bf16),
        (300, 704, 528, LtOut::Bf16),
        (64, 400, 2048, LtOut::Bf16),
        (17, 512, 1024, LtOut::F32),
        (33, 1536, 7168, LtOut::Bf16),
        (300, 704, 512, LtOut::F32Add),
        (1000, 576, 2048, LtOut::F32),
    ];
    cases
        .into_iter()
        .map(|(m, n, kd, out)| {
            let name = format!("cuBLASLt block-scaled fp8 {m}x{n}x{kd} {out:?}");
            let r = one(&lt, gpu, rng, m, n, kd, out).map(|mut c| {
                if !shape_ok(m, n, kd) {
                    c.informational = true;
                    c.detail = format!("(a shape the forward pass does not send) {}", c.detail);
                }
                c
            });
            r.unwrap_or_else(|e| Check {
                name,
                error: 0.0,
                tolerance: 0.0,
                detail: format!("not available: {e}"),
                informational: true,
            })
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn one(lt: &BlockScaledFp8, gpu: &std::sync::Arc<mlahost_cuda::Gpu>, rng: &mut Rng, m: usize, n: usize, kd: usize, out_kind: LtOut) -> Result<Check> {
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
    let (x, w) = (DeviceBuffer::from_slice(gpu, &xq)?, DeviceBuffer::from_slice(gpu, &wq)?);
    // f32 output added into: start from values of the result's size
    let base: Vec<f32> = match out_kind {
        LtOut::F32Add => want.iter().map(|v| (*v as f32) * rng.sym()).collect(),
        _ => vec![0.0; m * n],
    };
    let want: Vec<f64> = want.iter().zip(&base).map(|(w, b)| w + *b as f64).collect();
    let norm = want.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-30);
    let mut tried = Vec::new();
    for (x_kmajor, w_transposed) in ORDERS {
        let xsd = DeviceBuffer::from_slice(gpu, &if x_kmajor { transpose(&xs, m, kb) } else { xs.clone() })?;
        let wsd = DeviceBuffer::from_slice(gpu, &if w_transposed { transpose(&ws, nb, kb) } else { ws.clone() })?;
        let out = match out_kind {
            LtOut::Bf16 => DeviceBuffer::alloc(gpu, m * n * 2)?,
            _ => DeviceBuffer::from_slice(gpu, &base)?,
        };
        lt.matmul(&Fp8Matmul { m, n, k: kd, x: x.ptr(), x_scales: xsd.ptr(), w: w.ptr(), w_scales: wsd.ptr(), out: out.ptr(), out_kind })?;
        gpu.synchronize()?;
        let got: Vec<f64> = match out_kind {
            LtOut::Bf16 => out.to_vec::<u16>(m * n)?.into_iter().map(|g| bf16_to_f32(g) as f64).collect(),
            _ => out.to_vec::<f32>(m * n)?.into_iter().map(|g| g as f64).collect(),
        };
        let diff = got.iter().zip(&want).map(|(g, w)| if g.is_finite() { (g - w).powi(2) } else { f64::INFINITY }).sum::<f64>().sqrt();
        tried.push((diff / norm, x_kmajor, w_transposed));
    }
    tried.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (best, x_kmajor, w_transposed) = tried[0];
    let order = |km: bool, tr: bool| format!("activation scales {}, weight scales {}", if km { "[k/128][m]" } else { "[m][k/128]" }, if tr { "[k/128][n/128]" } else { "[n/128][k/128]" });
    Ok(Check {
        name: format!("cuBLASLt block-scaled fp8 {m}x{n}x{kd} {out_kind:?}"),
        error: best,
        // bf16 output: half an ulp is 2^-9 of each value; f32: the tensor cores' fp8 sums
        tolerance: if out_kind == LtOut::Bf16 { 5e-3 } else { 1e-3 },
        detail: format!(
            "matches with {} (rel err {best:.2e}); the other orders: {}",
            order(x_kmajor, w_transposed),
            tried[1..].iter().map(|(e, a, b)| format!("{} {e:.1e}", order(*a, *b))).collect::<Vec<_>>().join("; ")
        ),
        informational: false,
    })
}
