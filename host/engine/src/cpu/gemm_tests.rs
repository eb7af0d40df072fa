//! Every kernel family of `linear` against an f64 reference on fresh random inputs, ragged
//! sizes included, with each family forced in turn (a family this CPU lacks is skipped and said).

use super::gemm::{rows_bf16, rows_f32, Acts};
use super::isa::Isa;
use crate::checkpoint::{bf16_to_f32, f32_to_bf16};

/// xorshift64*, seeded from the clock so every run sees new inputs (the seed is printed).
pub struct Rng(u64);

impl Rng {
    pub fn fresh() -> Self {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
        let seed = t | 1;
        eprintln!("random seed {seed:#x}");
        Rng(seed)
    }

    /// Uniform in [-1, 1).
    pub fn next(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let v = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40;
        v as f32 / (1u64 << 23) as f32 - 1.0
    }

    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.next()).collect()
    }
}

pub fn families() -> Vec<Isa> {
    let all = [Isa::Scalar, Isa::Avx2, Isa::Avx512];
    for isa in all.iter().filter(|i| !i.supported()) {
        eprintln!("skipping the {} kernels: this CPU lacks them", isa.as_str());
    }
    all.into_iter().filter(|i| i.supported()).collect()
}

/// `out[r * t + tok]` for all rows, through the row-range entry in two ranges (as tasks split).
fn run(isa: Isa, x: &[f32], t: usize, k: usize, w: &[f32], n: usize, bf16: Option<&[u16]>) -> Vec<f32> {
    let acts = Acts::new(isa, x, t, k, bf16.is_some());
    let mut out = vec![f32::NAN; n * t];
    let split = (n / 2).next_multiple_of(4).min(n);
    let (lo, hi) = out.split_at_mut(split * t);
    for (rows, o) in [(0..split, lo), (split..n, hi)] {
        match bf16 {
            Some(b) => rows_bf16(&acts, b, rows, o),
            None => rows_f32(&acts, w, rows, o),
        }
    }
    out
}

#[test]
fn every_family_matches_the_f64_reference_on_ragged_shapes() {
    let mut rng = Rng::fresh();
    for isa in families() {
        for &(n, k, t) in &[(1, 1, 1), (3, 7, 2), (5, 31, 3), (9, 32, 1), (4, 33, 5), (13, 100, 2), (8, 257, 4), (6, 512, 1)] {
            let x = rng.vec(t * k);
            let w = rng.vec(n * k);
            let wb: Vec<u16> = w.iter().map(|&v| f32_to_bf16(v)).collect();
            let wbf: Vec<f32> = wb.iter().map(|&b| bf16_to_f32(b)).collect();
            for (weights, bf) in [(&w, None), (&wbf, Some(&wb[..]))] {
                let y = run(isa, &x, t, k, weights, n, bf);
                for r in 0..n {
                    for tok in 0..t {
                        let terms = (0..k).map(|i| x[tok * k + i] as f64 * weights[r * k + i] as f64);
                        let exact: f64 = terms.clone().sum();
                        let mag: f64 = terms.map(f64::abs).sum();
                        // f32 accumulation of k exact products: a few ulps of the magnitude per term.
                        let tol = 4.0 * f32::EPSILON as f64 * (k as f64).sqrt() * mag + 1e-30;
                        let got = y[r * t + tok] as f64;
                        assert!((got - exact).abs() <= tol, "{isa:?} bf16={} n={n} k={k} t={t} row {r} tok {tok}: {got} vs {exact}", bf.is_some());
                    }
                }
            }
        }
    }
}

#[test]
fn every_family_gives_a_token_the_same_bits_alone_or_batched() {
    let mut rng = Rng::fresh();
    let (n, k, t) = (11, 75, 5);
    let x = rng.vec(t * k);
    let w = rng.vec(n * k);
    let wb: Vec<u16> = w.iter().map(|&v| f32_to_bf16(v)).collect();
    for isa in families() {
        for bf in [None, Some(&wb[..])] {
            let all = run(isa, &x, t, k, &w, n, bf);
            for tok in 0..t {
                let one = run(isa, &x[tok * k..(tok + 1) * k], 1, k, &w, n, bf);
                let batched: Vec<f32> = (0..n).map(|r| all[r * t + tok]).collect();
                assert_eq!(one, batched, "{isa:?} token {tok}");
            }
        }
    }
}
