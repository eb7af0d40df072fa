//! The fused small-batch router (`moe_route_small`: router GEMM, routing and dispatch in one
//! launch) on fresh random data: its logits against f64 sums, its expert choices and weights
//! against the engine's router run on those logits (so near-ties cannot flip the comparison),
//! and its dispatch (expert offsets, sorted pairs, pair positions, tile list) against one built
//! here from its choices; two launches back to back on the same counters, which must be zero
//! after. V2-Lite's, V3's and Kimi-K2's routers at 1 to 16 tokens, a rank's share of the experts,
//! an expert count off the kernel's groups of 16, and a single split.

use super::{v, Check, Rng};
use mlahost_cuda::gpu::DeviceBuffer;
use mlahost_cuda::kernels::moe::{max_tiles, Dispatch, RouteParams, SKINNY_TILE_ROWS};
use mlahost_cuda::kernels::moe_router::{self, Router};
use mlahost_cuda::module::Kernels;
use mlahost_cuda::Result;
use crate::kernels_moe::moe_cfg as cfg;
use mlahost_engine::config::{MoeConfig, TopkMethod};

/// Logits: f32 sums over up to 7,168 terms against f64, over the row's largest |logit|.
const TOL_LOGITS: f64 = 1e-5;

pub(crate) fn run_all(k: &Kernels, rng: &mut Rng) -> Vec<Check> {
    let cases = [
        ("greedy 64e top6", 1, 2048, cfg(TopkMethod::Greedy, 64, 6, 1, 1), None),
        ("greedy 64e top6", 16, 2048, cfg(TopkMethod::Greedy, 64, 6, 1, 1), Some(32..64)),
        ("group_limited_greedy 16e 4g top4", 7, 1100, cfg(TopkMethod::GroupLimitedGreedy, 16, 4, 4, 2), Some(4..8)),
        ("noaux_tc 256e 8g top8", 16, 7168, cfg(TopkMethod::NoauxTc, 256, 8, 8, 4), None),
        ("noaux_tc 256e 8g top8", 3, 7168, cfg(TopkMethod::NoauxTc, 256, 8, 8, 4), Some(96..128)),
        ("noaux_tc 384e top8 (Kimi-K2)", 16, 7168, cfg(TopkMethod::NoauxTc, 384, 8, 1, 1), None),
        ("greedy 20e top3, one split", 5, 512, cfg(TopkMethod::Greedy, 20, 3, 1, 1), Some(0..13)),
        ("greedy 20e top3", 16, 300, cfg(TopkMethod::Greedy, 20, 3, 1, 1), None),
    ];
    cases
        .into_iter()
        .map(|(name, t, hidden, c, local)| {
            let local = local.unwrap_or(0..c.n_routed_experts);
            one(k, rng, t, hidden, &c, local.clone()).unwrap_or_else(|e| crate::failed(&format!("moe_route_small {name}"), e))
        })
        .collect()
}

fn one(kern: &Kernels, rng: &mut Rng, t: usize, hidden: usize, c: &MoeConfig, local: std::ops::Range<usize>) -> Result<Check> {
    let gpu = kern.gpu();
    let (e, top_k) = (c.n_routed_experts, c.num_experts_per_tok);
    let p = RouteParams::from_config(c);
    let w = rng.vec(e * hidden, 0.05);
    let bias = (c.topk_method == TopkMethod::NoauxTc).then(|| rng.vec(e, 0.3));
    let (d_w, d_b) = (DeviceBuffer::from_slice(gpu, &w)?, bias.as_ref().map(|b| DeviceBuffer::from_slice(gpu, b)).transpose()?);
    let pairs = t * top_k;
    let buf = |n: usize| DeviceBuffer::alloc(gpu, n);
    let (logits, ids, weights) = (buf(t * e * 4)?, buf(pairs * 4)?, buf(pairs * 4)?);
    let part = buf(moe_router::part_bytes(t, hidden, e))?;
    let counters = buf(moe_router::COUNTERS * 4)?;
    counters.fill_bytes(0)?;
    let tile_rows = SKINNY_TILE_ROWS;
    let (off, sorted, ppos, tiles, nt) = (buf((e + 1) * 4)?, buf(pairs * 4)?, buf(pairs * 4)?, buf(max_tiles(pairs, e, tile_rows) * 12)?, buf(4)?);
    let d = Dispatch { expert_offsets: v(&off), sorted_pairs: v(&sorted), pair_pos: v(&ppos), tiles: v(&tiles), num_tiles: v(&nt), tile_rows };
    // two launches on the same counters; the second's inputs are checked
    let mut h = Vec::new();
    for _ in 0..2 {
        h = rng.vec(t * hidden, 1.0);
        let d_h = DeviceBuffer::from_slice(gpu, &h)?;
        ids.fill_bytes(0xff)?;
        let r = Router { h: v(&d_h), w: v(&d_w), bias: d_b.as_ref().map(v), logits: v(&logits), ids: v(&ids), weights: v(&weights), part: v(&part), counters: v(&counters), tokens: t, hidden };
        moe_router::route(kern, r, &p, local.clone(), &d)?;
        gpu.synchronize()?;
    }
    let got_logits = logits.to_vec::<f32>(t * e)?;
    let (got_ids, got_w) = (ids.to_vec::<i32>(pairs)?, weights.to_vec::<f32>(pairs)?);
    // logits against f64 sums
    let mut logit_err = 0f64;
    for ti in 0..t {
        let want: Vec<f64> = (0..e).map(|x| w[x * hidden..][..hidden].iter().zip(&h[ti * hidden..][..hidden]).map(|(a, b)| *a as f64 * *b as f64).sum()).collect();
        let scale = want.iter().fold(1e-30f64, |m, x| m.max(x.abs()));
        for (x, wv) in want.iter().enumerate() {
            logit_err = logit_err.max((got_logits[ti * e + x] as f64 - wv).abs() / scale);
        }
    }
    // choices and weights: the engine's router on the kernel's logits
    let (mut mismatched, mut werr) = (0usize, 0f64);
    for ti in 0..t {
        let want = mlahost_engine::cpu::route_logits(&got_logits[ti * e..(ti + 1) * e], bias.as_deref(), c);
        for (j, (we, ww)) in want.iter().enumerate() {
            if got_ids[ti * top_k + j] != *we as i32 {
                mismatched += 1;
            } else {
                werr = werr.max((got_w[ti * top_k + j] - ww).abs() as f64);
            }
        }
    }
    let dispatch_errors = dispatch_errors(&got_ids, e, &local, tile_rows, (&off, &sorted, &ppos, &tiles, &nt))?;
    let stuck = counters.to_vec::<u32>(moe_router::COUNTERS)?.iter().filter(|&&x| x != 0).count();
    let wrong = (mismatched + dispatch_errors + stuck) as f64;
    Ok(Check {
        name: format!("moe_route_small {} {t} tokens, hidden {hidden}, {e}e top{top_k}{}", method_name(c.topk_method), if local.len() < e { format!(", experts {local:?}") } else { String::new() }),
        error: if wrong > 0.0 { f64::INFINITY } else { logit_err.max(werr) },
        tolerance: TOL_LOGITS,
        detail: format!("logits {logit_err:.1e}; {mismatched} choices differ, weight err {werr:.1e}; {dispatch_errors} dispatch errors; {stuck} counters left non-zero"),
        informational: false,
    })
}

fn method_name(m: TopkMethod) -> &'static str {
    match m {
        TopkMethod::Greedy => "greedy",
        TopkMethod::GroupLimitedGreedy => "group_limited_greedy",
        TopkMethod::NoauxTc => "noaux_tc",
    }
}

/// Differences between the kernel's dispatch and the one its choices imply: offsets (prefix
/// counts), each pair at a position of its expert that holds it (or -1 off this rank), the tile
/// list of the rank's experts in order.
fn dispatch_errors(ids: &[i32], e: usize, local: &std::ops::Range<usize>, tile_rows: usize, bufs: (&DeviceBuffer, &DeviceBuffer, &DeviceBuffer, &DeviceBuffer, &DeviceBuffer)) -> Result<usize> {
    let (off, sorted, ppos, tiles, nt) = bufs;
    let pairs = ids.len();
    let (off, sorted, ppos) = (off.to_vec::<i32>(e + 1)?, sorted.to_vec::<i32>(pairs)?, ppos.to_vec::<i32>(pairs)?);
    let n_tiles = nt.to_vec::<i32>(1)?[0].max(0) as usize;
    let tiles = tiles.to_vec::<i32>(max_tiles(pairs, e, tile_rows) * 3)?;
    let mut counts = vec![0usize; e];
    for &x in ids {
        if x < 0 || x as usize >= e {
            return Ok(pairs);
        }
        counts[x as usize] += 1;
    }
    let mut errors = 0;
    let mut want_off = vec![0usize; e + 1];
    for x in 0..e {
        want_off[x + 1] = want_off[x] + counts[x];
    }
    errors += (0..=e).filter(|&x| off[x] as usize != want_off[x]).count();
    for (p, &x) in ids.iter().enumerate() {
        let x = x as usize;
        let want_local = local.contains(&x);
        let pos = ppos[p];
        let ok = if want_local { pos >= 0 && (want_off[x]..want_off[x + 1]).contains(&(pos as usize)) && sorted[pos as usize] == p as i32 } else { pos == -1 };
        errors += usize::from(!ok);
    }
    let mut want_tiles = Vec::new();
    for x in local.clone() {
        let mut s = 0;
        while s < counts[x] {
            want_tiles.extend_from_slice(&[(x - local.start) as i32, (want_off[x] + s) as i32, tile_rows.min(counts[x] - s) as i32]);
            s += tile_rows;
        }
    }
    errors += usize::from(n_tiles * 3 != want_tiles.len());
    errors += want_tiles.iter().zip(&tiles).filter(|(a, b)| a != b).count();
    Ok(errors)
}
