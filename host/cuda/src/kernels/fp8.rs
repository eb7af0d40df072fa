//! Launchers of fp8_gemm.cu (activation quantization and the block-scaled FP8 GEMMs: dense with
//! split-k, or grouped over MoE experts on moe_align's tile list) and fp8_skinny.cu (dense linears
//! of decode-sized batches from bf16 activations in one launch).

use super::{ensure, View};
use crate::module::{Arg, Kernels};
use crate::Result;

/// Weight and activation scale blocks (DeepSeek-V3's `weight_block_size` [128, 128]).
pub const BLOCK: usize = 128;
const TILE_COLS: usize = 128;
const SMEM: u32 = 82_944; // fp8_gemm.cu: STAGES * (BM + 128) * 144 for both kernels
/// Rows at or below which a dense GEMM uses 16-row tiles.
const SKINNY_ROWS: usize = 16;

/// How a GEMM writes C.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutMode {
    Bf16 = 0,
    F32 = 1,
    /// `C += A · W^T` in f32 (the residual stream).
    F32Add = 2,
}

impl OutMode {
    pub fn lt(self) -> crate::blas_lt::LtOut {
        match self {
            OutMode::Bf16 => crate::blas_lt::LtOut::Bf16,
            OutMode::F32 => crate::blas_lt::LtOut::F32,
            OutMode::F32Add => crate::blas_lt::LtOut::F32Add,
        }
    }

    pub(crate) fn elem(self) -> usize {
        if self == OutMode::Bf16 {
            2
        } else {
            4
        }
    }
}

/// A block-scaled FP8 weight (or a stack of `experts` of them): `[n, k]` e4m3 codes per expert
/// and `[ceil(n/128), ceil(k/128)]` f32 scales (value = code x scale).
#[derive(Debug, Clone, Copy)]
pub struct Fp8Weight {
    pub codes: View,
    pub scales: View,
}

/// Activations quantized per row per 128 channels: `[m, k]` e4m3 and `[m, ceil(k/128)]` f32.
#[derive(Debug, Clone, Copy)]
pub struct Fp8Act {
    pub codes: View,
    pub scales: View,
}

fn check_gpu(k: &Kernels, name: &'static str) -> Result<()> {
    let cc = k.gpu().info.compute_capability;
    ensure(name, cc >= (8, 9), || format!("fp8 tensor cores need sm_89 or newer, this GPU is sm_{}{}", cc.0, cc.1))
}

/// `want` k splits over `kb` k blocks made even: (splits, k blocks per split), every split
/// non-empty (what the kernels' `kb_per_split` argument takes; at least one of each).
pub(crate) fn even_splits(want: usize, kb: usize) -> (usize, usize) {
    let per = kb.div_ceil(want.clamp(1, kb.max(1))).max(1);
    (kb.div_ceil(per).max(1), per)
}

/// `x [m, k]` (bf16, or f32 when `x_f32`) -> `out` (scales `[m][k/128]`).
pub fn quant_act(kern: &Kernels, x: View, x_f32: bool, out: Fp8Act, m: usize, k: usize) -> Result<()> {
    quant_act_ordered(kern, x, x_f32, out, false, m, k)
}

/// As `quant_act`, the scales stored `[k/128][m]` when `scales_kmajor` (cuBLASLt's order).
pub fn quant_act_ordered(kern: &Kernels, x: View, x_f32: bool, out: Fp8Act, scales_kmajor: bool, m: usize, k: usize) -> Result<()> {
    const K: &str = "fp8_quant_act";
    let kb = k.div_ceil(BLOCK);
    kern.launch_step(K, (m as u32, kb.div_ceil(8) as u32, 1), 256, 0, &[
        Arg::Ptr(x.need(K, "x", m * k * if x_f32 { 4 } else { 2 })?),
        Arg::I32(x_f32 as i32),
        Arg::Ptr(out.codes.need(K, "codes", m * k)?),
        Arg::Ptr(out.scales.need(K, "scales", m * kb * 4)?),
        Arg::I32(scales_kmajor as i32),
        Arg::I32(m as i32),
        Arg::I32(k as i32),
    ])
}

/// A dense FP8 linear through cuBLASLt's block-scaled matmul: `x` quantized with K-major
/// scales into `act`, then `c (mode) act · w^T`. The caller has asked `lt.supports` first.
#[allow(clippy::too_many_arguments)]
pub fn lt_linear(kern: &Kernels, lt: &crate::blas_lt::BlockScaledFp8, x: View, act: Fp8Act, w: Fp8Weight, c: View, mode: OutMode, m: usize, n: usize, k: usize) -> Result<()> {
    const K: &str = "cublasLt fp8";
    let (kb, nb) = (k.div_ceil(BLOCK), n.div_ceil(BLOCK));
    quant_act_ordered(kern, x, false, act, true, m, k)?;
    lt.matmul(&crate::blas_lt::Fp8Matmul {
        m,
        n,
        k,
        x: act.codes.need(K, "x", m * k)?,
        x_scales: act.scales.need(K, "x scales", m * kb * 4)?,
        w: w.codes.need(K, "w", n * k)?,
        w_scales: w.scales.need(K, "w scales", nb * kb * 4)?,
        out: c.need(K, "c", m * n * mode.elem())?,
        out_kind: mode.lt(),
    })
}

/// Split-k factor for a dense GEMM: enough CTAs for two per SM when the output tiles alone
/// leave SMs idle (decode-sized batches), each split at least one k block, and the partials
/// within `part_bytes`.
pub fn splits_for(m: usize, n: usize, k: usize, num_sms: usize, part_bytes: usize) -> usize {
    let rows = if m <= SKINNY_ROWS { SKINNY_ROWS } else { 64 };
    let tiles = n.div_ceil(TILE_COLS) * m.div_ceil(rows);
    let kb = k.div_ceil(BLOCK);
    if tiles >= num_sms || m == 0 {
        return 1;
    }
    let want = (2 * num_sms).div_ceil(tiles).min(kb).min(part_bytes / (m * n * 4).max(1)).max(1);
    even_splits(want, kb).0
}

/// A dense FP8 GEMM: `C[m, n] (mode) A · W^T`; `part` receives split-k partials (f32) when
/// `splits > 1` (`splits_for`).
#[derive(Debug, Clone, Copy)]
pub struct Gemm {
    pub a: Fp8Act,
    pub w: Fp8Weight,
    pub c: View,
    pub mode: OutMode,
    pub part: View,
    pub splits: usize,
    pub m: usize,
    pub n: usize,
    pub k: usize,
}

pub fn gemm(kern: &Kernels, g: Gemm) -> Result<()> {
    const K: &str = "fp8_gemm";
    let Gemm { a, w, c, mode, part, splits, m, n, k } = g;
    check_gpu(kern, K)?;
    ensure(K, k % 16 == 0 && k > 0 && n > 0, || format!("k = {k} must be a positive multiple of 16, n = {n} positive"))?;
    if m == 0 {
        return Ok(());
    }
    let (kb, nb) = (k.div_ceil(BLOCK), n.div_ceil(BLOCK));
    let (splits, per) = even_splits(splits, kb);
    let (name, rows): (&'static str, usize) = if m <= SKINNY_ROWS { ("fp8_gemm_m16", 16) } else { ("fp8_gemm_m64", 64) };
    let part_ptr = if splits > 1 { part.need(K, "split partials", splits * m * n * 4)? } else { 0 };
    kern.launch_step(name, (n.div_ceil(TILE_COLS) as u32, m.div_ceil(rows) as u32, splits as u32), 256, SMEM, &[
        Arg::Ptr(a.codes.need(K, "a", m * k)?),
        Arg::Ptr(a.scales.need(K, "a scales", m * kb * 4)?),
        Arg::Ptr(0),
        Arg::I32(1),
        Arg::Ptr(w.codes.need(K, "w", n * k)?),
        Arg::Ptr(w.scales.need(K, "w scales", nb * kb * 4)?),
        Arg::Ptr(0),
        Arg::Ptr(0),
        Arg::Ptr(c.need(K, "c", m * n * mode.elem())?),
        Arg::Ptr(part_ptr),
        Arg::I32(mode as i32),
        Arg::I32(m as i32),
        Arg::I32(n as i32),
        Arg::I32(k as i32),
        Arg::I32(per as i32),
    ])?;
    if splits > 1 {
        const R: &str = "fp8_splitk_reduce";
        let blocks = (m * n).div_ceil(256).min(4096) as u32;
        kern.launch_step(R, (blocks, 1, 1), 256, 0, &[
            Arg::Ptr(part_ptr),
            Arg::I32(splits as i32),
            Arg::Ptr(c.need(R, "c", m * n * mode.elem())?),
            Arg::I32(mode as i32),
            Arg::I32(m as i32),
            Arg::I32(n as i32),
        ])?;
    }
    Ok(())
}

/// Rows up to which a dense FP8 linear may run `fp8_skinny_m16` (bf16 in, one launch).
pub const SKINNY_MAX_ROWS: usize = 16;
/// Weights (n x k) from which the skinny kernel beats quantization + `fp8_gemm_m16`: on an H100
/// it wins on V3's o, dense down and gate_up (117-264 M, 1.45-1.59x bf16 against 1.36-1.41x)
/// and loses on q_b, q_a, kv_a and the experts (<= 38 M: too few k blocks per CTA to hide its
/// prologue; at 16 rows too few CTAs under its split limit).
pub const SKINNY_MIN_WEIGHTS: usize = 64 << 20;

/// Whether a dense FP8 linear of `m` rows runs the skinny kernel.
pub fn use_skinny(m: usize, n: usize, k: usize) -> bool {
    m <= SKINNY_MAX_ROWS && n * k >= SKINNY_MIN_WEIGHTS
}

/// Weights (n x k) from which cuBLASLt's block-scaled matmul beats our kernels at 16-63 rows; from
/// 64 rows it wins on every V3 shape that matters. H100, CUDA 13: 1.68-1.79x bf16 at 16 rows on
/// o / dense gate_up / down (skinny 1.47-1.57x), 1.10x on expert down (14.7 M; tiled 0.92x), but
/// 0.47-0.73x on q_a and kv_a (11 M, 4 M), where the tiled kernel reaches 0.81-1.02x.
pub const LT_MIN_WEIGHTS: usize = 12 << 20;

/// How a dense FP8 linear runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fp8Path {
    Skinny,
    CublasLt,
    Tiled,
}

/// The forward pass's choice for `m` rows of an `n x k` weight; `lt_has_algorithm`: cuBLASLt is
/// on and its heuristic has an algorithm for the shape (none below 16 rows).
pub fn choose_path(m: usize, n: usize, k: usize, lt_has_algorithm: bool) -> Fp8Path {
    if lt_has_algorithm && (n * k >= LT_MIN_WEIGHTS || m >= 64) {
        Fp8Path::CublasLt
    } else if use_skinny(m, n, k) {
        Fp8Path::Skinny
    } else {
        Fp8Path::Tiled
    }
}

/// Column tiles a skinny GEMM may split over k: one arrival counter each.
pub const SKINNY_COUNTERS: usize = 1024;
/// Rows up to which the quantized-input skinny kernels run (`fp8_skinny_q32` / `_q64`).
pub const SKINNY_QUANTIZED_MAX_ROWS: usize = 64;

/// One skinny kernel: its columns per CTA, the CTAs an SM holds (fp8_skinny.cu's register
/// budgets), and the most split rows (splits x m) a tile's last CTA sums (64 x 128 columns x 4
/// bytes = 32 KB for the fused one; 64 KB for the quantized ones, whose CTAs hold more).
#[derive(Debug, Clone, Copy)]
struct SkinnyKernel {
    name: &'static str,
    cols: usize,
    per_sm: usize,
    split_rows: usize,
}

fn skinny_kernel(quantized: bool, m: usize) -> SkinnyKernel {
    match (quantized, m) {
        (false, _) => SkinnyKernel { name: "fp8_skinny_m16", cols: 128, per_sm: 3, split_rows: 64 },
        (true, 0..=32) => SkinnyKernel { name: "fp8_skinny_q32", cols: 64, per_sm: 2, split_rows: 128 },
        (true, _) => SkinnyKernel { name: "fp8_skinny_q64", cols: 128, per_sm: 1, split_rows: 128 },
    }
}

/// k splits of a skinny GEMM (`quantized`: the kernels that take `quant_act`'s output): the
/// least time in k blocks per SM slot (CTAs resident per SM, in waves; each wave also fills its
/// pipeline, about two k blocks), counting the partials a tile's last CTA sums (about m / 16 k
/// blocks of weight bytes per split); within the partial buffer, the counters, the kernel's
/// split rows and the k blocks.
pub fn skinny_splits(quantized: bool, m: usize, n: usize, k: usize, num_sms: usize, part_bytes: usize) -> usize {
    let kernel = skinny_kernel(quantized, m);
    let (tiles, kb) = (n.div_ceil(kernel.cols), k.div_ceil(BLOCK));
    if m == 0 || tiles > SKINNY_COUNTERS {
        return 1;
    }
    let slots = kernel.per_sm * num_sms.max(1);
    let most = kb.min(part_bytes / (m * n * 4).max(1)).min(kernel.split_rows / m).max(1);
    let cost = |s: usize| {
        let per = kb.div_ceil(s);
        let waves = (tiles * kb.div_ceil(per)).div_ceil(slots);
        16 * waves * (per + 2) + if s > 1 { s * m } else { 0 }
    };
    let best = (1..=most).min_by_key(|&s| (cost(s), s)).unwrap_or(1);
    even_splits(best, kb).0
}

/// A skinny GEMM's rows: bf16 (quantized per row per 128 channels inside the kernel, as
/// `quant_act` would; up to `SKINNY_MAX_ROWS`), or `quant_act`'s output (up to
/// `SKINNY_QUANTIZED_MAX_ROWS`).
#[derive(Debug, Clone, Copy)]
pub enum SkinnyInput {
    Bf16(View),
    Quantized(Fp8Act),
}

/// A dense FP8 linear of a few rows: `C[m, n] (mode) X · W^T`. `counters` (`SKINNY_COUNTERS`
/// u32, zero at rest) and `part` serve the k splits.
#[derive(Debug, Clone, Copy)]
pub struct Skinny {
    pub x: SkinnyInput,
    pub w: Fp8Weight,
    pub c: View,
    pub mode: OutMode,
    pub part: View,
    pub counters: View,
    pub splits: usize,
    pub m: usize,
    pub n: usize,
    pub k: usize,
}

pub fn skinny(kern: &Kernels, g: Skinny) -> Result<()> {
    const K: &str = "fp8_skinny";
    let Skinny { x, w, c, mode, part, counters, splits, m, n, k } = g;
    check_gpu(kern, K)?;
    ensure(K, k % 16 == 0 && k > 0 && n > 0, || format!("k = {k} must be a positive multiple of 16, n = {n} positive"))?;
    let (quantized, most) = match x {
        SkinnyInput::Bf16(_) => (false, SKINNY_MAX_ROWS),
        SkinnyInput::Quantized(_) => (true, SKINNY_QUANTIZED_MAX_ROWS),
    };
    ensure(K, m <= most, || format!("{m} rows: at most {most}"))?;
    if m == 0 {
        return Ok(());
    }
    let kernel = skinny_kernel(quantized, m);
    let (kb, nb, tiles) = (k.div_ceil(BLOCK), n.div_ceil(BLOCK), n.div_ceil(kernel.cols));
    let (splits, per) = even_splits(if tiles > SKINNY_COUNTERS { 1 } else { splits }, kb);
    let (part_ptr, counter_ptr) = if splits > 1 {
        (part.need(K, "split partials", splits * m * n * 4)?, counters.need(K, "tile counters", tiles * 4)?)
    } else {
        (0, 0)
    };
    let (x_ptr, x_scales) = match x {
        SkinnyInput::Bf16(x) => (x.need(K, "x", m * k * 2)?, 0),
        SkinnyInput::Quantized(a) => (a.codes.need(K, "x codes", m * k)?, a.scales.need(K, "x scales", m * kb * 4)?),
    };
    kern.launch_step(kernel.name, (tiles as u32, splits as u32, 1), 256, 0, &[
        Arg::Ptr(x_ptr),
        Arg::Ptr(x_scales),
        Arg::Ptr(w.codes.need(K, "w", n * k)?),
        Arg::Ptr(w.scales.need(K, "w scales", nb * kb * 4)?),
        Arg::Ptr(c.need(K, "c", m * n * mode.elem())?),
        Arg::Ptr(part_ptr),
        Arg::Ptr(counter_ptr),
        Arg::I32(mode as i32),
        Arg::I32(m as i32),
        Arg::I32(n as i32),
        Arg::I32(k as i32),
        Arg::I32(per as i32),
    ])
}

/// `Grouped` over experts with FP8 operands, on `moe_align`'s tile list (16- or 64-row tiles,
/// `tile_rows`); `c` is written in `mode` (never accumulated). 64-row tiles run
/// `fp8_grouped_wgmma` where `moe::GroupedKernel::for_tiles` picks the wgmma kernel (Hopper, with
/// `MLAHOST_MOE_WGMMA=1` until measured), else `fp8_gemm_m16` / `_m64`.
pub fn grouped_gemm(kern: &Kernels, d: &super::moe::Dispatch, g: super::moe::Grouped<Fp8Act, Fp8Weight>, mode: OutMode) -> Result<()> {
    let wgmma = super::moe::GroupedKernel::for_tiles(d.tile_rows, kern.gpu().is_hopper()) == super::moe::GroupedKernel::Wgmma;
    grouped_gemm_on(kern, wgmma, d, g, mode)
}

/// The FP8 expert GEMM over 16-row tiles from bf16 rows (`fp8_grouped_stream`: quantized per
/// 128 channels inside the CTA as `quant_act` would, weights streamed into mma fragments), the
/// decode-sized path where `moe::GroupedKernel::for_tiles` picks the streaming kernel;
/// `g.a` holds bf16 rows. `c` is written in `mode` (bf16 or f32).
pub fn grouped_stream(kern: &Kernels, d: &super::moe::Dispatch, g: super::moe::Grouped<View, Fp8Weight>, mode: OutMode) -> Result<()> {
    const K: &str = "fp8_grouped_stream";
    let super::moe::Grouped { a, a_total_rows, a_rows, w, experts, pairs, c, n, k } = g;
    check_gpu(kern, K)?;
    ensure(K, k % 16 == 0 && k > 0 && n > 0, || format!("k = {k} must be a positive multiple of 16, n = {n} positive"))?;
    ensure(K, mode != OutMode::F32Add, || "grouped outputs are written, not accumulated".into())?;
    ensure(K, d.tile_rows == super::moe::SKINNY_TILE_ROWS, || format!("{}-row tiles: the kernel takes {}", d.tile_rows, super::moe::SKINNY_TILE_ROWS))?;
    let (kb, nb) = (k.div_ceil(BLOCK), n.div_ceil(BLOCK));
    let (rows_ptr, div) = match a_rows {
        Some((r, div)) => (r.need(K, "row index", pairs * 4)?, div as i32),
        None => (0, 1),
    };
    let tiles = super::moe::max_tiles(pairs, experts, d.tile_rows);
    kern.launch_step_labeled(K, "fp8_grouped_stream (experts)", (n.div_ceil(BLOCK) as u32, tiles as u32, 1), 256, 0, &[
        Arg::Ptr(a.need(K, "a", a_total_rows * k * 2)?),
        Arg::Ptr(rows_ptr),
        Arg::I32(div),
        Arg::Ptr(w.codes.need(K, "w", experts * n * k)?),
        Arg::Ptr(w.scales.need(K, "w scales", experts * nb * kb * 4)?),
        Arg::Ptr(d.tiles.need(K, "tiles", tiles * 3 * 4)?),
        Arg::Ptr(d.num_tiles.need(K, "tile count", 4)?),
        Arg::Ptr(c.need(K, "c", pairs * n * mode.elem())?),
        Arg::I32(mode as i32),
        Arg::I32(n as i32),
        Arg::I32(k as i32),
    ])
}

/// `grouped_gemm` on the wgmma kernel or not (checks and benchmarks); the wgmma kernel takes
/// 64-row tiles on sm_90a.
pub fn grouped_gemm_on(kern: &Kernels, wgmma: bool, d: &super::moe::Dispatch, g: super::moe::Grouped<Fp8Act, Fp8Weight>, mode: OutMode) -> Result<()> {
    const K: &str = "fp8_grouped_gemm";
    let super::moe::Grouped { a, a_total_rows, a_rows, w, experts, pairs, c, n, k } = g;
    check_gpu(kern, K)?;
    ensure(K, k % 16 == 0 && k > 0 && n > 0, || format!("k = {k} must be a positive multiple of 16, n = {n} positive"))?;
    ensure(K, mode != OutMode::F32Add, || "grouped outputs are written, not accumulated".into())?;
    let (kb, nb) = (k.div_ceil(BLOCK), n.div_ceil(BLOCK));
    let (rows_ptr, div) = match a_rows {
        Some((r, div)) => (r.need(K, "row index", pairs * 4)?, div as i32),
        None => (0, 1),
    };
    let tiles = super::moe::max_tiles(pairs, experts, d.tile_rows);
    let (a_ptr, a_scales) = (a.codes.need(K, "a", a_total_rows * k)?, a.scales.need(K, "a scales", a_total_rows * kb * 4)?);
    let (w_ptr, w_scales) = (w.codes.need(K, "w", experts * n * k)?, w.scales.need(K, "w scales", experts * nb * kb * 4)?);
    let (tile_ptr, count_ptr, c_ptr) = (d.tiles.need(K, "tiles", tiles * 3 * 4)?, d.num_tiles.need(K, "tile count", 4)?, c.need(K, "c", pairs * n * mode.elem())?);
    // both kernels start with the operands, the tile list and C
    let mut args = vec![
        Arg::Ptr(a_ptr),
        Arg::Ptr(a_scales),
        Arg::Ptr(rows_ptr),
        Arg::I32(div),
        Arg::Ptr(w_ptr),
        Arg::Ptr(w_scales),
        Arg::Ptr(tile_ptr),
        Arg::Ptr(count_ptr),
        Arg::Ptr(c_ptr),
    ];
    if wgmma {
        ensure(K, d.tile_rows == super::moe::TILE_ROWS && kern.gpu().is_hopper(), || {
            format!("fp8_grouped_wgmma takes {}-row tiles on sm_90a (got {}-row tiles)", super::moe::TILE_ROWS, d.tile_rows)
        })?;
        let (cols, smem) = super::moe::wgmma_tile();
        args.extend([Arg::I32(mode as i32), Arg::I32(n as i32), Arg::I32(k as i32)]);
        return kern.launch_step_labeled("fp8_grouped_wgmma", "fp8_grouped_wgmma (experts)", (n.div_ceil(cols) as u32, tiles as u32, 1), 256, smem, &args);
    }
    let (name, label) = if d.tile_rows <= SKINNY_ROWS { ("fp8_gemm_m16", "fp8_gemm_m16 (experts)") } else { ("fp8_gemm_m64", "fp8_gemm_m64 (experts)") };
    // no partials (the tiles fill the GPU), then fp8_gemm's sizes
    args.extend([Arg::Ptr(0), Arg::I32(mode as i32), Arg::I32(pairs as i32), Arg::I32(n as i32), Arg::I32(k as i32), Arg::I32(kb as i32)]);
    kern.launch_step_labeled(name, label, (n.div_ceil(TILE_COLS) as u32, tiles as u32, 1), 256, SMEM, &args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_fill_the_gpu_only_when_tiles_do_not() {
        // V3 q_a at batch 1: 12 column tiles on 132 SMs -> 22 splits over 56 k blocks -> 19 of 3
        assert_eq!(splits_for(1, 1536, 7168, 132, 64 << 20), 19);
        // a wide prefill GEMM needs none
        assert_eq!(splits_for(4096, 7168, 7168, 132, 64 << 20), 1);
        // never more splits than k blocks, and never past the partial buffer
        assert_eq!(splits_for(1, 128, 256, 132, 64 << 20), 2);
        assert_eq!(splits_for(64, 1536, 7168, 132, 64 * 1536 * 4 * 3), 3);
    }

    #[test]
    fn skinny_runs_the_large_decode_linears_only() {
        assert!(use_skinny(1, 7168, 16384) && use_skinny(16, 36864, 7168));
        assert!(!use_skinny(1, 24576, 1536) && !use_skinny(1, 576, 7168) && !use_skinny(17, 7168, 16384));
        // cuBLASLt where it has an algorithm, except the small weights below 64 rows
        assert_eq!(choose_path(16, 7168, 16384, true), Fp8Path::CublasLt);
        assert_eq!(choose_path(16, 7168, 16384, false), Fp8Path::Skinny);
        assert_eq!(choose_path(1, 7168, 16384, false), Fp8Path::Skinny);
        assert_eq!(choose_path(16, 1536, 7168, true), Fp8Path::Tiled);
        assert_eq!(choose_path(64, 576, 7168, true), Fp8Path::CublasLt);
        assert_eq!(choose_path(300, 576, 7168, false), Fp8Path::Tiled);
    }

    #[test]
    fn skinny_splits_fill_one_wave_and_respect_limits() {
        // V3 o_proj at batch 1: 56 column tiles, 128 k blocks -> 7 splits of 19 (392 CTAs, one wave of 396)
        assert_eq!(skinny_splits(false, 1, 7168, 16384, 132, 16 << 20), 7);
        // kv_a: 5 tiles, 56 k blocks: 28 splits of 2
        assert_eq!(skinny_splits(false, 1, 576, 7168, 132, 16 << 20), 28);
        // dense gate_up: 288 tiles are 0.7 waves of 396 slots with 56 k blocks each; 4 splits even them out
        assert_eq!(skinny_splits(false, 1, 36864, 7168, 132, 16 << 20), 4);
        assert_eq!(skinny_splits(false, 1, 24576, 1536, 132, 16 << 20), 2);
        // 16 rows: a tile's last CTA sums at most 64 split rows
        assert_eq!(skinny_splits(false, 16, 1536, 7168, 132, 16 << 20), 4);
        // the partials bound the splits
        assert_eq!(skinny_splits(false, 16, 7168, 16384, 132, 16 * 7168 * 4), 1);
        // more tiles than counters: no split
        assert_eq!(skinny_splits(false, 1, 128 * (SKINNY_COUNTERS + 1), 4096, 132, 1 << 30), 1);
        // quantized rows, 64 of them: at most two splits (128 split rows); one CTA per SM
        assert!(skinny_splits(true, 64, 7168, 16384, 132, 16 << 20) <= 2);
        assert!(skinny_splits(true, 32, 576, 7168, 132, 16 << 20) <= 4);
    }
}
