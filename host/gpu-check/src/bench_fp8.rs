//! FP8 block-scaled linears against cuBLAS bf16 on DeepSeek-V3's shapes (`mlahost gpu-check
//! --bench-fp8`): the FP8 time includes quantizing the activations (inside the skinny kernel up
//! to 64 rows, a separate launch beyond, as in the forward pass);
//! weights rotate over enough copies that a step's weights do not sit in L2.

use super::{v, Rng};
use mlahost_cuda::blas::{Blas, Dtype, Linear, Operand};
use mlahost_cuda::blas_lt::{BlockScaledFp8, LtOut};
use mlahost_cuda::gpu::{DeviceBuffer, Gpu};
use mlahost_cuda::graph::{copy_bandwidth, Graph, Timer};
use mlahost_cuda::kernels::fp8::{self, Fp8Act, Fp8Weight, OutMode, BLOCK};
use mlahost_cuda::module::Kernels;
use mlahost_cuda::Result;
use std::fmt::Write;
use std::sync::Arc;

/// V3 linears (name, out, in); kv_b stays bf16 on the GPU (split per head for absorption).
pub const V3_SHAPES: [(&str, usize, usize); 8] = [
    ("q_a", 1536, 7168),
    ("q_b", 24576, 1536),
    ("kv_a", 576, 7168),
    ("o", 7168, 16384),
    ("dense gate_up", 36864, 7168),
    ("dense down", 7168, 18432),
    ("expert gate_up", 4096, 7168),
    ("expert down", 7168, 2048),
];
pub const BATCHES: [usize; 5] = [1, 16, 64, 256, 4096];


/// Median µs of one `launch(i)` (i cycles the weight copies), from CUDA-graph replays.
pub(crate) fn median_us(gpu: &Arc<Gpu>, launch: &dyn Fn(usize) -> Result<()>) -> Result<f64> {
    let timer = Timer::new(gpu)?;
    launch(0)?;
    let once = timer.time(|| launch(1))? as f64 * 1e3;
    let reps = (20_000.0 / once.max(1.0)).clamp(3.0, 200.0) as usize;
    let graph = Graph::capture(gpu, || (0..reps).try_for_each(launch))?;
    graph.launch()?;
    let mut t: Vec<f64> = (0..7).map(|_| timer.time(|| graph.launch()).map(|ms| ms as f64 * 1e3 / reps as f64)).collect::<Result<_>>()?;
    t.sort_by(f64::total_cmp);
    Ok(t[t.len() / 2])
}

/// Returns a markdown table.
pub fn run(k: &Kernels, blas: &Blas, seed: u64) -> Result<String> {
    // kernel against kernel: cuBLAS's launches are plain, so ours are too here (in a step, PDL
    // overlaps a kernel's launch with the one ahead; that shows in the end-to-end A/B)
    let step_pdl = k.set_step_programmatic(false);
    let table = timed(k, blas, seed);
    k.set_step_programmatic(step_pdl);
    table
}

fn timed(k: &Kernels, blas: &Blas, seed: u64) -> Result<String> {
    let gpu = k.gpu();
    let mut rng = Rng::new(seed);
    let copy = copy_bandwidth(gpu, 1 << 30)? / 1e9;
    let sms = gpu.info.multiprocessors as usize;
    let mut s = format!("{} | copy {copy:.0} GB/s | FP8 = activation quantization + block-scaled GEMM (+ split-k reduce)\n", gpu.info.name);
    // cuBLASLt's block-scaled FP8 matmul beside ours (None where it is not available)
    let lt = BlockScaledFp8::new(gpu).map_err(|e| s += &format!("cuBLASLt block-scaled fp8: {e}\n")).ok();
    let lt_on = mlahost_cuda::blas_lt::turned_on();
    s += "FP8 = the forward pass's choice (fp8::choose_path): cuBLASLt where on (MLAHOST_FP8_CUBLASLT=0 turns it off) and it has an algorithm (from 16 rows) for large weights or from 64 rows, the one-launch skinny kernel (bf16 in) for large weights up to 16 rows, else quantization + the tiled GEMM; the last three columns time each path (speed against bf16)\n";
    s += "| shape | n x k | M | path | bf16 µs | fp8 µs | fp8 / bf16 speed | fp8 TFLOP/s | fp8 weight GB/s | % copy | skinny µs | tiled µs | cuBLASLt µs |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
    let max_m = *BATCHES.iter().max().unwrap_or(&1);
    let max_k = V3_SHAPES.iter().map(|s| s.2).max().unwrap_or(1);
    let max_n = V3_SHAPES.iter().map(|s| s.1).max().unwrap_or(1);
    let a16 = DeviceBuffer::from_slice(gpu, &super::bf16s(&rng.vec(max_m * max_k, 1.0)))?;
    let out = DeviceBuffer::alloc(gpu, max_m * max_n * 2)?;
    let (q, qs) = (DeviceBuffer::alloc(gpu, max_m * max_k)?, DeviceBuffer::alloc(gpu, max_m * max_k.div_ceil(BLOCK) * 4)?);
    let act = Fp8Act { codes: v(&q), scales: v(&qs) };
    let part = DeviceBuffer::alloc(gpu, mlahost_engine::capacity::FP8_SPLIT_PARTIAL_BYTES as usize)?;
    let counters = DeviceBuffer::alloc(gpu, fp8::SKINNY_COUNTERS * 4)?;
    counters.fill_bytes(0)?;
    for (name, n, kk) in V3_SHAPES {
        // copies so that the rotation spans >= 256 MB of fp8 weights
        let copies = (256usize << 20).div_ceil(n * kk).clamp(1, 16);
        let (nb, kb) = (n.div_ceil(BLOCK), kk.div_ceil(BLOCK));
        let codes: Vec<DeviceBuffer> = (0..copies).map(|_| {
            let b = DeviceBuffer::alloc(gpu, n * kk)?;
            b.fill_bytes(0x38)?; // e4m3 1.0
            Ok(b)
        }).collect::<Result<_>>()?;
        let scales = DeviceBuffer::from_slice(gpu, &vec![1e-3f32; nb * kb])?;
        let w16: Vec<DeviceBuffer> = (0..copies.min(8).max((512usize << 20).div_ceil(n * kk * 2).min(8))).map(|_| {
            let b = DeviceBuffer::alloc(gpu, n * kk * 2)?;
            b.fill_bytes(0x3c)?;
            Ok(b)
        }).collect::<Result<_>>()?;
        for m in BATCHES {
            let w_at = |i: usize| Fp8Weight { codes: v(&codes[i % copies]), scales: v(&scales) };
            let splits = fp8::splits_for(m, n, kk, sms, part.bytes());
            let tiled_us = median_us(gpu, &|i| {
                fp8::quant_act(k, v(&a16), false, act, m, kk)?;
                fp8::gemm(k, fp8::Gemm { a: act, w: w_at(i), c: v(&out), mode: OutMode::Bf16, part: v(&part), splits, m, n, k: kk })
            })?;
            // the skinny kernels: from bf16 rows up to 16, from quant_act's output (timed with it)
            // past 16 up to 64 (not chosen by the forward pass yet)
            let quantized = m > fp8::SKINNY_MAX_ROWS;
            let sk_splits = fp8::skinny_splits(quantized, m, n, kk, sms, part.bytes());
            let skinny_us = if m <= fp8::SKINNY_QUANTIZED_MAX_ROWS {
                Some(median_us(gpu, &|i| {
                    let (part, counters) = (v(&part), v(&counters));
                    let x = if quantized {
                        fp8::quant_act(k, v(&a16), false, act, m, kk)?;
                        fp8::SkinnyInput::Quantized(act)
                    } else {
                        fp8::SkinnyInput::Bf16(v(&a16))
                    };
                    fp8::skinny(k, fp8::Skinny { x, w: w_at(i), c: v(&out), mode: OutMode::Bf16, part, counters, splits: sk_splits, m, n, k: kk })
                })?)
            } else {
                None
            };
            // as the forward pass calls it: quantization with K-major scales, then the matmul
            let lt_us = match lt.as_ref() {
                Some(lt) if lt.supports(m, n, kk, LtOut::Bf16) => Some(median_us(gpu, &|i| fp8::lt_linear(k, lt, v(&a16), act, w_at(i), v(&out), OutMode::Bf16, m, n, kk))),
                Some(_) => Some(Err(mlahost_cuda::CudaError::Blas { context: "cuBLASLt".into(), message: "no algorithm".into() })),
                None => None,
            };
            let bf16_us = median_us(gpu, &|i| {
                let w = &w16[i % w16.len()];
                let op = |ptr, ld| Operand { ptr, dtype: Dtype::Bf16, ld };
                blas.linear(Linear { m, n, k: kk, a: op(a16.ptr(), kk), w: op(w.ptr(), kk), c: op(out.ptr(), n), beta: 0.0 })
            })?;
            // the forward pass's choice (backend/forward.rs `linear`)
            let lt_ok = lt_on && matches!(lt_us, Some(Ok(_)));
            let (path, fp8_us) = match (fp8::choose_path(m, n, kk, lt_ok), skinny_us, &lt_us) {
                (fp8::Fp8Path::Skinny, Some(us), _) => (format!("skinny, {sk_splits} splits"), us),
                (fp8::Fp8Path::CublasLt, _, Some(Ok(us))) => ("cuBLASLt".to_string(), *us),
                _ => (format!("tiled, {splits} splits"), tiled_us),
            };
            let cell = |us: Option<f64>| us.map_or(String::new(), |us| format!("{us:.1} ({:.2}x)", bf16_us / us));
            let lt_cell = match lt_us {
                Some(Ok(us)) => cell(Some(us)),
                Some(Err(e)) => format!("{e}"),
                None => "n/a".into(),
            };
            let flops = 2.0 * (m * n * kk) as f64;
            let gbps = (n * kk) as f64 / fp8_us * 1e-3;
            let _ = writeln!(
                s,
                "| {name} | {n} x {kk} | {m} | {path} | {bf16_us:.1} | {fp8_us:.1} | {:.2}x | {:.0} | {gbps:.0} | {:.0}% | {} | {} | {lt_cell} |",
                bf16_us / fp8_us,
                flops / fp8_us * 1e-6,
                100.0 * gbps / copy,
                cell(skinny_us),
                cell(Some(tiled_us)),
            );
        }
    }
    Ok(s)
}
