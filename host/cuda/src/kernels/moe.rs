//! Launchers of moe.cu: routing, dispatch, the grouped expert GEMM and the combine.

use super::{ensure, View};
use crate::module::{Arg, Kernels};
use crate::Result;
use mlahost_engine::config::{MoeConfig, TopkMethod};

/// Rows per tile of `moe_gemm` (prefill-sized batches).
pub const TILE_ROWS: usize = 64;
/// Rows per tile of `moe_gemm_skinny` (a few tokens per expert: decode).
pub const SKINNY_TILE_ROWS: usize = mlahost_engine::capacity::MOE_MIN_TILE_ROWS as usize;
/// Batches of at most this many tokens use the skinny tiles: at most 16 rows per expert for up
/// to 16 tokens; beyond, an expert's rows split into several tiles that each stream its weights
/// (mostly from L2, as the tiles run together).
pub const SKINNY_MAX_TOKENS: usize = 64;
const TILE_COLS: usize = 128;
/// The grouped GEMM's k step: an expert's inner width must be a multiple of it.
pub const TILE_K: usize = 32;
const SKINNY_SMEM: u32 = 4 * (16 + 128) * 72 * 2; // moe.cu SKINNY_SMEM

/// Routing parameters (mirror of the engine's MoE config).
#[derive(Debug, Clone, Copy)]
pub struct RouteParams {
    pub experts: usize,
    pub top_k: usize,
    pub n_group: usize,
    pub topk_group: usize,
    /// 0 greedy, 1 group_limited_greedy, 2 noaux_tc.
    pub method: i32,
    pub norm_topk: bool,
    pub scaling: f32,
}

impl RouteParams {
    /// The kernel's parameters for a model's MoE config (group counts of 0 read as 1).
    pub fn from_config(mc: &MoeConfig) -> Self {
        let n_group = mc.n_group.max(1);
        Self {
            experts: mc.n_routed_experts,
            top_k: mc.num_experts_per_tok,
            n_group,
            topk_group: mc.topk_group.clamp(1, n_group),
            method: match mc.topk_method {
                TopkMethod::Greedy => 0,
                TopkMethod::GroupLimitedGreedy => 1,
                TopkMethod::NoauxTc => 2,
            },
            norm_topk: mc.norm_topk_prob,
            scaling: mc.routed_scaling_factor,
        }
    }
}

impl RouteParams {
    /// What every routing kernel needs (moe_routing.cuh): at most 1,024 experts, 64 chosen and
    /// 64 groups, the experts split evenly into groups.
    pub(crate) fn check(&self, kernel: &'static str) -> Result<()> {
        let p = self;
        ensure(kernel, p.experts <= 1024 && p.top_k <= 64 && p.n_group <= 64 && p.n_group >= 1, || "experts <= 1024, top_k <= 64, groups 1..=64".into())?;
        ensure(kernel, p.experts % p.n_group == 0 && p.topk_group <= p.n_group && p.top_k <= p.experts, || {
            format!("{} experts in {} groups, top {} of groups, top {}", p.experts, p.n_group, p.topk_group, p.top_k)
        })
    }

    /// The routing kernels' parameter arguments, in their order (moe_routing.cuh RouteArgs).
    pub(crate) fn args(&self) -> [Arg; 7] {
        let p = self;
        [Arg::I32(p.experts as i32), Arg::I32(p.top_k as i32), Arg::I32(p.n_group as i32), Arg::I32(p.topk_group as i32), Arg::I32(p.method), Arg::I32(p.norm_topk as i32), Arg::F32(p.scaling)]
    }
}

/// `logits [T, E]` f32 → `ids [T, k]` i32, `weights [T, k]` f32.
pub fn moe_route(k: &Kernels, logits: View, bias: Option<View>, ids: View, weights: View, tokens: usize, p: &RouteParams) -> Result<()> {
    const K: &str = "moe_route";
    p.check(K)?;
    let bias = bias.map(|b| b.need(K, "bias", p.experts * 4)).transpose()?.unwrap_or(0);
    let mut args = vec![
        Arg::Ptr(logits.need(K, "logits", tokens * p.experts * 4)?),
        Arg::Ptr(bias),
        Arg::Ptr(ids.need(K, "ids", tokens * p.top_k * 4)?),
        Arg::Ptr(weights.need(K, "weights", tokens * p.top_k * 4)?),
    ];
    args.extend(p.args());
    k.launch_step(K, (tokens as u32, 1, 1), 32, 0, &args)
}

/// Upper bound on the GEMM tiles of `pairs` rows over `experts` experts, `tile_rows` per tile.
pub fn max_tiles(pairs: usize, experts: usize, tile_rows: usize) -> usize {
    mlahost_engine::capacity::moe_max_tiles(pairs as u64, experts as u64, tile_rows as u64) as usize
}

/// The tile height for a batch of `tokens` tokens: skinny tiles for decode-sized batches.
/// `MLAHOST_MOE_TILE_ROWS=16|64` forces one (dev: A/B timing from one binary).
pub fn tile_rows_for(tokens: usize) -> usize {
    static FORCED: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
    let forced = FORCED.get_or_init(|| {
        std::env::var("MLAHOST_MOE_TILE_ROWS").ok().and_then(|v| v.parse().ok()).filter(|&r| r == TILE_ROWS || r == SKINNY_TILE_ROWS)
    });
    if let Some(r) = *forced {
        return r;
    }
    if tokens <= SKINNY_MAX_TOKENS {
        SKINNY_TILE_ROWS
    } else {
        TILE_ROWS
    }
}

/// Dispatch buffers (all i32) and the tile height `moe_align` cuts them into (`TILE_ROWS` or
/// `SKINNY_TILE_ROWS`), which also picks the GEMM kernel.
#[derive(Debug, Clone, Copy)]
pub struct Dispatch {
    pub expert_offsets: View,
    pub sorted_pairs: View,
    pub pair_pos: View,
    pub tiles: View,
    pub num_tiles: View,
    pub tile_rows: usize,
}

impl Dispatch {
    /// The dispatch kernels' output and tiling arguments, in their order (moe_routing.cuh
    /// align_pairs), after checking the experts in `local` and the tile height.
    pub(crate) fn args(&self, kernel: &'static str, pairs: usize, experts: usize, local: std::ops::Range<usize>) -> Result<[Arg; 8]> {
        let d = self;
        ensure(kernel, local.end <= experts && !local.is_empty(), || format!("local experts {local:?} of {experts}"))?;
        ensure(kernel, d.tile_rows == TILE_ROWS || d.tile_rows == SKINNY_TILE_ROWS, || format!("tiles of {} rows", d.tile_rows))?;
        Ok([
            Arg::Ptr(d.expert_offsets.need(kernel, "expert offsets", (experts + 1) * 4)?),
            Arg::Ptr(d.sorted_pairs.need(kernel, "sorted pairs", pairs * 4)?),
            Arg::Ptr(d.pair_pos.need(kernel, "pair positions", pairs * 4)?),
            Arg::Ptr(d.tiles.need(kernel, "tiles", max_tiles(pairs, experts, d.tile_rows) * 3 * 4)?),
            Arg::Ptr(d.num_tiles.need(kernel, "tile count", 4)?),
            Arg::I32(d.tile_rows as i32),
            Arg::I32(local.start as i32),
            Arg::I32(local.len() as i32),
        ])
    }
}

/// Sorts the pairs by expert and lists the GEMM tiles of the experts in `local` (all of them
/// without expert parallelism; tile expert indices relative to `local.start`).
pub fn moe_align(k: &Kernels, ids: View, pairs: usize, experts: usize, local: std::ops::Range<usize>, d: &Dispatch) -> Result<()> {
    const K: &str = "moe_align";
    ensure(K, experts <= 1024, || "at most 1024 experts".into())?;
    let mut args = vec![Arg::Ptr(ids.need(K, "ids", pairs * 4)?), Arg::I32(pairs as i32), Arg::I32(experts as i32)];
    args.extend(d.args(K, pairs, experts, local)?);
    k.launch_step(K, (1, 1, 1), 1024, 0, &args)
}

/// A grouped GEMM over `moe_align`'s dispatched pairs: `C[p, :n] = A[row(p), :k] · W[e(p)]^T`.
/// `A` and `W` are bf16 `View`s (`moe_gemm`) or FP8 codes with scales (`fp8::grouped_gemm`).
#[derive(Debug, Clone, Copy)]
pub struct Grouped<A, W> {
    pub a: A,
    /// Rows `a` holds.
    pub a_total_rows: usize,
    /// `Some((sorted_pairs, top_k))` gathers token rows; None reads `a` in sorted pair order.
    pub a_rows: Option<(View, usize)>,
    /// `[experts, n, k]`.
    pub w: W,
    pub experts: usize,
    pub pairs: usize,
    pub c: View,
    pub n: usize,
    pub k: usize,
}

/// The bf16 grouped GEMM kernels, by the tile height they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupedKernel {
    /// `moe_gemm`: 64-row tiles by 128 columns (prefill).
    Tiled,
    /// `moe_gemm_skinny`: 16-row tiles by 128 columns, weights through 4 smem stages.
    Skinny,
    /// `moe_gemm_stream` (bf16_stream.cu): 16-row tiles by 64 columns, weights streamed from
    /// global memory into mma fragments.
    Stream,
    /// `moe_gemm_wgmma` (moe_wgmma.cu, Hopper): 64-row tiles by 256 columns on warpgroup MMAs,
    /// four 40 KB cp.async stages.
    Wgmma,
}

impl GroupedKernel {
    /// The forward pass's kernel for `tile_rows` on a GPU with (`hopper`) or without warpgroup
    /// MMAs: the streaming kernels for 16-row tiles (`moe_gemm_stream`, and for FP8 experts
    /// `fp8_grouped_stream`) only with `MLAHOST_MOE_STREAM=1`, the wgmma kernels for 64-row
    /// tiles (`moe_gemm_wgmma`, `fp8_grouped_wgmma`) only with `MLAHOST_MOE_WGMMA=1`, until each
    /// has been measured against the kernel it would replace on a GPU.
    pub fn for_tiles(tile_rows: usize, hopper: bool) -> Self {
        static STREAM: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        static WGMMA: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        let on = |cell: &'static std::sync::OnceLock<bool>, var: &str| *cell.get_or_init(|| std::env::var(var).is_ok_and(|v| v == "1"));
        match tile_rows {
            SKINNY_TILE_ROWS if on(&STREAM, "MLAHOST_MOE_STREAM") => Self::Stream,
            SKINNY_TILE_ROWS => Self::Skinny,
            _ if hopper && on(&WGMMA, "MLAHOST_MOE_WGMMA") => Self::Wgmma,
            _ => Self::Tiled,
        }
    }

    /// Whether the kernel runs on a GPU of compute capability `cc`: the wgmma kernel only on
    /// sm_90 (built for sm_90a; empty for any other target, later ones included).
    pub fn runs_on(self, cc: (i32, i32)) -> bool {
        self != Self::Wgmma || cc == (9, 0)
    }

    pub fn tile_rows(self) -> usize {
        match self {
            Self::Tiled | Self::Wgmma => TILE_ROWS,
            Self::Skinny | Self::Stream => SKINNY_TILE_ROWS,
        }
    }

    /// Name, columns per CTA, dynamic shared memory and the inner width's required multiple.
    pub fn launch_shape(self) -> (&'static str, usize, u32, usize) {
        match self {
            Self::Tiled => ("moe_gemm", TILE_COLS, 0, TILE_K),
            Self::Skinny => ("moe_gemm_skinny", TILE_COLS, SKINNY_SMEM, 8),
            Self::Stream => ("moe_gemm_stream", STREAM_TILE_COLS, 0, 8),
            Self::Wgmma => ("moe_gemm_wgmma", WGMMA_TILE_COLS, WGMMA_SMEM, 8),
        }
    }
}

/// Whether the forward pass runs the dispatch's tiles on the streaming kernels
/// (`GroupedKernel::for_tiles`): the bf16 one may then fuse SiLU-and-mul (`moe_gemm_glu`), the
/// FP8 one (`fp8::grouped_stream`) takes bf16 rows.
pub fn streams(kern: &Kernels, d: &Dispatch) -> bool {
    GroupedKernel::for_tiles(d.tile_rows, kern.gpu().is_hopper()) == GroupedKernel::Stream
}

/// Output columns per CTA of `moe_gemm_stream`.
const STREAM_TILE_COLS: usize = 64;
/// Output columns per CTA of the wgmma grouped kernels (bf16 and FP8), and their dynamic shared
/// memory (moe_wgmma.cu MW_SMEM: four stages of 64 + 256 rows of 128 bytes, + 1 KB of alignment
/// slack).
const WGMMA_TILE_COLS: usize = 256;
const WGMMA_SMEM: u32 = 4 * (64 + 256) * 128 + 1024;

/// The wgmma grouped kernels' columns per CTA and dynamic shared memory.
pub(crate) fn wgmma_tile() -> (usize, u32) {
    (WGMMA_TILE_COLS, WGMMA_SMEM)
}

/// `Grouped` with bf16 operands; `c` is f32 when `c_f32`, else bf16; the kernel the forward
/// pass chooses for the dispatch's tiles (`GroupedKernel::for_tiles`).
pub fn moe_gemm(kern: &Kernels, d: &Dispatch, g: Grouped<View, View>, c_f32: bool) -> Result<()> {
    moe_gemm_with(kern, GroupedKernel::for_tiles(d.tile_rows, kern.gpu().is_hopper()), d, g, c_f32)
}

/// `moe_gemm` on a given kernel (checks and benchmarks), which must match the dispatch's tiles.
pub fn moe_gemm_with(kern: &Kernels, kernel: GroupedKernel, d: &Dispatch, g: Grouped<View, View>, c_f32: bool) -> Result<()> {
    grouped_launch(kern, kernel, d, g, c_f32, false)
}

/// The expert gate/up GEMM with SiLU-and-mul in its epilogue (`moe_gemm_stream` only): `g.w` is
/// the stacked [gate | up] weights (n = 2 inter, inter a multiple of 32) and `g.c` gets
/// silu(gate) * up, bf16 `[pairs, n / 2]`, instead of the pair and a separate `silu_mul`.
pub fn moe_gemm_glu(kern: &Kernels, d: &Dispatch, g: Grouped<View, View>) -> Result<()> {
    grouped_launch(kern, GroupedKernel::Stream, d, g, false, true)
}

fn grouped_launch(kern: &Kernels, kernel: GroupedKernel, d: &Dispatch, g: Grouped<View, View>, c_f32: bool, glu: bool) -> Result<()> {
    let Grouped { a, a_total_rows, a_rows, w, experts, pairs, c, n, k } = g;
    const K: &str = "moe_gemm";
    ensure(K, !glu || (kernel == GroupedKernel::Stream && n % 64 == 0 && !c_f32), || format!("SiLU-and-mul on {kernel:?} over {n} columns: the streaming kernel, a multiple of 64, bf16 out"))?;
    ensure(K, kernel.tile_rows() == d.tile_rows, || format!("{kernel:?} runs {}-row tiles, the dispatch has {}", kernel.tile_rows(), d.tile_rows))?;
    ensure(K, kernel.runs_on(kern.gpu().info.compute_capability), || format!("{kernel:?} needs sm_90a"))?;
    let (name, cols, smem, step) = kernel.launch_shape();
    ensure(K, k % step == 0 && k > 0, || format!("inner dimension {k} must be a multiple of {step}"))?;
    let (rows_ptr, div) = match a_rows {
        Some((r, div)) => (r.need(K, "row index", pairs * 4)?, div as i32),
        None => (0, 1),
    };
    let tiles = max_tiles(pairs, experts, d.tile_rows);
    let elem = if c_f32 { 4 } else { 2 };
    let out_cols = if glu { n / 2 } else { n };
    let mut args = vec![
        Arg::Ptr(a.need(K, "a", a_total_rows * k * 2)?),
        Arg::Ptr(rows_ptr),
        Arg::I32(div),
        Arg::Ptr(w.need(K, "weights", experts * n * k * 2)?),
        Arg::Ptr(d.tiles.need(K, "tiles", tiles * 3 * 4)?),
        Arg::Ptr(d.num_tiles.need(K, "tile count", 4)?),
        Arg::Ptr(c.need(K, "c", pairs * out_cols * elem)?),
        Arg::I32(c_f32 as i32),
        Arg::I32(n as i32),
        Arg::I32(k as i32),
    ];
    if kernel == GroupedKernel::Stream {
        args.push(Arg::I32(if glu { (n / 2) as i32 } else { 0 })); // its glu_inter
    }
    kern.launch_step(name, (n.div_ceil(cols) as u32, tiles as u32, 1), 256, smem, &args)
}

/// `x[t] += Σ_j weights[t, j] · z[pair_pos[t·k + j]]` over the pairs with a position (this rank's experts).
#[allow(clippy::too_many_arguments)]
pub fn moe_combine(k: &Kernels, z: View, pair_pos: View, weights: View, x: View, tokens: usize, top_k: usize, dim: usize) -> Result<()> {
    const K: &str = "moe_combine";
    k.launch_step(K, (tokens as u32, 1, 1), 256, 0, &combine_args(K, z, pair_pos, weights, x, tokens, top_k, dim)?)
}

/// The combine kernels' common arguments, checked.
#[allow(clippy::too_many_arguments)]
fn combine_args(kernel: &'static str, z: View, pair_pos: View, weights: View, x: View, tokens: usize, top_k: usize, dim: usize) -> Result<Vec<Arg>> {
    Ok(vec![
        Arg::Ptr(z.need(kernel, "z", tokens * top_k * dim * 4)?),
        Arg::Ptr(pair_pos.need(kernel, "pair positions", tokens * top_k * 4)?),
        Arg::Ptr(weights.need(kernel, "weights", tokens * top_k * 4)?),
        Arg::Ptr(x.need(kernel, "x", tokens * dim * 4)?),
        Arg::I32(top_k as i32),
        Arg::I32(dim as i32),
    ])
}

/// Whether the forward pass ends a MoE layer with `moe_combine_norm` where it can: only with
/// `MLAHOST_COMBINE_NORM=1` until measured on a GPU.
pub fn combine_norm_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("MLAHOST_COMBINE_NORM").is_ok_and(|v| v == "1"))
}

/// `moe_combine`, then `out[t] = rmsnorm(x[t]) * norm_weight` (bf16, as `layers::rmsnorm_residual`
/// writes it, bit for bit) for the next layer's attention: one launch instead of two.
#[allow(clippy::too_many_arguments)]
pub fn moe_combine_norm(k: &Kernels, z: View, pair_pos: View, weights: View, x: View, tokens: usize, top_k: usize, dim: usize, norm_weight: View, out: View, eps: f32) -> Result<()> {
    const K: &str = "moe_combine_norm";
    let mut args = combine_args(K, z, pair_pos, weights, x, tokens, top_k, dim)?;
    args.extend([Arg::Ptr(norm_weight.need(K, "norm weight", dim * 4)?), Arg::Ptr(out.need(K, "out", tokens * dim * 2)?), Arg::F32(eps)]);
    k.launch_step(K, (tokens as u32, 1, 1), 256, 0, &args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launch_shapes_match_the_kernel_sources() {
        let wg = &crate::sources::MOE_WGMMA;
        let (bm, bn, bk, stages) = (wg.define("MW_BM"), wg.define("MW_BN"), wg.define("MW_BK"), wg.define("MW_STAGES"));
        assert_eq!(GroupedKernel::Wgmma.tile_rows(), bm);
        assert_eq!(wgmma_tile(), (bn, (stages * (bm + bn) * bk * 2 + 1024) as u32));
        let moe = &crate::sources::MOE;
        let (sbm, sbn, sbk, sst) = (moe.define("SKINNY_BM"), moe.define("SKINNY_BN"), moe.define("SKINNY_BK"), moe.define("SKINNY_STAGES"));
        assert_eq!(SKINNY_SMEM as usize, sst * (sbm + sbn) * (sbk + 8) * 2);
        assert_eq!((GroupedKernel::Skinny.tile_rows(), TILE_COLS), (sbm, sbn));
        assert_eq!(GroupedKernel::Stream.tile_rows(), crate::sources::BF16_STREAM.define("STREAM_ROWS"));
    }

    #[test]
    fn the_wgmma_kernel_is_chosen_only_on_hopper() {
        assert!(!GroupedKernel::Wgmma.runs_on((8, 0)) && !GroupedKernel::Wgmma.runs_on((10, 0)));
        assert!(GroupedKernel::Wgmma.runs_on((9, 0)) && GroupedKernel::Tiled.runs_on((8, 0)));
        // without its switch (the test environment sets none) the forward pass keeps moe_gemm
        if std::env::var_os("MLAHOST_MOE_WGMMA").is_none() {
            assert_eq!(GroupedKernel::for_tiles(TILE_ROWS, true), GroupedKernel::Tiled);
        }
        assert_eq!(GroupedKernel::for_tiles(TILE_ROWS, false), GroupedKernel::Tiled);
    }
}
