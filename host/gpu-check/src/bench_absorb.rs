//! The absorbed attention's per-head projections at decode sizes (part of `--bench-gemm`): the
//! forward pass's unfused launches (`latent_cache_write`, cuBLAS's W_UK, `rope_query`; cuBLAS's
//! W_UV) beside absorb.cu's `absorb_query` (W_UK with the rope and the cache write) and
//! `absorb_value`, over kv_b copies that rotate past L2.

use super::v;
use mlahost_cuda::blas::{Batch, Blas, Dtype, Linear, Operand};
use mlahost_cuda::gpu::DeviceBuffer;
use mlahost_cuda::kernels::absorb::{self, Heads};
use mlahost_cuda::kernels::layers::{self, CacheWrite, RopeArgs, RopeQuery};
use mlahost_cuda::module::Kernels;
use mlahost_cuda::Result;
use std::fmt::Write;

/// (name, heads): V2-Lite (and V3 at tensor parallel 8) and V3 on one GPU.
const SHAPES: [(&str, usize); 2] = [("16 heads", 16), ("128 heads", 128)];
const TOKENS: [usize; 3] = [1, 4, 16];
const NOPE: usize = 128;
const VD: usize = 128;
const LATENT: usize = 512;
const ROPE: usize = 64;

/// Returns a markdown table.
pub fn run(k: &Kernels, blas: &Blas, copy: f64) -> Result<String> {
    let gpu = k.gpu();
    let mut s = format!("\n{} | copy {copy:.0} GB/s | absorbed attention projections (kv_b {NOPE}+{VD} x {LATENT} a head, rope {ROPE}); kv_b bytes over the time\n", gpu.info.name);
    s += "| heads | tokens | cache write + cuBLAS W_UK + rope_query µs | absorb_query (+ cache write) µs | speed | cuBLAS W_UV µs | absorb_value µs | speed | absorb GB/s (% copy) |\n|---|---|---|---|---|---|---|---|---|\n";
    let (qk, d) = (NOPE + ROPE, LATENT + ROPE);
    let freqs: Vec<f32> = (0..ROPE / 2).map(|i| 1.0 / 10000f32.powf(2.0 * i as f32 / ROPE as f32)).collect();
    let d_freq = DeviceBuffer::from_slice(gpu, &freqs)?;
    let rope = RopeArgs { inv_freq: v(&d_freq), attention_factor: 1.0, rope_dim: ROPE, interleaved: true };
    let pos = DeviceBuffer::from_slice(gpu, &vec![4096i32; absorb::MAX_TOKENS])?;
    // the new tokens' latents and their cache slots (a bf16 cache of 4,096 slots)
    let kv = DeviceBuffer::alloc(gpu, absorb::MAX_TOKENS * d * 4)?;
    kv.fill_bytes(0x3c)?;
    let norm = DeviceBuffer::from_slice(gpu, &vec![1f32; LATENT])?;
    let slots = DeviceBuffer::from_slice(gpu, &(0..absorb::MAX_TOKENS as i64).map(|i| i * 37).collect::<Vec<_>>())?;
    let cache_slots = 4096;
    let cache = DeviceBuffer::alloc(gpu, cache_slots * layers::cache_entry_bytes(LATENT, ROPE, false))?;
    for (name, heads) in SHAPES {
        let kv_b_bytes = heads * (NOPE + VD) * LATENT * 2;
        let copies = (256usize << 20).div_ceil(kv_b_bytes).clamp(2, 16);
        let kv_bs: Vec<DeviceBuffer> = (0..copies)
            .map(|_| {
                let b = DeviceBuffer::alloc(gpu, kv_b_bytes)?;
                b.fill_bytes(0x3c)?;
                Ok(b)
            })
            .collect::<Result<_>>()?;
        let rows = absorb::MAX_TOKENS * heads;
        let q = DeviceBuffer::alloc(gpu, rows * qk * 2)?;
        let o = DeviceBuffer::alloc(gpu, rows * LATENT * 2)?;
        q.fill_bytes(0x3c)?;
        o.fill_bytes(0x3c)?;
        let (q_full, ov) = (DeviceBuffer::alloc(gpu, rows * d * 2)?, DeviceBuffer::alloc(gpu, rows * VD * 2)?);
        let per_head = (NOPE + VD) * LATENT;
        let op = |ptr, ld| Operand { ptr, dtype: Dtype::Bf16, ld };
        for t in TOKENS {
            let shape = Heads { tokens: t, heads, nope: NOPE, vd: VD, kv_lora: LATENT };
            let cw = CacheWrite { kv: v(&kv), norm_weight: v(&norm), pos: v(&pos), slots: v(&slots), rope, cache: v(&cache), cache_slots, tokens: t, kv_lora: LATENT, eps: 1e-6, fp8: false };
            let cublas_q = super::bench_fp8::median_us(gpu, &|i| {
                layers::latent_cache_write(k, cw)?;
                blas.batched(
                    Linear { m: t, n: LATENT, k: NOPE, a: op(q.ptr(), heads * qk), w: op(kv_bs[i % copies].ptr(), LATENT), c: op(q_full.ptr(), heads * d), beta: 0.0 },
                    Batch { stride_a: qk, stride_w: per_head, stride_c: d, count: heads, w_kn: true },
                )?;
                let rq = RopeQuery { q: v(&q), out: v(&q_full), pos: v(&pos), rope, tokens: t, heads, q_stride: qk, rope_offset: NOPE, out_stride: d, out_offset: LATENT };
                layers::rope_query(k, rq)
            })?;
            let ours_q = super::bench_fp8::median_us(gpu, &|i| absorb::query(k, shape, v(&q), v(&kv_bs[i % copies]), v(&q_full), v(&pos), rope, Some(cw)))?;
            let cublas_v = super::bench_fp8::median_us(gpu, &|i| {
                let w_uv = op(kv_bs[i % copies].ptr() + (NOPE * LATENT * 2) as u64, LATENT);
                blas.batched(
                    Linear { m: t, n: VD, k: LATENT, a: op(o.ptr(), heads * LATENT), w: w_uv, c: op(ov.ptr(), heads * VD), beta: 0.0 },
                    Batch { stride_a: LATENT, stride_w: per_head, stride_c: VD, count: heads, w_kn: false },
                )
            })?;
            let ours_v = super::bench_fp8::median_us(gpu, &|i| absorb::value(k, shape, v(&o), v(&kv_bs[i % copies]), v(&ov)))?;
            // each kernel reads its half of kv_b
            let gbs = (kv_b_bytes as f64) / ((ours_q + ours_v) * 1e3);
            let _ = writeln!(
                s,
                "| {name} | {t} | {cublas_q:.1} | {ours_q:.1} | {:.2}x | {cublas_v:.1} | {ours_v:.1} | {:.2}x | {gbs:.0} ({:.0}%) |",
                cublas_q / ours_q,
                cublas_v / ours_v,
                100.0 * gbs / copy
            );
        }
    }
    Ok(s)
}
