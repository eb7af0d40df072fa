//! Launcher of bf16_stream.cu's dense `linear_stream` (the grouped `moe_gemm_stream` launches
//! from `moe.rs`: `moe_gemm_with`, `moe_gemm_glu`): bf16 linears of up to 16 rows that read each
//! weight byte once.

use super::fp8::{even_splits, OutMode};
use super::{ensure, View};
use crate::module::{Arg, Kernels};
use crate::Result;

/// Rows up to which a dense bf16 linear may stream (one m16 tile).
pub const MAX_ROWS: usize = 16;
/// Output columns per CTA.
pub const TILE_COLS: usize = 64;
/// Inner width per k block.
const BLOCK: usize = 128;
/// Column tiles a split linear may have: one arrival counter each.
pub const COUNTERS: usize = (mlahost_engine::capacity::STREAM_TILE_COUNTER_BYTES / 4) as usize;
/// CTAs an SM holds (`__launch_bounds__(256, 2)`).
const PER_SM: usize = 2;

/// Whether the forward pass streams a dense bf16 linear of `m` rows instead of calling cuBLAS:
/// only with `MLAHOST_DENSE_STREAM=1` until it has been measured against cuBLAS on a GPU.
pub fn use_for(m: usize) -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    m > 0 && m <= MAX_ROWS && *ON.get_or_init(|| std::env::var("MLAHOST_DENSE_STREAM").is_ok_and(|v| v == "1"))
}

/// k splits for `m` rows of an `n x k` weight: enough CTAs to give every SM its two (each split
/// keeps at least one k block), within the partial buffer and the counters; then spread evenly
/// (no split left empty).
pub fn splits_for(m: usize, n: usize, k: usize, num_sms: usize, part_bytes: usize) -> usize {
    let (tiles, kb) = (n.div_ceil(TILE_COLS), k.div_ceil(BLOCK));
    if m == 0 || tiles > COUNTERS {
        return 1;
    }
    let want = (PER_SM * num_sms.max(1)).div_ceil(tiles);
    let fits = part_bytes / (m * n * 4).max(1);
    let s = want.min(kb).min(fits).max(1);
    even_splits(s, kb).0
}

/// A dense bf16 linear of a few rows: `C[m, n] (mode) A[m, :k] · W[n, :k]^T`, `A` and `W`
/// row-major. `part` and `counters` (zero at rest) serve the k splits. `second`: another linear
/// of the same `A` in the same launch (its columns follow these in the splits' count). `glu`:
/// `W` is a stacked [gate | up] projection (n = 2 inter, inter a multiple of 32) and `C` gets
/// silu(gate) * up, bf16 `[m, n / 2]` (mode Bf16, no second).
#[derive(Debug, Clone, Copy)]
pub struct Linear {
    pub a: View,
    pub w: View,
    pub c: View,
    pub mode: OutMode,
    pub second: Option<Second>,
    pub glu: bool,
    pub part: View,
    pub counters: View,
    pub splits: usize,
    pub m: usize,
    pub n: usize,
    pub k: usize,
}

/// The second linear of a `Linear` launch: `C2[m, n] (mode) A · W2[n, :k]^T`.
#[derive(Debug, Clone, Copy)]
pub struct Second {
    pub w: View,
    pub c: View,
    pub mode: OutMode,
    pub n: usize,
}

impl Linear {
    /// Columns of the launch: both linears'.
    pub fn columns(&self) -> usize {
        self.n + self.second.map_or(0, |s| s.n)
    }
}

pub fn linear(kern: &Kernels, g: Linear) -> Result<()> {
    const K: &str = "linear_stream";
    let Linear { a, w, c, mode, second, glu, part, counters, splits, m, n, k } = g;
    let total = g.columns();
    ensure(K, k % 8 == 0 && k > 0 && n > 0, || format!("k = {k} must be a positive multiple of 8, n = {n} positive"))?;
    ensure(K, !glu || (n % 64 == 0 && mode == OutMode::Bf16 && second.is_none()), || format!("SiLU-and-mul over {n} columns: a multiple of 64, bf16 out, one linear"))?;
    let out_cols = if glu { n / 2 } else { n };
    ensure(K, m <= MAX_ROWS, || format!("{m} rows: at most {MAX_ROWS}"))?;
    if m == 0 {
        return Ok(());
    }
    let tiles = total.div_ceil(TILE_COLS);
    let (splits, per) = even_splits(if tiles > COUNTERS { 1 } else { splits }, k.div_ceil(BLOCK));
    let (part_ptr, counter_ptr) = if splits > 1 {
        (part.need(K, "split partials", splits * m * total * 4)?, counters.need(K, "tile counters", tiles * 4)?)
    } else {
        (0, 0)
    };
    let (w2, c2, mode2) = match second {
        Some(s) => (s.w.need(K, "w2", s.n * k * 2)?, s.c.need(K, "c2", m * s.n * s.mode.elem())?, s.mode),
        None => (0, 0, mode),
    };
    kern.launch_step(K, (tiles as u32, splits as u32, 1), 256, 0, &[
        Arg::Ptr(a.need(K, "a", m * k * 2)?),
        Arg::Ptr(w.need(K, "w", n * k * 2)?),
        Arg::Ptr(c.need(K, "c", m * out_cols * mode.elem())?),
        Arg::Ptr(w2),
        Arg::Ptr(c2),
        Arg::Ptr(part_ptr),
        Arg::Ptr(counter_ptr),
        Arg::I32(mode as i32),
        Arg::I32(mode2 as i32),
        Arg::I32(m as i32),
        Arg::I32(n as i32),
        Arg::I32(total as i32),
        Arg::I32(k as i32),
        Arg::I32(per as i32),
        Arg::I32(if glu { (n / 2) as i32 } else { 0 }),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_fill_the_sms_within_the_buffers_and_leave_none_empty() {
        // V2-Lite's kv_a at one row: 9 column tiles, 16 k blocks: every block its own split
        assert_eq!(splits_for(1, 576, 2048, 132, 16 << 20), 16);
        // o_proj 2048 x 2048: 32 tiles want 9 splits of 16 blocks -> 8 splits of 2 (none empty)
        assert_eq!(splits_for(1, 2048, 2048, 132, 16 << 20), 8);
        // the lm_head's 1,600 tiles exceed the counters: no split
        assert_eq!(splits_for(1, 102_400, 2048, 132, 16 << 20), 1);
        // the partial buffer bounds them: 16 rows x 3072 columns x 4 bytes = 196,608 per split
        assert_eq!(splits_for(16, 3072, 2048, 132, 4 * 196_608), 4);
        for (m, n, k) in [(1, 3072, 2048), (7, 1000, 1096), (16, 2816, 2048), (3, 64, 128)] {
            let s = splits_for(m, n, k, 132, 16 << 20);
            let kb = k.div_ceil(BLOCK);
            let per = kb.div_ceil(s);
            assert!(s >= 1 && s <= kb && (s - 1) * per < kb, "{m} {n} {k}: {s} splits of {per}");
        }
    }
}
