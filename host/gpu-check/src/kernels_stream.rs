//! The streaming dense bf16 linear (`linear_stream`) against an f64 reference on fresh random
//! data: 1, 7 and 16 rows; n and k off the kernel's 64-column tiles and 128-wide k blocks; one,
//! forced and chosen k splits; every output mode; two launches back to back on the same tile
//! counters (each accumulating: the second may start while the first finishes); tile counters
//! back at zero after.

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
    cases
        .into_iter()
        .map(|(m, n, kdim, mode, splits, launches)| {
            let name = format!("linear_stream {m}x{n}x{kdim} {mode:?} splits {splits} x{launches}");
            one(k, rng, m, n, kdim, mode, splits, launches).unwrap_or_else(|e| Check { name, error: f64::INFINITY, tolerance: 0.0, detail: format!("error: {e}"), informational: false })
        })
        .collect()
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
        stream::linear(kern, stream::Linear { a: v(&d_a), w: v(&d_w), c: v(&c), mode, part: v(&part), counters: v(&counters), splits, m, n, k: kdim })?;
    }
    let got = match mode {
        OutMode::Bf16 => from_bf16(&c.to_vec::<u16>(m * n)?),
        _ => c.to_vec::<f32>(m * n)?,
    };
    let stuck = counters.to_vec::<u32>(stream::COUNTERS)?.iter().filter(|&&x| x != 0).count();
    // error over each row's scale (the largest |exact| of the row), worst over the rows
    let mut worst = 0f64;
    for r in 0..m {
        let exact: Vec<f64> = (0..n).map(|col| a[r * kdim..][..kdim].iter().zip(&w[col * kdim..][..kdim]).map(|(x, y)| *x as f64 * *y as f64).sum()).collect();
        let scale = exact.iter().fold(1e-30f64, |s, x| s.max(x.abs()));
        for (col, e) in exact.iter().enumerate() {
            let (base, times) = if mode == OutMode::F32Add { (c0[r * n + col] as f64, launches as f64) } else { (0.0, 1.0) };
            let err = ((got[r * n + col] as f64 - base) - times * e).abs() / (times * scale);
            worst = worst.max(if err.is_nan() { f64::INFINITY } else { err });
        }
    }
    Ok(Check {
        name: format!("linear_stream {m}x{n}x{kdim} {mode:?}{}", if launches > 1 { format!(", {launches} launches back to back") } else { String::new() }),
        error: if stuck > 0 { f64::INFINITY } else { worst },
        tolerance: if mode == OutMode::Bf16 { TOL_BF16 } else { TOL_F32 },
        detail: format!("{splits} k splits; max error over the row's largest |value|; {stuck} tile counters left non-zero"),
        informational: false,
    })
}
