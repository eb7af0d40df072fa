//! The FP8 kernels against naive references on fresh random data: activation quantization
//! (bit-exact against the same arithmetic on the CPU), and the block-scaled GEMMs, dense and
//! grouped over experts, against an f64 sum over the dequantized operands. Block magnitudes
//! span 1e-4..1e3 and some blocks are zero; widths are not multiples of 128.
//!
//! GEMM error: per output, |gpu - ref| / sum_k |a_k w_k| (the scale a sum's rounding is
//! relative to, robust to the seven decades of scales), the maximum over the outputs.

use super::{bf16s, from_bf16, rel_err, round_bf16, v, Check, Rng};
use mlahost_cuda::gpu::DeviceBuffer;
use mlahost_cuda::kernels::fp8::{self, Fp8Act, Fp8Weight, OutMode, BLOCK};
use mlahost_cuda::kernels::moe::{self, max_tiles, Dispatch, Grouped};
use mlahost_cuda::module::Kernels;
use mlahost_cuda::quant::quantize_blocks;
use mlahost_cuda::Result;
use mlahost_engine::checkpoint::f8e4m3_to_f32;
use mlahost_engine::kv_cache_dtype::f32_to_f8e4m3;


/// f32 outputs: tensor-core fp8 sums within a 128 block, promoted to f32.
const TOL_F32: f64 = 1e-3;
/// bf16 outputs add their rounding (2^-9 of the value).
const TOL_BF16: f64 = 5e-3;

/// `rows x cols` values whose 128x128 (`block_rows` x 128) blocks have magnitudes 10^U(-4, 3),
/// with the first block and every seventh zero.
fn blocky(rng: &mut Rng, rows: usize, cols: usize, block_rows: usize) -> Vec<f32> {
    let (br, bc) = (rows.div_ceil(block_rows), cols.div_ceil(BLOCK));
    let mags: Vec<f32> = (0..br * bc).map(|i| if i % 7 == 0 { 0.0 } else { 10f32.powf(3.5 * rng.sym() - 0.5) }).collect();
    let mut x = rng.vec(rows * cols, 1.0);
    for r in 0..rows {
        for c in 0..cols {
            x[r * cols + c] *= mags[(r / block_rows) * bc + c / BLOCK];
        }
    }
    x
}

/// The activation quantization in the kernel's arithmetic: s = amax / 448, q = e4m3(x / s).
fn quant_rows(x: &[f32], m: usize, k: usize) -> (Vec<u8>, Vec<f32>) {
    let kb = k.div_ceil(BLOCK);
    let (mut q, mut s) = (vec![0u8; m * k], vec![0f32; m * kb]);
    for r in 0..m {
        for b in 0..kb {
            let cols = b * BLOCK..((b + 1) * BLOCK).min(k);
            let amax = x[r * k..][cols.clone()].iter().fold(0f32, |a, v| a.max(v.abs()));
            let scale = amax / 448.0;
            s[r * kb + b] = scale;
            for c in cols {
                q[r * k + c] = if amax > 0.0 { f32_to_f8e4m3(x[r * k + c] / scale) } else { 0 };
            }
        }
    }
    (q, s)
}

fn deq(codes: &[u8], scales: &[f32], rows: usize, cols: usize, block_rows: usize) -> Vec<f64> {
    let bc = cols.div_ceil(BLOCK);
    (0..rows * cols).map(|i| f8e4m3_to_f32(codes[i]) as f64 * scales[(i / cols / block_rows) * bc + (i % cols) / BLOCK] as f64).collect()
}

/// (max normalized error, rel error, where the max is) of `got` against `a · w^T` (+ `c0`).
fn compare(got: &[f32], a: &[f64], w: &[f64], c0: Option<&[f32]>, m: usize, n: usize, k: usize) -> (f64, f64, String) {
    let (mut worst, mut want, mut at) = (0f64, vec![0f32; m * n], String::new());
    for r in 0..m {
        for c in 0..n {
            let (ar, wr) = (&a[r * k..][..k], &w[c * k..][..k]);
            let dot: f64 = ar.iter().zip(wr).map(|(x, y)| x * y).sum();
            let abs: f64 = ar.iter().zip(wr).map(|(x, y)| (x * y).abs()).sum();
            let base = c0.map_or(0.0, |c0| c0[r * n + c] as f64);
            want[r * n + c] = (base + dot) as f32;
            let g = got[r * n + c] as f64;
            // accumulating into c0 rounds to c0's f32 ulp (2^-23 |c0|) once per k split and once at
            // the end: 4e-4 |c0| lets three such roundings pass the 1e-3 tolerances
            let e = if !g.is_finite() { f64::INFINITY } else { (g - base - dot).abs() / (abs + base.abs() * 4e-4 + 1e-30) };
            if e > worst {
                worst = e;
                at = format!("worst at row {r} col {c}: got {g:.6e}, want {:.6e} (sum |a w| {abs:.2e})", base + dot);
            }
        }
    }
    (worst, rel_err(got, &want), at)
}

pub fn run_all(k: &Kernels, rng: &mut Rng) -> Vec<Check> {
    let mut out = Vec::new();
    if k.gpu().info.compute_capability < (8, 9) {
        return out; // no fp8 tensor cores: the backend refuses FP8 weights here
    }
    let mut one = |name: String, r: Result<Check>| out.push(r.unwrap_or_else(|e| super::failed(&name, e)));
    for &(m, kdim) in &[(1usize, 7168usize), (7, 400), (300, 1040)] {
        one(format!("fp8_quant_act {m}x{kdim}"), quant(k, rng, m, kdim));
    }
    // (m, n, k, mode, splits): decode and prefill sizes, n and k off the 128 grid, forced splits
    let cases = [
        (1usize, 1536usize, 7168usize, OutMode::F32, 0usize),
        (1, 300, 400, OutMode::Bf16, 3),
        (7, 576, 1040, OutMode::F32Add, 0),
        (7, 200, 2048, OutMode::Bf16, 5),
        (64, 1000, 912, OutMode::F32, 0),
        (64, 260, 1536, OutMode::F32Add, 4),
        (300, 700, 528, OutMode::Bf16, 0),
        (300, 130, 1104, OutMode::F32Add, 2),
    ];
    for (m, n, kdim, mode, splits) in cases {
        one(format!("fp8_gemm {m}x{n}x{kdim} {mode:?} splits {splits}"), dense(k, rng, m, n, kdim, mode, splits, false));
    }
    // the one-launch skinny kernel (bf16 in): each row-tile size, forced and chosen splits
    let skinny = [
        (1usize, 1536usize, 7168usize, OutMode::F32, 0usize),
        (1, 300, 400, OutMode::Bf16, 3),
        (7, 576, 1040, OutMode::F32Add, 0),
        (9, 130, 1104, OutMode::F32Add, 9),
        (16, 200, 2048, OutMode::Bf16, 5),
        (16, 1000, 912, OutMode::F32, 0),
        (16, 700, 528, OutMode::F32Add, 3),
        (16, 700, 528, OutMode::F32Add, 5),
        // from quant_act's output: 32- and 64-row kernels, and the shape where an earlier
        // 64-row kernel (bf16 in, since removed) once missed 1.4% of an output
        (17, 512, 1024, OutMode::F32, 0),
        (32, 1000, 912, OutMode::Bf16, 3),
        (33, 260, 1536, OutMode::F32Add, 0),
        (64, 700, 528, OutMode::F32Add, 3),
        (64, 700, 528, OutMode::F32Add, 3),
        (64, 1536, 7168, OutMode::Bf16, 0),
    ];
    for (m, n, kdim, mode, splits) in skinny {
        one(format!("fp8_skinny {m}x{n}x{kdim} {mode:?} splits {splits}"), dense(k, rng, m, n, kdim, mode, splits, true));
    }
    for &(t, tile_rows) in &[(1usize, 16usize), (7, 16), (64, 16), (300, 64)] {
        one(format!("fp8 grouped gemm {t} tokens, {tile_rows}-row tiles"), grouped(k, rng, t, tile_rows, Kernel::Tiled, true, OutMode::F32));
    }
    // fp8_grouped_wgmma (Hopper): several tiles an expert, and a few rows; gathered rows with f32
    // out, and rows in pair order with bf16 out (the forward pass's two uses)
    if k.gpu().is_hopper() {
        for (t, gathered, mode) in [(300usize, true, OutMode::F32), (5, true, OutMode::F32), (300, false, OutMode::Bf16)] {
            one(format!("fp8 grouped gemm {t} tokens, 64-row tiles, wgmma"), grouped(k, rng, t, 64, Kernel::Wgmma, gathered, mode));
        }
    }
    // fp8_grouped_stream: 16-row tiles from bf16 rows, both uses (40 tokens: full tiles, an
    // expert over two tiles), and a rank's experts 3.. of 9 under expert parallelism
    for (t, gathered, mode, local_from) in [(1usize, true, OutMode::Bf16, 0), (7, true, OutMode::F32, 0), (40, true, OutMode::Bf16, 0), (40, false, OutMode::F32, 0), (40, true, OutMode::Bf16, 3)] {
        let name = format!("fp8 grouped gemm {t} tokens, 16-row tiles, stream");
        one(name, grouped_on(k, rng, t, 16, Kernel::Stream, gathered, mode, local_from));
    }
    out.extend(super::fp8_lt::run_all(k, rng));
    out
}

fn quant(kern: &Kernels, rng: &mut Rng, m: usize, kdim: usize) -> Result<Check> {
    let gpu = kern.gpu();
    let x = round_bf16(&blocky(rng, m, kdim, 1));
    let kb = kdim.div_ceil(BLOCK);
    let (q, s) = (DeviceBuffer::alloc(gpu, m * kdim)?, DeviceBuffer::alloc(gpu, m * kb * 4)?);
    q.fill_bytes(0x7f)?;
    fp8::quant_act(kern, v(&DeviceBuffer::from_slice(gpu, &bf16s(&x))?), false, Fp8Act { codes: v(&q), scales: v(&s) }, m, kdim)?;
    let (want_q, want_s) = quant_rows(&x, m, kdim);
    let got_q = q.to_vec::<u8>(m * kdim)?;
    let got_s = s.to_vec::<f32>(m * kb)?;
    let codes = got_q.iter().zip(&want_q).filter(|(a, b)| a != b).count();
    let scales = got_s.iter().zip(&want_s).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
    Ok(Check {
        name: format!("fp8_quant_act {m}x{kdim}"),
        error: (codes + scales) as f64,
        tolerance: 0.0,
        detail: format!("bit-exact vs CPU: {codes} of {} codes, {scales} of {} scales differ", m * kdim, m * kb),
        informational: false,
    })
}

/// Random block-scaled weights `[experts * n, k]` quantized on the host (as at load).
fn weights(rng: &mut Rng, experts: usize, n: usize, kdim: usize) -> (Vec<u8>, Vec<f32>, Vec<f64>) {
    let (mut codes, mut scales, mut dq) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..experts {
        let w = blocky(rng, n, kdim, BLOCK);
        let (c, s) = quantize_blocks(&w, n, kdim);
        dq.extend(deq(&c, &s, n, kdim, BLOCK));
        codes.extend(c);
        scales.extend(s);
    }
    (codes, scales, dq)
}

/// A dense FP8 linear against the reference: `quant_act` + `fp8::gemm`, or (`skinny`) the
/// one-launch kernel from the bf16 rows, whose tile counters must be back at zero after.
#[allow(clippy::too_many_arguments)]
fn dense(kern: &Kernels, rng: &mut Rng, m: usize, n: usize, kdim: usize, mode: OutMode, splits: usize, skinny: bool) -> Result<Check> {
    let gpu = kern.gpu();
    let x = round_bf16(&blocky(rng, m, kdim, 1));
    let (wc, ws, wd) = weights(rng, 1, n, kdim);
    let kb = kdim.div_ceil(BLOCK);
    let (q, s) = (DeviceBuffer::alloc(gpu, m * kdim)?, DeviceBuffer::alloc(gpu, m * kb * 4)?);
    let act = Fp8Act { codes: v(&q), scales: v(&s) };
    fp8::quant_act(kern, v(&DeviceBuffer::from_slice(gpu, &bf16s(&x))?), false, act, m, kdim)?;
    let (aq, as_) = quant_rows(&x, m, kdim);
    let ad = deq(&aq, &as_, m, kdim, 1);
    let (d_wc, d_ws) = (DeviceBuffer::from_slice(gpu, &wc)?, DeviceBuffer::from_slice(gpu, &ws)?);
    let c0 = rng.vec(m * n, 10.0);
    let c = match mode {
        OutMode::Bf16 => DeviceBuffer::alloc(gpu, m * n * 2)?,
        _ => DeviceBuffer::from_slice(gpu, &c0)?,
    };
    if mode == OutMode::Bf16 {
        c.fill_bytes(0xff)?; // NaN
    }
    let part = DeviceBuffer::alloc(gpu, mlahost_engine::capacity::FP8_SPLIT_PARTIAL_BYTES as usize)?;
    let sms = kern.gpu().info.multiprocessors as usize;
    let w = Fp8Weight { codes: v(&d_wc), scales: v(&d_ws) };
    let mut stuck = 0;
    if skinny {
        // past 16 rows the skinny kernels take quant_act's output (above), else the bf16 rows
        let quantized = m > fp8::SKINNY_MAX_ROWS;
        let splits = if splits == 0 { fp8::skinny_splits(quantized, m, n, kdim, sms, part.bytes()) } else { splits };
        let counters = DeviceBuffer::alloc(gpu, fp8::SKINNY_COUNTERS * 4)?;
        counters.fill_bytes(0)?;
        let x16 = DeviceBuffer::from_slice(gpu, &bf16s(&x))?;
        let x = if quantized { fp8::SkinnyInput::Quantized(act) } else { fp8::SkinnyInput::Bf16(v(&x16)) };
        fp8::skinny(kern, fp8::Skinny { x, w, c: v(&c), mode, part: v(&part), counters: v(&counters), splits, m, n, k: kdim })?;
        stuck = counters.to_vec::<u32>(fp8::SKINNY_COUNTERS)?.iter().filter(|&&c| c != 0).count();
    } else {
        let splits = if splits == 0 { fp8::splits_for(m, n, kdim, sms, part.bytes()) } else { splits };
        fp8::gemm(kern, fp8::Gemm { a: act, w, c: v(&c), mode, part: v(&part), splits, m, n, k: kdim })?;
    }
    let got = match mode {
        OutMode::Bf16 => from_bf16(&c.to_vec::<u16>(m * n)?),
        _ => c.to_vec::<f32>(m * n)?,
    };
    let (worst, rel, at) = compare(&got, &ad, &wd, (mode == OutMode::F32Add).then_some(&c0[..]), m, n, kdim);
    Ok(Check {
        name: format!("{} {m}x{n}x{kdim} {mode:?}", if skinny { "fp8_skinny" } else { "fp8_gemm" }),
        error: if stuck > 0 { f64::INFINITY } else { worst },
        tolerance: if mode == OutMode::Bf16 { TOL_BF16 } else { TOL_F32 },
        detail: format!("{splits} k splits requested (0: chosen); rel err {rel:.1e}; scales 1e-4..1e3, zero blocks; {stuck} tile counters left non-zero; {at}"),
        informational: false,
    })
}

/// The FP8 grouped kernels: `fp8_gemm_m16` / `_m64` by the tile height, `fp8_grouped_wgmma`
/// (64-row tiles), `fp8_grouped_stream` (16-row tiles, bf16 rows quantized inside).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernel {
    Tiled,
    Wgmma,
    Stream,
}

/// Dispatch + the FP8 grouped GEMM against per-pair dot products: gathered token rows, or (not
/// `gathered`) the pairs' rows in expert order, as the down projection reads them; on `kernel`;
/// output in `mode`.
#[allow(clippy::too_many_arguments)]
fn grouped(kern: &Kernels, rng: &mut Rng, t: usize, tile_rows: usize, kernel: Kernel, gathered: bool, mode: OutMode) -> Result<Check> {
    grouped_on(kern, rng, t, tile_rows, kernel, gathered, mode, 0)
}

/// `grouped` on the experts from `local_from` on only, as an expert-parallel rank holds them
/// (their weights alone, tile expert indices local, the other pairs skipped).
#[allow(clippy::too_many_arguments)]
fn grouped_on(kern: &Kernels, rng: &mut Rng, t: usize, tile_rows: usize, kernel: Kernel, gathered: bool, mode: OutMode, local_from: usize) -> Result<Check> {
    let gpu = kern.gpu();
    let (e, top_k, n, kdim) = (9usize, 3usize, 400usize, 656usize);
    let x = round_bf16(&blocky(rng, t, kdim, 1));
    let (wc, ws, wd) = weights(rng, e, n, kdim);
    let mut ids = Vec::with_capacity(t * top_k);
    for _ in 0..t {
        let mut pick: Vec<i32> = (0..(e - 1) as i32).collect(); // the last expert gets no tokens
        rng.shuffle(&mut pick);
        ids.extend_from_slice(&pick[..top_k]);
    }
    let pairs = t * top_k;
    let buf = |b: usize| DeviceBuffer::alloc(gpu, b);
    let kb = kdim.div_ceil(BLOCK);
    let d_ids = DeviceBuffer::from_slice(gpu, &ids)?;
    let (off, sorted, ppos, tiles, nt) = (buf((e + 1) * 4)?, buf(pairs * 4)?, buf(pairs * 4)?, buf(max_tiles(pairs, e, tile_rows) * 12)?, buf(4)?);
    let d = Dispatch { expert_offsets: v(&off), sorted_pairs: v(&sorted), pair_pos: v(&ppos), tiles: v(&tiles), num_tiles: v(&nt), tile_rows };
    moe::moe_align(kern, v(&d_ids), pairs, e, local_from..e, &d)?;
    // the GEMM's rows: the tokens' (gathered through the sorted pairs), or each sorted pair's
    // token row in place (quantized per row either way, so the codes are the same)
    let rows: Vec<f32> = if gathered {
        x.clone()
    } else {
        sorted.to_vec::<i32>(pairs)?.iter().flat_map(|&p| x[(p.max(0) as usize / top_k) * kdim..][..kdim].to_vec()).collect()
    };
    let a_total_rows = rows.len() / kdim;
    let (q, s) = (buf(a_total_rows * kdim)?, buf(a_total_rows * kb * 4)?);
    let act = Fp8Act { codes: v(&q), scales: v(&s) };
    let rows16 = DeviceBuffer::from_slice(gpu, &bf16s(&rows))?;
    fp8::quant_act(kern, v(&rows16), false, act, a_total_rows, kdim)?;
    let (d_wc, d_ws) = (DeviceBuffer::from_slice(gpu, &wc)?, DeviceBuffer::from_slice(gpu, &ws)?);
    let c = buf(pairs * n * 4)?;
    c.fill_bytes(0xff)?;
    // this rank's experts: their codes and block scales from expert local_from on
    let held = e - local_from;
    let w = Fp8Weight { codes: v(&d_wc).at(local_from * n * kdim), scales: v(&d_ws).at(local_from * n.div_ceil(BLOCK) * kb * 4) };
    let a_rows = gathered.then(|| (v(&sorted), top_k));
    if kernel == Kernel::Stream {
        let g = Grouped { a: v(&rows16), a_total_rows, a_rows, w, experts: held, pairs, c: v(&c), n, k: kdim };
        fp8::grouped_stream(kern, &d, g, mode)?;
    } else {
        let g = Grouped { a: act, a_total_rows, a_rows, w, experts: held, pairs, c: v(&c), n, k: kdim };
        fp8::grouped_gemm_on(kern, kernel == Kernel::Wgmma, &d, g, mode)?;
    }
    let got_sorted = match mode {
        OutMode::Bf16 => from_bf16(&c.to_vec::<u16>(pairs * n)?),
        _ => c.to_vec::<f32>(pairs * n)?,
    };
    let pos = ppos.to_vec::<i32>(pairs)?;
    // back to pair order, and each pair's operands: its token's row, its expert's weights
    let (aq, as_) = quant_rows(&x, t, kdim);
    let ad = deq(&aq, &as_, t, kdim, 1);
    let (mut worst, mut rel) = (0f64, 0f64);
    let mut checked = 0;
    for p in 0..pairs {
        let (tok, ex) = (p / top_k, ids[p] as usize);
        if ex < local_from {
            if pos[p] != -1 {
                return Ok(bad_pos(t, tile_rows, kernel)); // another rank's pair must have no position
            }
            continue;
        }
        checked += 1;
        let Some(row) = usize::try_from(pos[p]).ok().filter(|&r| r < pairs) else { return Ok(bad_pos(t, tile_rows, kernel)) };
        let got = &got_sorted[row * n..][..n];
        let (w_, r_, _) = compare(got, &ad[tok * kdim..][..kdim], &wd[ex * n * kdim..][..n * kdim], None, 1, n, kdim);
        worst = worst.max(w_);
        rel = rel.max(r_);
    }
    Ok(Check {
        name: format!(
            "fp8 grouped gemm {t} tokens, {tile_rows}-row tiles{}, {}{mode:?} out{}",
            kernel_suffix(kernel),
            if gathered { "" } else { "pair rows, " },
            if local_from > 0 { format!(", experts {local_from}..{e} held") } else { String::new() }
        ),
        error: if checked == 0 { f64::INFINITY } else { worst },
        tolerance: if mode == OutMode::Bf16 { TOL_BF16 } else { TOL_F32 },
        detail: format!("{e} experts (one unused), top {top_k}, {kdim}->{n}; {checked} pairs checked; worst pair rel err {rel:.1e}"),
        informational: false,
    })
}

fn kernel_suffix(kernel: Kernel) -> &'static str {
    match kernel {
        Kernel::Tiled => "",
        Kernel::Wgmma => ", wgmma",
        Kernel::Stream => ", stream",
    }
}

fn bad_pos(t: usize, tile_rows: usize, kernel: Kernel) -> Check {
    Check {
        name: format!("fp8 grouped gemm {t} tokens, {tile_rows}-row tiles{}", kernel_suffix(kernel)),
        error: f64::INFINITY,
        tolerance: TOL_F32,
        detail: "moe_align returned a pair position out of range".into(),
        informational: false,
    }
}
