//! The streaming dense bf16 linear (`linear_stream`) against an f64 reference on fresh random
//! data: 1, 7 and 16 rows; n and k off the kernel's 64-column tiles and 128-wide k blocks; one,
//! forced and chosen k splits; every output mode; two launches back to back on the same tile
//! counters (each accumulating: the second may start while the first finishes); two linears in
//! one launch; SiLU-and-mul in the epilogue; tile counters back at zero after.

use super::{bf16s, from_bf16, round_bf16, v, Check, Rng};
use mlahost_cuda::gpu::DeviceBuffer;
use mlahost_cuda::kernels::fp8::OutMode;
use mlahost_cuda::kernels::stream;
use mlahost_cuda::module::Kernels;
use mlahost_cuda::Result;

/// bf16 output: its rounding (2^-8 relative) over the row's scale; f32: summation order only.
const TOL_BF16: f64 = 8e-3;
const TOL_F32: f64 = 1e-4;

pub(crate) fn run_all(k: &Kernels, rng: &mut Rng) -> Vec<Check> {
    let cases = [
        (1, 576, 2048, OutMode::F32, 0, 1),
        (1, 1000, 1096, OutMode::Bf16, 1, 1),
        (7, 1000, 1096, OutMode::F32Add, 3, 1),
        (7, 1000, 1096, OutMode::Bf16, 0, 1),
        (16, 2816, 2048, OutMode::Bf16, 0, 1),
        (16, 64, 128, OutMode::F32Add, 0, 1),
        (3, 130, 2056, OutMode::F32, 17, 1),
        (5, 700, 2048, OutMode::F32Add, 0, 2),
    ];
    let failed = |name: String, e| crate::failed(&name, e);
    let mut out: Vec<Check> = cases
        .into_iter()
        .map(|(m, n, kdim, mode, splits, launches)| {
            let name = format!("linear_stream {m}x{n}x{kdim} {mode:?} splits {splits} x{launches}");
            one(k, rng, m, n, kdim, mode, splits, launches).unwrap_or_else(|e| failed(name, e))
        })
        .collect();
    // SiLU-and-mul in the epilogue (stacked [gate | up], inter a multiple of 32), with and
    // without splits
    for (m, inter, kdim, splits) in [(1, 1408, 2048, 0), (7, 96, 1096, 3), (16, 224, 2048, 1), (1, 1408, 2048, 1), (3, 96, 256, 1)] {
        out.push(glu(k, rng, m, inter, kdim, splits).unwrap_or_else(|e| failed(format!("linear_stream glu {m} rows"), e)));
    }
    // a layer's query and latent projections in one launch (V2-Lite-like and V3-like widths)
    // (the last: no splits, and a tile across the first linear's end)
    let pairs = [
        (1, (1000, OutMode::Bf16), (130, OutMode::F32), 1096, 0),
        (7, (1536, OutMode::F32), (576, OutMode::F32), 2048, 3),
        (3, (200, OutMode::F32), (70, OutMode::Bf16), 256, 1),
    ];
    for (m, first, second, kdim, splits) in pairs {
        out.push(pair(k, rng, m, first, second, kdim, splits).unwrap_or_else(|e| failed(format!("linear_stream pair {m} rows"), e)));
    }
    out
}

/// `splits` 0: the forward pass's choice (`stream::splits_for`); `launches` back to back (with
/// F32Add, C gains the product that many times).
#[allow(clippy::too_many_arguments)]
fn one(kern: &Kernels, rng: &mut Rng, m: usize, n: usize, kdim: usize, mode: OutMode, splits: usize, launches: usize) -> Result<Check> {
    let gpu = kern.gpu();
    let a = round_bf16(&rng.vec(m * kdim, 1.0));
    let w = round_bf16(&rng.vec(n * kdim, 0.05));
    let (d_a, d_w) = (DeviceBuffer::from_slice(gpu, &bf16s(&a))?, DeviceBuffer::from_slice(gpu, &bf16s(&w))?);
    let c0 = rng.vec(m * n, 10.0);
    let c = match mode {
        OutMode::Bf16 => {
            let c = DeviceBuffer::alloc(gpu, m * n * 2)?;
            c.fill_bytes(0xff)?; // NaN: every element must be written
            c
        }
        _ => DeviceBuffer::from_slice(gpu, &c0)?,
    };
    let part = DeviceBuffer::alloc(gpu, mlahost_engine::capacity::STREAM_SPLIT_PARTIAL_BYTES as usize)?;
    let counters = DeviceBuffer::alloc(gpu, stream::COUNTERS * 4)?;
    counters.fill_bytes(0)?;
    let sms = gpu.info.multiprocessors as usize;
    let splits = if splits == 0 { stream::splits_for(m, n, kdim, sms, part.bytes()) } else { splits };
    for _ in 0..launches {
        stream::linear(kern, stream::Linear { a: v(&d_a), w: v(&d_w), c: v(&c), mode, second: None, glu: false, part: v(&part), counters: v(&counters), splits, m, n, k: kdim })?;
    }
    let got = match mode {
        OutMode::Bf16 => from_bf16(&c.to_vec::<u16>(m * n)?),
        _ => c.to_vec::<f32>(m * n)?,
    };
    let stuck = counters.to_vec::<u32>(stream::COUNTERS)?.iter().filter(|&&x| x != 0).count();
    let (base, times) = if mode == OutMode::F32Add { (Some(&c0[..]), launches as f64) } else { (None, 1.0) };
    let worst = worst_error(&a, &w, &got, base, times, m, n, kdim);
    Ok(Check {
        name: format!("linear_stream {m}x{n}x{kdim} {mode:?}{}", if launches > 1 { format!(", {launches} launches back to back") } else { String::new() }),
        error: if stuck > 0 { f64::INFINITY } else { worst },
        tolerance: if mode == OutMode::Bf16 { TOL_BF16 } else { TOL_F32 },
        detail: format!("{splits} k splits; max error over the row's largest |value|; {stuck} tile counters left non-zero"),
        informational: false,
    })
}

/// Two linears of the same rows in one launch (`stream::Second`, a layer's query and latent
/// projections): columns past the first's into their own output, each in its own mode.
fn pair(kern: &Kernels, rng: &mut Rng, m: usize, (n1, mode1): (usize, OutMode), (n2, mode2): (usize, OutMode), kdim: usize, splits: usize) -> Result<Check> {
    let gpu = kern.gpu();
    let a = round_bf16(&rng.vec(m * kdim, 1.0));
    let (w1, w2) = (round_bf16(&rng.vec(n1 * kdim, 0.05)), round_bf16(&rng.vec(n2 * kdim, 0.05)));
    let up = |x: &[f32]| DeviceBuffer::from_slice(gpu, &bf16s(x));
    let (d_a, d_w1, d_w2) = (up(&a)?, up(&w1)?, up(&w2)?);
    let out = |n: usize, mode: OutMode| -> Result<DeviceBuffer> {
        let c = DeviceBuffer::alloc(gpu, m * n * if mode == OutMode::Bf16 { 2 } else { 4 })?;
        c.fill_bytes(0xff)?; // NaN: every element must be written
        Ok(c)
    };
    let (c1, c2) = (out(n1, mode1)?, out(n2, mode2)?);
    let part = DeviceBuffer::alloc(gpu, mlahost_engine::capacity::STREAM_SPLIT_PARTIAL_BYTES as usize)?;
    let counters = DeviceBuffer::alloc(gpu, stream::COUNTERS * 4)?;
    counters.fill_bytes(0)?;
    let splits = if splits == 0 { stream::splits_for(m, n1 + n2, kdim, gpu.info.multiprocessors as usize, part.bytes()) } else { splits };
    let second = Some(stream::Second { w: v(&d_w2), c: v(&c2), mode: mode2, n: n2 });
    stream::linear(kern, stream::Linear { a: v(&d_a), w: v(&d_w1), c: v(&c1), mode: mode1, second, glu: false, part: v(&part), counters: v(&counters), splits, m, n: n1, k: kdim })?;
    let read = |c: &DeviceBuffer, n: usize, mode: OutMode| -> Result<Vec<f32>> {
        Ok(if mode == OutMode::Bf16 { from_bf16(&c.to_vec::<u16>(m * n)?) } else { c.to_vec::<f32>(m * n)? })
    };
    let (got1, got2) = (read(&c1, n1, mode1)?, read(&c2, n2, mode2)?);
    let stuck = counters.to_vec::<u32>(stream::COUNTERS)?.iter().filter(|&&x| x != 0).count();
    let (e1, e2) = (worst_error(&a, &w1, &got1, None, 1.0, m, n1, kdim), worst_error(&a, &w2, &got2, None, 1.0, m, n2, kdim));
    let tol = |mode: OutMode| if mode == OutMode::Bf16 { TOL_BF16 } else { TOL_F32 };
    // one row: the larger error relative to its output's tolerance, against the tighter one
    let (t1, t2) = (tol(mode1), tol(mode2));
    Ok(Check {
        name: format!("linear_stream pair {m}x({n1} {mode1:?} + {n2} {mode2:?})x{kdim}"),
        error: if stuck > 0 { f64::INFINITY } else { (e1 / t1).max(e2 / t2) * t1.min(t2) },
        tolerance: t1.min(t2),
        detail: format!("{splits} k splits over both; errors {e1:.1e} / {e2:.1e} against {t1:.0e} / {t2:.0e}; {stuck} tile counters left non-zero"),
        informational: false,
    })
}

/// The worst error of `got` ([m, n]) against the f64 products of `a` and `w`'s rows, each over
/// its row's largest |value|; `base` is what C held before (accumulating modes), `times` how many
/// times the product was added.
#[allow(clippy::too_many_arguments)]
fn worst_error(a: &[f32], w: &[f32], got: &[f32], base: Option<&[f32]>, times: f64, m: usize, n: usize, kdim: usize) -> f64 {
    let mut worst = 0f64;
    for r in 0..m {
        let exact: Vec<f64> = (0..n).map(|col| a[r * kdim..][..kdim].iter().zip(&w[col * kdim..][..kdim]).map(|(x, y)| *x as f64 * *y as f64).sum()).collect();
        let scale = exact.iter().fold(1e-30f64, |s, x| s.max(x.abs()));
        for (col, e) in exact.iter().enumerate() {
            let b = base.map_or(0.0, |b| b[r * n + col] as f64);
            let err = ((got[r * n + col] as f64 - b) - times * e).abs() / (times * scale);
            worst = worst.max(if err.is_nan() { f64::INFINITY } else { err });
        }
    }
    worst
}

/// The stacked [gate | up] projection with SiLU-and-mul in the epilogue against
/// silu(bf16(gate)) * bf16(up) of the f64 products, over each row's largest |value|.
fn glu(kern: &Kernels, rng: &mut Rng, m: usize, inter: usize, kdim: usize, splits: usize) -> Result<Check> {
    let gpu = kern.gpu();
    let n = 2 * inter;
    let a = round_bf16(&rng.vec(m * kdim, 1.0));
    let w = round_bf16(&rng.vec(n * kdim, 0.05));
    let (d_a, d_w) = (DeviceBuffer::from_slice(gpu, &bf16s(&a))?, DeviceBuffer::from_slice(gpu, &bf16s(&w))?);
    let c = DeviceBuffer::alloc(gpu, m * inter * 2)?;
    c.fill_bytes(0xff)?; // NaN: every element must be written
    let part = DeviceBuffer::alloc(gpu, mlahost_engine::capacity::STREAM_SPLIT_PARTIAL_BYTES as usize)?;
    let counters = DeviceBuffer::alloc(gpu, stream::COUNTERS * 4)?;
    counters.fill_bytes(0)?;
    let splits = if splits == 0 { stream::splits_for(m, n, kdim, gpu.info.multiprocessors as usize, part.bytes()) } else { splits };
    let g = stream::Linear { a: v(&d_a), w: v(&d_w), c: v(&c), mode: OutMode::Bf16, second: None, glu: true, part: v(&part), counters: v(&counters), splits, m, n, k: kdim };
    stream::linear(kern, g)?;
    let got = from_bf16(&c.to_vec::<u16>(m * inter)?);
    let stuck = counters.to_vec::<u32>(stream::COUNTERS)?.iter().filter(|&&x| x != 0).count();
    let dot = |r: usize, row: usize| a[r * kdim..][..kdim].iter().zip(&w[row * kdim..][..kdim]).map(|(x, y)| *x as f64 * *y as f64).sum::<f64>();
    let mut worst = 0f64;
    for r in 0..m {
        let want: Vec<f64> = (0..inter)
            .map(|i| {
                let (g, u) = (round_bf16(&[dot(r, i) as f32])[0] as f64, round_bf16(&[dot(r, inter + i) as f32])[0] as f64);
                g / (1.0 + (-g).exp()) * u
            })
            .collect();
        let scale = want.iter().fold(1e-30f64, |s, x| s.max(x.abs()));
        for (i, x) in want.iter().enumerate() {
            let err = (got[r * inter + i] as f64 - x).abs() / scale;
            worst = worst.max(if err.is_nan() { f64::INFINITY } else { err });
        }
    }
    Ok(Check {
        name: format!("linear_stream glu {m}x{n}x{kdim} (SiLU-and-mul epilogue)"),
        error: if stuck > 0 { f64::INFINITY } else { worst },
        tolerance: TOL_BF16,
        detail: format!("{splits} k splits; max error over the row's largest |value|; {stuck} tile counters left non-zero"),
        informational: false,
    })
}
