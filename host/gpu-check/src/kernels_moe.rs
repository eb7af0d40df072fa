//! The MoE kernels against naive CPU references on fresh random data: routing (V2 greedy and
//! group-limited, V3 noaux_tc) against the engine's own router, and dispatch + grouped GEMMs +
//! combine against per-token expert MLPs.

use super::{bf16s, v, rel_err, round_bf16, Check, Rng};
use mlahost_cuda::gpu::DeviceBuffer;
use mlahost_cuda::kernels::layers;
use mlahost_cuda::kernels::moe::{self, max_tiles, Dispatch, Grouped, GroupedKernel, RouteParams};
use mlahost_cuda::module::Kernels;
use mlahost_cuda::Result;
use mlahost_engine::config::{MoeConfig, ScoringFunc, TopkMethod};

/// A MoE config for the routing checks (the fields the kernels read).
pub(crate) fn moe_cfg(method: TopkMethod, experts: usize, k: usize, n_group: usize, topk_group: usize) -> MoeConfig {
    MoeConfig {
        n_routed_experts: experts,
        n_shared_experts: 0,
        num_experts_per_tok: k,
        moe_intermediate_size: 32,
        first_k_dense_replace: 0,
        moe_layer_freq: 1,
        topk_method: method,
        scoring_func: if method == TopkMethod::NoauxTc { ScoringFunc::Sigmoid } else { ScoringFunc::Softmax },
        norm_topk_prob: method != TopkMethod::Greedy,
        routed_scaling_factor: 2.5,
        n_group,
        topk_group,
    }
}

/// Every MoE check: routing, then dispatch + grouped GEMMs + combine on each grouped kernel the
/// GPU runs (tile heights, part-filled tiles and k blocks, expert parallelism, the streaming
/// kernel's fused SiLU-and-mul).
pub(crate) fn run_all(kern: &Kernels, rng: &mut Rng) -> Vec<Check> {
    use crate::failed;
    let mut out = moe_route(kern, rng).unwrap_or_else(|e| vec![failed("moe_route", e)]);
    use GroupedKernel::{Skinny, Stream, Tiled, Wgmma};
    let (small, wide) = ((256, 96), (1096, 200));
    let cases = [
        (150, Tiled, 1, small),
        (150, Skinny, 1, small),
        (5, Skinny, 1, small),
        (150, Tiled, 3, small),
        (5, Skinny, 4, small),
        (150, Stream, 1, small),
        (5, Stream, 1, small),
        (1, Stream, 1, wide),
        (40, Stream, 1, wide),
        (5, Stream, 4, small),
        (150, Wgmma, 1, small),
        (150, Wgmma, 3, small),
        (300, Wgmma, 1, wide),
        (7, Wgmma, 1, wide),
        (150, Wgmma, 1, (64, 48)),
    ];
    let cc = kern.gpu().info.compute_capability;
    for (tokens, kernel, ranks, dims) in cases.into_iter().filter(|c| c.1.runs_on(cc)) {
        out.push(moe_experts(kern, rng, tokens, kernel, ranks, dims, false).unwrap_or_else(|e| failed("moe experts", e)));
    }
    // the combine with the next layer's input norm, bit for bit against the two launches
    for (tokens, dim) in [(1, 2048), (7, 1000), (130, 7168)] {
        out.push(combine_norm(kern, rng, tokens, dim).unwrap_or_else(|e| failed("moe_combine_norm", e)));
    }
    // the streaming kernel's fused SiLU-and-mul (inter a multiple of 32: 96, 224)
    for (tokens, ranks, dims) in [(5, 1, small), (40, 1, (1096, 224)), (5, 4, small)] {
        out.push(moe_experts(kern, rng, tokens, Stream, ranks, dims, true).unwrap_or_else(|e| failed("moe experts", e)));
    }
    out
}

fn moe_route(kern: &Kernels, rng: &mut Rng) -> Result<Vec<Check>> {
    let gpu = kern.gpu();
    let mut out = Vec::new();
    let cases = [
        ("greedy 64e top6", moe_cfg(TopkMethod::Greedy, 64, 6, 1, 1)),
        ("group_limited_greedy 16e 4g top4", moe_cfg(TopkMethod::GroupLimitedGreedy, 16, 4, 4, 2)),
        ("noaux_tc 256e 8g top8", moe_cfg(TopkMethod::NoauxTc, 256, 8, 8, 4)),
    ];
    for (name, cfg) in cases {
        let (t, e, k) = (300, cfg.n_routed_experts, cfg.num_experts_per_tok);
        let logits = rng.vec(t * e, 4.0);
        let bias = (cfg.topk_method == TopkMethod::NoauxTc).then(|| rng.vec(e, 0.3));
        let d_l = DeviceBuffer::from_slice(gpu, &logits)?;
        let d_b = bias.as_ref().map(|b| DeviceBuffer::from_slice(gpu, b)).transpose()?;
        let (d_ids, d_w) = (DeviceBuffer::alloc(gpu, t * k * 4)?, DeviceBuffer::alloc(gpu, t * k * 4)?);
        d_ids.fill_bytes(0xff)?;
        let p = RouteParams::from_config(&cfg);
        moe::moe_route(kern, v(&d_l), d_b.as_ref().map(v), v(&d_ids), v(&d_w), t, &p)?;
        let ids = d_ids.to_vec::<i32>(t * k)?;
        let w = d_w.to_vec::<f32>(t * k)?;
        let (mut mismatched, mut werr) = (0usize, 0f64);
        for ti in 0..t {
            let want = mlahost_engine::cpu::route_logits(&logits[ti * e..(ti + 1) * e], bias.as_deref(), &cfg);
            for (j, (we, ww)) in want.iter().enumerate() {
                if ids[ti * k + j] != *we as i32 {
                    mismatched += 1;
                } else {
                    werr = werr.max((w[ti * k + j] - ww).abs() as f64);
                }
            }
        }
        out.push(Check {
            name: format!("moe_route {name}"),
            error: mismatched as f64 + werr,
            tolerance: 1e-5,
            detail: format!("{t} tokens: {mismatched} expert choices differ, weight err {werr:.1e}"), informational: false });
    }
    Ok(out)
}

/// Dispatch + grouped GEMMs + combine against per-token expert MLPs, on `kernel` and its tiles
/// (`inter` = 96: k ends in a zero-filled part of a step or block; `hidden` = 1,096 and `inter` =
/// 200: more k blocks than the streaming kernel keeps in flight, a part-filled last block and a
/// part-filled column tile; 64 and 48: a single k stage). With `ranks` > 1 the experts are spread as expert parallelism
/// spreads them: each rank's share runs on its own (its weights only, the other pairs skipped)
/// and adds into the same output.
/// `glu`: the gate/up GEMM with SiLU-and-mul in its epilogue (`moe_gemm_glu`, the streaming
/// kernel) instead of the GEMM and `silu_mul`.
#[allow(clippy::too_many_arguments)]
fn moe_experts(kern: &Kernels, rng: &mut Rng, t: usize, kernel: GroupedKernel, ranks: usize, (hidden, inter): (usize, usize), glu: bool) -> Result<Check> {
    let gpu = kern.gpu();
    let tile_rows = kernel.tile_rows();
    let (e, k) = (12usize, 3usize);
    let h = round_bf16(&rng.vec(t * hidden, 1.0));
    let wgu = round_bf16(&rng.vec(e * 2 * inter * hidden, 0.1));
    let wd = round_bf16(&rng.vec(e * hidden * inter, 0.1));
    // random choices with every expert but the last used (an expert with no tokens)
    let mut ids = Vec::with_capacity(t * k);
    for _ in 0..t {
        let mut pick: Vec<i32> = (0..(e - 1) as i32).collect();
        rng.shuffle(&mut pick);
        ids.extend_from_slice(&pick[..k]);
    }
    let w: Vec<f32> = (0..t * k).map(|_| rng.sym().abs()).collect();
    let x0 = rng.vec(t * hidden, 1.0);
    let pairs = t * k;
    let buf = |n: usize| DeviceBuffer::alloc(gpu, n);
    let (d_h, d_gu, d_d) = (DeviceBuffer::from_slice(gpu, &bf16s(&h))?, DeviceBuffer::from_slice(gpu, &bf16s(&wgu))?, DeviceBuffer::from_slice(gpu, &bf16s(&wd))?);
    let (d_ids, d_w, d_x) = (DeviceBuffer::from_slice(gpu, &ids)?, DeviceBuffer::from_slice(gpu, &w)?, DeviceBuffer::from_slice(gpu, &x0)?);
    let (off, sorted, ppos, tiles, nt) = (buf((e + 1) * 4)?, buf(pairs * 4)?, buf(pairs * 4)?, buf(max_tiles(pairs, e, tile_rows) * 12)?, buf(4)?);
    let (y, act, z) = (buf(pairs * 2 * inter * 2)?, buf(pairs * inter * 2)?, buf(pairs * hidden * 4)?);
    let d = Dispatch { expert_offsets: v(&off), sorted_pairs: v(&sorted), pair_pos: v(&ppos), tiles: v(&tiles), num_tiles: v(&nt), tile_rows };
    for r in 0..ranks {
        let local = r * e / ranks..(r + 1) * e / ranks;
        let held = local.len();
        moe::moe_align(kern, v(&d_ids), pairs, e, local.clone(), &d)?;
        let (gu_w, d_w_) = (v(&d_gu).at(local.start * 2 * inter * hidden * 2), v(&d_d).at(local.start * hidden * inter * 2));
        if glu {
            let gate_up = Grouped { a: v(&d_h), a_total_rows: t, a_rows: Some((v(&sorted), k)), w: gu_w, experts: held, pairs, c: v(&act), n: 2 * inter, k: hidden };
            moe::moe_gemm_glu(kern, &d, gate_up)?;
        } else {
            let gate_up = Grouped { a: v(&d_h), a_total_rows: t, a_rows: Some((v(&sorted), k)), w: gu_w, experts: held, pairs, c: v(&y), n: 2 * inter, k: hidden };
            moe::moe_gemm_with(kern, kernel, &d, gate_up, false)?;
            layers::silu_mul(kern, v(&y), v(&act), pairs, inter)?;
        }
        let down = Grouped { a: v(&act), a_total_rows: pairs, a_rows: None, w: d_w_, experts: held, pairs, c: v(&z), n: hidden, k: inter };
        moe::moe_gemm_with(kern, kernel, &d, down, true)?;
        moe::moe_combine(kern, v(&z), v(&ppos), v(&d_w), v(&d_x), t, k, hidden)?;
    }
    let got = d_x.to_vec::<f32>(t * hidden)?;
    let mut want = x0.clone();
    for ti in 0..t {
        let hr = &h[ti * hidden..(ti + 1) * hidden];
        for j in 0..k {
            let ex = ids[ti * k + j] as usize;
            let gu: Vec<f32> = (0..2 * inter)
                .map(|n| wgu[(ex * 2 * inter + n) * hidden..][..hidden].iter().zip(hr).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>() as f32)
                .collect();
            let gu = round_bf16(&gu);
            let a = round_bf16(&(0..inter).map(|i| gu[i] / (1.0 + (-gu[i]).exp()) * gu[inter + i]).collect::<Vec<_>>());
            for n in 0..hidden {
                let y: f64 = wd[(ex * hidden + n) * inter..][..inter].iter().zip(&a).map(|(p, q)| *p as f64 * *q as f64).sum();
                want[ti * hidden + n] += w[ti * k + j] * y as f32;
            }
        }
    }
    let delta_got: Vec<f32> = got.iter().zip(&x0).map(|(a, b)| a - b).collect();
    let delta_want: Vec<f32> = want.iter().zip(&x0).map(|(a, b)| a - b).collect();
    Ok(Check {
        name: format!(
            "moe align + grouped gemm ({kernel:?}, {tile_rows}-row tiles{}) + combine{}",
            if glu { ", SiLU-and-mul fused" } else { "" },
            if ranks > 1 { format!(", experts over {ranks} ranks") } else { String::new() }
        ),
        error: rel_err(&delta_got, &delta_want),
        tolerance: 1e-2,
        detail: format!("{t} tokens, {e} experts (one unused), top {k}, {hidden}->{inter}"), informational: false })
}

/// `moe_combine_norm` against `moe_combine` then `rmsnorm_residual` on the same inputs: the
/// residual rows and the bf16 norm must be the same bits (pairs held elsewhere, -1, skipped).
fn combine_norm(kern: &Kernels, rng: &mut Rng, t: usize, dim: usize) -> Result<Check> {
    let gpu = kern.gpu();
    let k = 6;
    let pairs = t * k;
    let z = rng.vec(pairs * dim, 1.0);
    let mut pos: Vec<i32> = (0..pairs as i32).collect();
    rng.shuffle(&mut pos);
    for p in pos.iter_mut().step_by(5) {
        *p = -1;
    }
    let w: Vec<f32> = (0..pairs).map(|_| rng.sym().abs()).collect();
    let x0 = rng.vec(t * dim, 3.0);
    let norm: Vec<f32> = (0..dim).map(|_| 0.5 + rng.sym().abs()).collect();
    let up = |x: &[f32]| DeviceBuffer::from_slice(gpu, x);
    let (d_z, d_w, d_norm, d_pos) = (up(&z)?, up(&w)?, up(&norm)?, DeviceBuffer::from_slice(gpu, &pos)?);
    let (x_two, x_one) = (up(&x0)?, up(&x0)?);
    let (h_two, h_one) = (DeviceBuffer::alloc(gpu, t * dim * 2)?, DeviceBuffer::alloc(gpu, t * dim * 2)?);
    h_one.fill_bytes(0xff)?;
    let eps = 1e-6;
    moe::moe_combine(kern, v(&d_z), v(&d_pos), v(&d_w), v(&x_two), t, k, dim)?;
    layers::rmsnorm_residual(kern, layers::RmsNorm::rows(v(&x_two), v(&d_norm), v(&h_two), t, dim, eps))?;
    moe::moe_combine_norm(kern, v(&d_z), v(&d_pos), v(&d_w), v(&x_one), t, k, dim, v(&d_norm), v(&h_one), eps)?;
    let x_differ = x_two.to_vec::<u32>(t * dim)?.iter().zip(x_one.to_vec::<u32>(t * dim)?).filter(|(a, b)| **a != *b).count();
    let h_differ = h_two.to_vec::<u16>(t * dim)?.iter().zip(h_one.to_vec::<u16>(t * dim)?).filter(|(a, b)| **a != *b).count();
    Ok(Check {
        name: format!("moe_combine_norm {t} tokens x {dim} vs moe_combine + rmsnorm_residual"),
        error: (x_differ + h_differ) as f64,
        tolerance: 0.0,
        detail: format!("{x_differ} residual values and {h_differ} normed values differ in their bits"),
        informational: false,
    })
}
