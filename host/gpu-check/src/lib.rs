//! GPU self-checks: every kernel against a naive CPU reference on fresh random data, and the
//! whole backend against the CPU engine. Run by `cargo test` (skipped without a GPU) and by
//! `mlahost gpu-check` on a GPU machine that has no Rust toolchain.

pub mod bench;
mod bench_absorb;
mod bench_router;
pub mod bench_fp8;
pub mod bench_gemm;
pub mod e2e;
pub mod e2e_fp8;
pub mod e2e_tp;
pub mod fp8;
pub mod fp8_lt;
pub mod kernels;
mod kernels_absorb;
mod kernels_moe;
mod kernels_router;
mod kernels_stream;
pub mod profile;
pub mod runner;
pub mod trace;

use std::fmt::Write;

/// A device buffer as a launcher operand.
fn v(b: &mlahost_cuda::gpu::DeviceBuffer) -> mlahost_cuda::kernels::View {
    mlahost_cuda::kernels::View::of(b)
}

/// One check's outcome: the measured error against its tolerance.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    pub error: f64,
    pub tolerance: f64,
    pub detail: String,
    /// A measurement printed for the record, not a pass/fail check.
    pub informational: bool,
}

impl Check {
    pub fn passed(&self) -> bool {
        self.informational || (self.error.is_finite() && self.error <= self.tolerance)
    }
}

impl Check {
    /// The check as one markdown table row.
    pub fn row(&self) -> String {
        let verdict = if self.informational { "info" } else if self.passed() { "ok" } else { "FAIL" };
        format!("| {} | {:.3e} | {:.1e} | {verdict} | {} |", self.name, self.error, self.tolerance, self.detail)
    }
}

/// A check that could not run (a launch error) is a failed check carrying the error.
pub fn failed(name: &str, e: mlahost_cuda::CudaError) -> Check {
    Check { name: name.into(), error: f64::INFINITY, tolerance: 0.0, detail: format!("error: {e}"), informational: false }
}

/// Prints checks as a table; returns whether all passed.
pub fn report(title: &str, checks: &[Check]) -> (bool, String) {
    let mut s = String::new();
    let _ = writeln!(s, "{title}");
    let _ = writeln!(s, "| check | error | tolerance | result | detail |\n|---|---|---|---|---|");
    for c in checks {
        let _ = writeln!(s, "{}", c.row());
    }
    (checks.iter().all(Check::passed), s)
}

/// A small seeded generator (xorshift64*), so failures can be replayed from the printed seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// Seed from the clock: fresh data on every run.
    pub fn fresh() -> (Self, u64) {
        let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
        (Self::new(seed), seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [-1, 1).
    pub fn sym(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.sym() * scale).collect()
    }

    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}

/// ‖a − b‖ / ‖b‖ (f64).
pub fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    let (mut num, mut den) = (0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        num += (*x as f64 - *y as f64).powi(2);
        den += (*y as f64).powi(2);
    }
    if a.iter().any(|x| !x.is_finite()) || a.len() != b.len() {
        return f64::INFINITY;
    }
    (num / den.max(1e-30)).sqrt()
}

pub fn max_abs(a: &[f32], b: &[f32]) -> f64 {
    if a.len() != b.len() {
        return f64::INFINITY;
    }
    a.iter().zip(b).map(|(x, y)| if x.is_finite() { (*x as f64 - *y as f64).abs() } else { f64::INFINITY }).fold(0.0, f64::max)
}

pub fn bf16s(x: &[f32]) -> Vec<u16> {
    x.iter().map(|&v| mlahost_engine::checkpoint::f32_to_bf16(v)).collect()
}

pub fn from_bf16(x: &[u16]) -> Vec<f32> {
    x.iter().map(|&b| mlahost_engine::checkpoint::bf16_to_f32(b)).collect()
}

/// Rounds through bf16 (what the device sees).
pub fn round_bf16(x: &[f32]) -> Vec<f32> {
    from_bf16(&bf16s(x))
}
