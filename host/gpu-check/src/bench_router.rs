//! The MoE router at decode sizes (part of `--bench-gemm`): the forward pass's cuBLAS f32 GEMM,
//! `moe_route` and `moe_align` beside the fused `moe_route_small`, on V2-Lite's, V3's and
//! Kimi-K2's routers, over router copies that rotate past L2.

use super::{v, Rng};
use mlahost_cuda::blas::{Blas, Dtype, Linear, Operand};
use mlahost_cuda::gpu::DeviceBuffer;
use mlahost_cuda::kernels::moe::{self, max_tiles, Dispatch, RouteParams, SKINNY_TILE_ROWS};
use mlahost_cuda::kernels::moe_router::{self, Router};
use mlahost_cuda::module::Kernels;
use mlahost_cuda::Result;
use std::fmt::Write;

/// (name, hidden, experts, top k, groups, top groups, method: 0 greedy, 2 noaux_tc)
const SHAPES: [(&str, usize, usize, usize, usize, usize, i32); 3] = [
    ("V2-Lite", 2048, 64, 6, 1, 1, 0),
    ("V3", 7168, 256, 8, 8, 4, 2),
    ("Kimi-K2", 7168, 384, 8, 1, 1, 2),
];
const TOKENS: [usize; 5] = [1, 4, 8, 9, 16];

/// Returns a markdown table.
pub fn run(k: &Kernels, blas: &Blas, rng: &mut Rng) -> Result<String> {
    let gpu = k.gpu();
    let mut s = format!("\n{} | MoE router, routing and dispatch (f32 router weights)\n", gpu.info.name);
    s += "| model | tokens | cuBLAS + moe_route + moe_align µs | moe_route_small µs | speed |\n|---|---|---|---|---|\n";
    let buf = |n: usize| DeviceBuffer::alloc(gpu, n);
    for (name, hidden, e, top_k, n_group, topk_group, method) in SHAPES {
        let p = RouteParams { experts: e, top_k, n_group, topk_group, method, norm_topk: true, scaling: 2.5 };
        let copies = (256usize << 20).div_ceil(e * hidden * 4).clamp(2, 16);
        let ws: Vec<DeviceBuffer> = (0..copies).map(|_| DeviceBuffer::from_slice(gpu, &rng.vec(e * hidden, 0.05))).collect::<Result<_>>()?;
        let bias = (method == 2).then(|| DeviceBuffer::from_slice(gpu, &rng.vec(e, 0.3))).transpose()?;
        let t_max = moe_router::MAX_TOKENS;
        let h = DeviceBuffer::from_slice(gpu, &rng.vec(t_max * hidden, 1.0))?;
        let pairs_max = t_max * top_k;
        let (logits, ids, weights) = (buf(t_max * e * 4)?, buf(pairs_max * 4)?, buf(pairs_max * 4)?);
        let part = buf(moe_router::part_bytes(t_max, hidden, e))?;
        let counters = buf(moe_router::COUNTERS * 4)?;
        counters.fill_bytes(0)?;
        let tile_rows = SKINNY_TILE_ROWS;
        let (off, sorted, ppos, tiles, nt) = (buf((e + 1) * 4)?, buf(pairs_max * 4)?, buf(pairs_max * 4)?, buf(max_tiles(pairs_max, e, tile_rows) * 12)?, buf(4)?);
        let d = Dispatch { expert_offsets: v(&off), sorted_pairs: v(&sorted), pair_pos: v(&ppos), tiles: v(&tiles), num_tiles: v(&nt), tile_rows };
        for t in TOKENS {
            let unfused = super::bench_fp8::median_us(gpu, &|i| {
                let op = |ptr, ld| Operand { ptr, dtype: Dtype::F32, ld };
                blas.linear(Linear { m: t, n: e, k: hidden, a: op(h.ptr(), hidden), w: op(ws[i % copies].ptr(), hidden), c: op(logits.ptr(), e), beta: 0.0 })?;
                moe::moe_route(k, v(&logits), bias.as_ref().map(v), v(&ids), v(&weights), t, &p)?;
                moe::moe_align(k, v(&ids), t * top_k, e, 0..e, &d)
            })?;
            let fused = super::bench_fp8::median_us(gpu, &|i| {
                let r = Router { h: v(&h), w: v(&ws[i % copies]), bias: bias.as_ref().map(v), logits: v(&logits), ids: v(&ids), weights: v(&weights), part: v(&part), counters: v(&counters), tokens: t, hidden };
                moe_router::route(k, r, &p, 0..e, &d)
            })?;
            let _ = writeln!(s, "| {name} ({e} experts, top {top_k}) | {t} | {unfused:.1} | {fused:.1} | {:.2}x |", unfused / fused);
        }
    }
    Ok(s)
}
