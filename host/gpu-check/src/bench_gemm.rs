//! The step's GEMM kernels beside the ones they would replace (`mlahost gpu-check --bench-gemm`):
//! the grouped expert GEMM at decode sizes, `moe_gemm_skinny` (the forward pass's kernel for
//! batches of up to 64 tokens) beside `moe_gemm_stream` on the same dispatches (and for FP8
//! experts, `fp8_gemm_m16` beside `fp8_grouped_stream`),
//! over routings that change every launch so that the touched experts' weights come from HBM
//! rather than L2; at prefill sizes, `moe_gemm` beside `moe_gemm_wgmma` (Hopper); and the dense
//! linears of up to 16 rows, cuBLAS beside `linear_stream`, over weight copies that rotate past L2;
//! the absorbed attention's per-head projections, cuBLAS beside absorb.cu (`bench_absorb`); the
//! MoE router, cuBLAS + routing + dispatch beside the fused `moe_route_small` (`bench_router`).

use super::{v, Rng};
use mlahost_cuda::blas::{Blas, Dtype, Linear, Operand};
use mlahost_cuda::kernels::fp8::{self, OutMode};
use mlahost_cuda::kernels::stream;
use mlahost_cuda::gpu::DeviceBuffer;
use mlahost_cuda::graph::copy_bandwidth;
use mlahost_cuda::kernels::moe::{self, max_tiles, Dispatch, Grouped, GroupedKernel};
use mlahost_cuda::module::Kernels;
use mlahost_cuda::Result;
use std::fmt::Write;

/// (name, experts, experts per token, n, k, gathered): the first GEMM gathers token rows, the
/// second reads the pairs in expert order, as in the forward pass.
const SHAPES: [(&str, usize, usize, usize, usize, bool); 4] = [
    ("V2-Lite gate_up", 64, 6, 2816, 2048, true),
    ("V2-Lite down", 64, 6, 2048, 1408, false),
    ("V3 gate_up, 32 experts", 32, 8, 4096, 7168, true),
    ("V3 down, 32 experts", 32, 8, 7168, 2048, false),
];
const TOKENS: [usize; 4] = [1, 4, 16, 64];
/// Routings cycled through by consecutive launches.
const ROUTINGS: usize = 8;

struct Routed {
    d: Dispatch,
    /// Distinct experts the routing touches.
    touched: usize,
    _bufs: Vec<DeviceBuffer>,
}

fn routing(k: &Kernels, rng: &mut Rng, tokens: usize, experts: usize, top_k: usize, tile_rows: usize) -> Result<Routed> {
    let gpu = k.gpu();
    let mut ids = Vec::with_capacity(tokens * top_k);
    for _ in 0..tokens {
        let mut pick: Vec<i32> = (0..experts as i32).collect();
        rng.shuffle(&mut pick);
        ids.extend_from_slice(&pick[..top_k]);
    }
    let mut seen = ids.clone();
    seen.sort_unstable();
    seen.dedup();
    let pairs = tokens * top_k;
    let buf = |n: usize| DeviceBuffer::alloc(gpu, n);
    let d_ids = DeviceBuffer::from_slice(gpu, &ids)?;
    let bufs = vec![buf((experts + 1) * 4)?, buf(pairs * 4)?, buf(pairs * 4)?, buf(max_tiles(pairs, experts, tile_rows) * 12)?, buf(4)?];
    let d = Dispatch {
        expert_offsets: v(&bufs[0]),
        sorted_pairs: v(&bufs[1]),
        pair_pos: v(&bufs[2]),
        tiles: v(&bufs[3]),
        num_tiles: v(&bufs[4]),
        tile_rows,
    };
    moe::moe_align(k, v(&d_ids), pairs, experts, 0..experts, &d)?;
    gpu.synchronize()?;
    Ok(Routed { d, touched: seen.len(), _bufs: bufs })
}

/// The GEMM kernels' registers and CTAs an SM as this GPU's compiler builds them (the skinny and
/// streaming split heuristics assume `fp8_skinny_m16` at three, the streaming kernels at two).
fn occupancy(k: &Kernels) -> String {
    let smem = |g: GroupedKernel| g.launch_shape().2;
    let kernels = [
        ("fp8_skinny_m16", 0),
        ("fp8_grouped_stream", 0),
        ("moe_gemm_skinny", smem(GroupedKernel::Skinny)),
        ("moe_gemm_stream", 0),
        ("linear_stream", 0),
        ("moe_gemm_wgmma", smem(GroupedKernel::Wgmma)),
        ("fp8_grouped_wgmma", smem(GroupedKernel::Wgmma)),
    ];
    let mut s = String::from("| kernel (256 threads) | registers | CTAs an SM |\n|---|---|---|\n");
    for (name, smem) in kernels {
        let _ = match k.occupancy(name, 256, smem) {
            Ok((regs, ctas)) => writeln!(s, "| {name} | {regs} | {ctas} |"),
            Err(e) => writeln!(s, "| {name} | {e} | |"),
        };
    }
    s
}

/// DeepSeek-V2-Lite's dense linears (name, n, k): the query, latent, output and shared-expert
/// projections of every layer, the first layer's dense down projection and the lm_head.
const DENSE: [(&str, usize, usize); 7] = [
    ("q", 3072, 2048),
    ("kv_a", 576, 2048),
    ("o", 2048, 2048),
    ("shared gate_up", 2816, 2048),
    ("shared down", 2048, 2816),
    ("dense down", 2048, 10944),
    ("lm_head", 102_400, 2048),
];
const ROWS: [usize; 3] = [1, 4, 16];

/// Returns markdown tables.
pub fn run(k: &Kernels, blas: &Blas, seed: u64) -> Result<String> {
    let gpu = k.gpu();
    let mut rng = Rng::new(seed);
    let copy = copy_bandwidth(gpu, 1 << 30)? / 1e9;
    let mut s = occupancy(k);
    s += &grouped(k, &mut rng, copy)?;
    if gpu.info.compute_capability >= (8, 9) {
        s += &decode_fp8(k, &mut rng, copy)?; // FP8 tensor cores
    }
    if GroupedKernel::Wgmma.runs_on(gpu.info.compute_capability) {
        s += &prefill(k, &mut rng, copy)?;
        s += &prefill_fp8(k, &mut rng)?;
    }
    s += &dense(k, blas, &mut rng, copy)?;
    s += &super::bench_absorb::run(k, blas, copy)?;
    s += &super::bench_router::run(k, blas, &mut rng)?;
    Ok(s)
}

fn dense(k: &Kernels, blas: &Blas, rng: &mut Rng, copy: f64) -> Result<String> {
    let gpu = k.gpu();
    let sms = gpu.info.multiprocessors as usize;
    let mut s = format!("\n{} | copy {copy:.0} GB/s | dense bf16 linears, bf16 out; weight bytes over the time\n", gpu.info.name);
    s += "| shape | n x k | rows | splits | cuBLAS µs | stream µs | stream / cuBLAS speed | cuBLAS GB/s (% copy) | stream GB/s (% copy) |\n|---|---|---|---|---|---|---|---|---|\n";
    let part = DeviceBuffer::alloc(gpu, mlahost_engine::capacity::STREAM_SPLIT_PARTIAL_BYTES as usize)?;
    let counters = DeviceBuffer::alloc(gpu, stream::COUNTERS * 4)?;
    counters.fill_bytes(0)?;
    for (name, n, kk) in DENSE {
        let copies = (256usize << 20).div_ceil(n * kk * 2).clamp(1, 16);
        let ws: Vec<DeviceBuffer> = (0..copies).map(|_| {
            let b = DeviceBuffer::alloc(gpu, n * kk * 2)?;
            b.fill_bytes(0x3c)?;
            Ok(b)
        }).collect::<Result<_>>()?;
        let a = DeviceBuffer::from_slice(gpu, &super::bf16s(&rng.vec(stream::MAX_ROWS * kk, 1.0)))?;
        let c = DeviceBuffer::alloc(gpu, stream::MAX_ROWS * n * 2)?;
        for m in ROWS {
            let splits = stream::splits_for(m, n, kk, sms, part.bytes());
            let cublas = super::bench_fp8::median_us(gpu, &|i| {
                let op = |ptr, ld| Operand { ptr, dtype: Dtype::Bf16, ld };
                blas.linear(Linear { m, n, k: kk, a: op(a.ptr(), kk), w: op(ws[i % copies].ptr(), kk), c: op(c.ptr(), n), beta: 0.0 })
            })?;
            let streamed = super::bench_fp8::median_us(gpu, &|i| {
                let g = stream::Linear { a: v(&a), w: v(&ws[i % copies]), c: v(&c), mode: OutMode::Bf16, second: None, glu: false, part: v(&part), counters: v(&counters), splits, m, n, k: kk };
                stream::linear(k, g)
            })?;
            let _ = writeln!(s, "| {name} | {n} x {kk} | {m} | {splits} | {cublas:.1} | {streamed:.1} | {} |", versus(cublas, streamed, (n * kk * 2) as f64, copy));
        }
    }
    Ok(s)
}

/// Prefill-sized batches over V2-Lite's experts (64 of 6 a token): moe_gemm and moe_gemm_wgmma
/// on the same 64-row tiles, two routings cycled.
fn prefill(k: &Kernels, rng: &mut Rng, copy: f64) -> Result<String> {
    let gpu = k.gpu();
    let mut s = format!("\n{} | copy {copy:.0} GB/s | grouped expert GEMM at prefill sizes (64-row tiles): TFLOP/s of the rows' products, and the experts' weight bytes over the time\n", gpu.info.name);
    s += "| shape | n x k | tokens | moe_gemm µs | wgmma µs | wgmma / moe_gemm speed | moe_gemm TFLOP/s | wgmma TFLOP/s | wgmma weight GB/s (% copy) |\n|---|---|---|---|---|---|---|---|---|\n";
    const TOKENS: [usize; 2] = [1024, 8192];
    for (name, experts, top_k, n, kk, gathered) in SHAPES.into_iter().take(2) {
        let w = DeviceBuffer::alloc(gpu, experts * n * kk * 2)?;
        w.fill_bytes(0x3c)?;
        let max_pairs = TOKENS[1] * top_k;
        let a = DeviceBuffer::from_slice(gpu, &super::bf16s(&rng.vec(max_pairs.max(TOKENS[1]) * kk, 1.0)))?;
        let c = DeviceBuffer::alloc(gpu, max_pairs * n * 4)?;
        for tokens in TOKENS {
            let routed: Vec<Routed> = (0..2).map(|_| routing(k, rng, tokens, experts, top_k, moe::TILE_ROWS)).collect::<Result<_>>()?;
            let pairs = tokens * top_k;
            let time = |kernel: GroupedKernel| {
                super::bench_fp8::median_us(gpu, &|i| {
                    let r = &routed[i % routed.len()];
                    let (a_total_rows, a_rows) = if gathered { (tokens, Some((r.d.sorted_pairs, top_k))) } else { (pairs, None) };
                    let g = Grouped { a: v(&a), a_total_rows, a_rows, w: v(&w), experts, pairs, c: v(&c), n, k: kk };
                    moe::moe_gemm_with(k, kernel, &r.d, g, !gathered)
                })
            };
            let (tiled, wgmma) = (time(GroupedKernel::Tiled)?, time(GroupedKernel::Wgmma)?);
            let flops = 2.0 * (pairs * n * kk) as f64;
            let touched = routed.iter().map(|r| r.touched).sum::<usize>() as f64 / routed.len() as f64;
            let gbs = touched * (n * kk * 2) as f64 / (wgmma * 1e3);
            let _ = writeln!(
                s,
                "| {name} | {n} x {kk} | {tokens} | {tiled:.1} | {wgmma:.1} | {:.2}x | {:.0} | {:.0} | {gbs:.0} ({:.0}%) |",
                tiled / wgmma,
                flops / (tiled * 1e6),
                flops / (wgmma * 1e6),
                100.0 * gbs / copy
            );
        }
    }
    Ok(s)
}

/// The FP8 grouped GEMM at prefill sizes: `fp8_gemm_m64` beside `fp8_grouped_wgmma` on the same
/// 64-row tiles (activations quantized once, outside the timing): V2-Lite's experts, and V3's
/// experts as one expert-parallel rank of eight holds them (32 experts; one pick of 32 a token is
/// the density of V3's 8 of 256).
fn prefill_fp8(k: &Kernels, rng: &mut Rng) -> Result<String> {
    let gpu = k.gpu();
    let mut s = format!("\n{} | FP8 grouped expert GEMM at prefill sizes (64-row tiles), bf16 out: TFLOP/s of the rows' products\n", gpu.info.name);
    s += "| shape | n x k | tokens | fp8_gemm_m64 µs | wgmma µs | wgmma / m64 speed | m64 TFLOP/s | wgmma TFLOP/s |\n|---|---|---|---|---|---|---|---|\n";
    const SHAPES_FP8: [(&str, usize, usize, usize, usize, bool); 4] = [
        ("V2-Lite gate_up", 64, 6, 2816, 2048, true),
        ("V2-Lite down", 64, 6, 2048, 1408, false),
        ("V3 gate_up, EP rank", 32, 1, 4096, 7168, true),
        ("V3 down, EP rank", 32, 1, 7168, 2048, false),
    ];
    const TOKENS: [usize; 2] = [1024, 8192];
    for (name, experts, top_k, n, kk, gathered) in SHAPES_FP8 {
        let (nb, kb) = (n.div_ceil(128), kk.div_ceil(128));
        let w = DeviceBuffer::alloc(gpu, experts * n * kk)?;
        w.fill_bytes(0x38)?; // e4m3 1.0
        let ws = DeviceBuffer::from_slice(gpu, &vec![1e-3f32; experts * nb * kb])?;
        let rows = TOKENS[1] * top_k.max(1);
        let x = DeviceBuffer::from_slice(gpu, &super::bf16s(&rng.vec(rows * kk, 1.0)))?;
        let (codes, scales) = (DeviceBuffer::alloc(gpu, rows * kk)?, DeviceBuffer::alloc(gpu, rows * kb * 4)?);
        let act = fp8::Fp8Act { codes: v(&codes), scales: v(&scales) };
        fp8::quant_act(k, v(&x), false, act, rows, kk)?;
        let c = DeviceBuffer::alloc(gpu, rows * n * 2)?;
        for tokens in TOKENS {
            let routed: Vec<Routed> = (0..2).map(|_| routing(k, rng, tokens, experts, top_k, moe::TILE_ROWS)).collect::<Result<_>>()?;
            let pairs = tokens * top_k;
            let time = |wgmma: bool| {
                super::bench_fp8::median_us(gpu, &|i| {
                    let r = &routed[i % routed.len()];
                    let (a_total_rows, a_rows) = if gathered { (tokens, Some((r.d.sorted_pairs, top_k))) } else { (pairs, None) };
                    let w = fp8::Fp8Weight { codes: v(&w), scales: v(&ws) };
                    let g = Grouped { a: act, a_total_rows, a_rows, w, experts, pairs, c: v(&c), n, k: kk };
                    fp8::grouped_gemm_on(k, wgmma, &r.d, g, OutMode::Bf16)
                })
            };
            let (tiled, wgmma) = (time(false)?, time(true)?);
            let flops = 2.0 * (pairs * n * kk) as f64;
            let _ = writeln!(s, "| {name} | {n} x {kk} | {tokens} | {tiled:.1} | {wgmma:.1} | {:.2}x | {:.0} | {:.0} |", tiled / wgmma, flops / (tiled * 1e6), flops / (wgmma * 1e6));
        }
    }
    Ok(s)
}

/// The FP8 grouped expert GEMM at decode sizes (16-row tiles): quantization + `fp8_gemm_m16` (as
/// the forward pass runs it) beside `fp8_grouped_stream` (bf16 rows quantized inside), over
/// routings cycled so the touched experts' weights come from HBM.
fn decode_fp8(k: &Kernels, rng: &mut Rng, copy: f64) -> Result<String> {
    let gpu = k.gpu();
    let mut s = format!("\n{} | FP8 grouped expert GEMM at decode sizes (16-row tiles); weights of the touched experts over the time; {ROUTINGS} routings cycled\n", gpu.info.name);
    s += "| shape | n x k | tokens | experts touched | quant + m16 µs | stream µs | stream / m16 speed | m16 GB/s (% copy) | stream GB/s (% copy) |\n|---|---|---|---|---|---|---|---|---|\n";
    const SHAPES_FP8: [(&str, usize, usize, usize, usize, bool); 4] = [
        ("V2-Lite gate_up", 64, 6, 2816, 2048, true),
        ("V2-Lite down", 64, 6, 2048, 1408, false),
        ("V3 gate_up, EP rank", 32, 1, 4096, 7168, true),
        ("V3 down, EP rank", 32, 1, 7168, 2048, false),
    ];
    for (name, experts, top_k, n, kk, gathered) in SHAPES_FP8 {
        let (nb, kb) = (n.div_ceil(128), kk.div_ceil(128));
        let w = DeviceBuffer::alloc(gpu, experts * n * kk)?;
        w.fill_bytes(0x38)?;
        let ws = DeviceBuffer::from_slice(gpu, &vec![1e-3f32; experts * nb * kb])?;
        let max_pairs = TOKENS.iter().max().unwrap_or(&1) * top_k;
        let x = DeviceBuffer::from_slice(gpu, &super::bf16s(&rng.vec(max_pairs * kk, 1.0)))?;
        let (codes, scales) = (DeviceBuffer::alloc(gpu, max_pairs * kk)?, DeviceBuffer::alloc(gpu, max_pairs * kb * 4)?);
        let act = fp8::Fp8Act { codes: v(&codes), scales: v(&scales) };
        let c = DeviceBuffer::alloc(gpu, max_pairs * n * 4)?;
        let mode = if gathered { OutMode::Bf16 } else { OutMode::F32 };
        for tokens in TOKENS {
            let routed: Vec<Routed> = (0..ROUTINGS).map(|_| routing(k, rng, tokens, experts, top_k, moe::SKINNY_TILE_ROWS)).collect::<Result<_>>()?;
            let pairs = tokens * top_k;
            let a_total_rows = if gathered { tokens } else { pairs };
            let wt = fp8::Fp8Weight { codes: v(&w), scales: v(&ws) };
            let tiled = super::bench_fp8::median_us(gpu, &|i| {
                let r = &routed[i % ROUTINGS];
                fp8::quant_act(k, v(&x), false, act, a_total_rows, kk)?;
                let g = Grouped { a: act, a_total_rows, a_rows: gathered.then(|| (r.d.sorted_pairs, top_k)), w: wt, experts, pairs, c: v(&c), n, k: kk };
                fp8::grouped_gemm_on(k, false, &r.d, g, mode)
            })?;
            let streamed = super::bench_fp8::median_us(gpu, &|i| {
                let r = &routed[i % ROUTINGS];
                let g = Grouped { a: v(&x), a_total_rows, a_rows: gathered.then(|| (r.d.sorted_pairs, top_k)), w: wt, experts, pairs, c: v(&c), n, k: kk };
                fp8::grouped_stream(k, &r.d, g, mode)
            })?;
            let touched = routed.iter().map(|r| r.touched).sum::<usize>() as f64 / ROUTINGS as f64;
            let _ = writeln!(s, "| {name} | {n} x {kk} | {tokens} | {touched:.1} | {tiled:.1} | {streamed:.1} | {} |", versus(tiled, streamed, touched * (n * kk) as f64, copy));
        }
    }
    Ok(s)
}

fn grouped(k: &Kernels, rng: &mut Rng, copy: f64) -> Result<String> {
    let gpu = k.gpu();
    let mut s = format!("{} | copy {copy:.0} GB/s | grouped expert GEMM; weights of the touched experts over the time; {ROUTINGS} routings cycled\n", gpu.info.name);
    s += "| shape | n x k | tokens | experts touched | skinny µs | stream µs | stream / skinny speed | skinny GB/s (% copy) | stream GB/s (% copy) |\n|---|---|---|---|---|---|---|---|---|\n";
    for (name, experts, top_k, n, kk, gathered) in SHAPES {
        let w = DeviceBuffer::alloc(gpu, experts * n * kk * 2)?;
        w.fill_bytes(0x3c)?;
        let max_pairs = TOKENS.iter().max().unwrap_or(&1) * top_k;
        let a = DeviceBuffer::from_slice(gpu, &super::bf16s(&rng.vec(max_pairs * kk, 1.0)))?;
        let c = DeviceBuffer::alloc(gpu, max_pairs * n * 4)?;
        for tokens in TOKENS {
            let routed: Vec<Routed> = (0..ROUTINGS).map(|_| routing(k, rng, tokens, experts, top_k, moe::SKINNY_TILE_ROWS)).collect::<Result<_>>()?;
            let pairs = tokens * top_k;
            let time = |kernel: GroupedKernel| {
                super::bench_fp8::median_us(gpu, &|i| {
                    let r = &routed[i % ROUTINGS];
                    let (a_total_rows, a_rows) = if gathered { (tokens, Some((r.d.sorted_pairs, top_k))) } else { (pairs, None) };
                    let g = Grouped { a: v(&a), a_total_rows, a_rows, w: v(&w), experts, pairs, c: v(&c), n, k: kk };
                    moe::moe_gemm_with(k, kernel, &r.d, g, !gathered)
                })
            };
            let (skinny, stream) = (time(GroupedKernel::Skinny)?, time(GroupedKernel::Stream)?);
            let touched = routed.iter().map(|r| r.touched).sum::<usize>() as f64 / ROUTINGS as f64;
            let _ = writeln!(s, "| {name} | {n} x {kk} | {tokens} | {touched:.1} | {skinny:.1} | {stream:.1} | {} |", versus(skinny, stream, touched * (n * kk * 2) as f64, copy));
        }
    }
    Ok(s)
}

/// A timed row's tail: the speed of `ours` over `base` and each one's rate over `bytes` (GB/s and
/// its share of the copy bandwidth).
fn versus(base: f64, ours: f64, bytes: f64, copy: f64) -> String {
    let gbs = |us: f64| bytes / (us * 1e3);
    format!("{:.2}x | {:.0} ({:.0}%) | {:.0} ({:.0}%)", base / ours, gbs(base), 100.0 * gbs(base) / copy, gbs(ours), 100.0 * gbs(ours) / copy)
}
