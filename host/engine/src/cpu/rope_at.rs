//! Rotary embedding at one position, with cos/sin computed once and applied to every head's
//! q_pe and the shared k_pe (the same arithmetic as `Rope::apply`, bit for bit).

use crate::config::RopeLayout;
use crate::rope::Rope;

pub struct RopeAt {
    cos: Vec<f32>,
    sin: Vec<f32>,
    layout: RopeLayout,
}

impl RopeAt {
    pub fn new(rope: &Rope, pos: usize) -> Self {
        let (n, f) = (rope.inv_freq().len(), rope.attention_factor());
        let (mut cos, mut sin) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for &freq in rope.inv_freq() {
            // f32 angle as transformers computes it; cos/sin rounded from f64 (as `Rope::apply`).
            let angle = (pos as f32 * freq) as f64;
            cos.push((angle.cos() as f32) * f);
            sin.push((angle.sin() as f32) * f);
        }
        Self { cos, sin, layout: rope.layout() }
    }

    pub fn apply(&self, x: &mut [f32]) {
        let half = self.cos.len();
        for (i, (&c, &s)) in self.cos.iter().zip(&self.sin).enumerate() {
            let (a, b) = match self.layout {
                RopeLayout::Interleaved => (2 * i, 2 * i + 1),
                RopeLayout::Halves => (i, i + half),
            };
            let (x0, x1) = (x[a], x[b]);
            x[a] = x0 * c - x1 * s;
            x[b] = x1 * c + x0 * s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;

    #[test]
    fn matches_rope_apply_bit_for_bit() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/tiny-v2-lite/config.json");
        let cfg = ModelConfig::from_file(std::path::Path::new(dir)).expect("fixture config");
        let rope = Rope::new(&cfg);
        let mut rng = super::super::gemm_tests::Rng::fresh();
        for pos in [0, 1, 7, 1000, 40_000] {
            let x = rng.vec(cfg.qk_rope_head_dim);
            let (mut a, mut b) = (x.clone(), x);
            rope.apply(&mut a, pos);
            RopeAt::new(&rope, pos).apply(&mut b);
            assert_eq!(a, b, "pos {pos}");
        }
    }
}
