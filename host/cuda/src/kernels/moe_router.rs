//! Launcher of moe.cu's `moe_route_small`: a small batch's router GEMM (f32), routing and
//! dispatch in one launch of the step's programmatic chain, in place of cuBLAS, `moe_route` and
//! `moe_align` (three launches a MoE layer).

use super::moe::{Dispatch, RouteParams};
use super::{ensure, View};
use crate::module::{Arg, Kernels};
use crate::Result;

/// Tokens up to which the fused router runs (moe.cu RS_TOKENS).
pub const MAX_TOKENS: usize = 16;
/// Experts per CTA, columns of h per CTA, and the most experts it routes (RS_EXPERTS, RS_K,
/// RS_MAX_E).
const EXPERTS_PER_CTA: usize = 16;
const COLS_PER_CTA: usize = 512;
const MAX_EXPERTS: usize = 384;
/// Threads a CTA: a warp per expert (the last CTA's warps route a token each).
const THREADS: u32 = (EXPERTS_PER_CTA * 32) as u32;
/// Its dynamic shared memory (RS_SMEM): each warp's routing scratch of 1,536 floats, then the
/// dispatch's counts and cursors.
const SMEM: u32 = ((EXPERTS_PER_CTA * 1536 + 2 * MAX_EXPERTS) * 4) as u32;
/// Arrival counters it needs: one per expert group, and one for the groups.
pub const COUNTERS: usize = MAX_EXPERTS / EXPERTS_PER_CTA + 1;

/// The operands: `h` f32 `[tokens, hidden]`, `w` the router's f32 `[experts, hidden]`; `logits`
/// f32 `[tokens, experts]` (written, as the unfused path leaves it); `part` f32 scratch for the
/// splits' partials; `counters` zeroed u32s (left zeroed).
#[derive(Debug, Clone, Copy)]
pub struct Router {
    pub h: View,
    pub w: View,
    pub bias: Option<View>,
    pub logits: View,
    pub ids: View,
    pub weights: View,
    pub part: View,
    pub counters: View,
    pub tokens: usize,
    pub hidden: usize,
}

/// Whether the fused router takes this batch and model (else cuBLAS + `moe_route` + `moe_align`).
pub fn fits(tokens: usize, hidden: usize, p: &RouteParams) -> bool {
    tokens > 0 && tokens <= MAX_TOKENS && hidden % 4 == 0 && hidden > 0 && p.experts <= MAX_EXPERTS && p.top_k <= 64 && p.n_group <= 64
}

fn splits(hidden: usize) -> usize {
    hidden.div_ceil(COLS_PER_CTA)
}

/// Bytes of `part` the launch needs.
pub fn part_bytes(tokens: usize, hidden: usize, experts: usize) -> usize {
    splits(hidden) * tokens * experts * 4
}

/// Routes `r.tokens` tokens and dispatches their pairs to the experts in `local` (as
/// `moe::moe_align`).
pub fn route(k: &Kernels, r: Router, p: &RouteParams, local: std::ops::Range<usize>, d: &Dispatch) -> Result<()> {
    const K: &str = "moe_route_small";
    let Router { h, w, bias, logits, ids, weights, part, counters, tokens, hidden } = r;
    ensure(K, fits(tokens, hidden, p), || format!("{tokens} tokens, hidden {hidden}, {} experts: at most {MAX_TOKENS} tokens and {MAX_EXPERTS} experts, hidden a multiple of 4", p.experts))?;
    p.check(K)?;
    ensure(K, h.ptr % 16 == 0 && w.ptr % 16 == 0, || "h and the router weights must be 16-byte aligned (float4 loads)".into())?;
    let pairs = tokens * p.top_k;
    let groups = p.experts.div_ceil(EXPERTS_PER_CTA);
    let bias = bias.map(|b| b.need(K, "bias", p.experts * 4)).transpose()?.unwrap_or(0);
    let mut args = vec![
        Arg::Ptr(h.need(K, "h", tokens * hidden * 4)?),
        Arg::Ptr(w.need(K, "router", p.experts * hidden * 4)?),
        Arg::Ptr(logits.need(K, "logits", tokens * p.experts * 4)?),
        Arg::Ptr(part.need(K, "partials", part_bytes(tokens, hidden, p.experts))?),
        Arg::Ptr(counters.need(K, "counters", (groups + 1) * 4)?),
        Arg::Ptr(bias),
        Arg::Ptr(ids.need(K, "ids", pairs * 4)?),
        Arg::Ptr(weights.need(K, "weights", pairs * 4)?),
        Arg::I32(tokens as i32),
        Arg::I32(hidden as i32),
    ];
    args.extend(p.args());
    args.extend(d.args(K, pairs, p.experts, local)?);
    k.launch_step(K, (groups as u32, splits(hidden) as u32, 1), THREADS, SMEM, &args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn define(name: &str) -> usize {
        crate::sources::MOE.define(name)
    }

    #[test]
    fn limits_match_the_kernel_source() {
        assert_eq!(MAX_TOKENS, define("RS_TOKENS"));
        assert_eq!(EXPERTS_PER_CTA, define("RS_EXPERTS"));
        assert_eq!(COLS_PER_CTA, define("RS_K"));
        assert_eq!(MAX_EXPERTS, define("RS_MAX_E"));
        assert_eq!(SMEM as usize, (EXPERTS_PER_CTA * define("RS_WARP_FLOATS") + 2 * MAX_EXPERTS) * 4);
        assert!(COUNTERS * 4 <= mlahost_engine::capacity::ROUTER_COUNTER_BYTES as usize);
    }

    #[test]
    fn v3_kimi_and_v2_lite_fit_up_to_16_tokens() {
        let p = |experts, top_k, n_group| RouteParams { experts, top_k, n_group, topk_group: 1, method: 2, norm_topk: true, scaling: 1.0 };
        assert!(fits(16, 7168, &p(256, 8, 8)) && fits(1, 2048, &p(64, 6, 1)) && fits(16, 7168, &p(384, 8, 1)));
        assert!(!fits(17, 2048, &p(64, 6, 1)) && !fits(1, 2048, &p(512, 8, 1)) && !fits(1, 2050, &p(64, 6, 1)));
        assert_eq!(part_bytes(16, 7168, 256), 14 * 16 * 256 * 4);
    }
}
