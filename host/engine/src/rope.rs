//! Rotary embedding of the `qk_rope_head_dim` part of queries and the shared key, with YaRN's
//! frequency ramp and cos/sin magnitude correction, as transformers computes them.

use crate::config::{yarn_mscale, ModelConfig, RopeLayout};

#[derive(Debug, Clone)]
pub struct Rope {
    inv_freq: Vec<f32>,
    /// Multiplies cos and sin: mscale(factor, mscale) / mscale(factor, mscale_all_dim) under yarn.
    attention_factor: f32,
    layout: RopeLayout,
}

impl Rope {
    pub fn new(cfg: &ModelConfig) -> Self {
        let dim = cfg.qk_rope_head_dim;
        let base = cfg.rope_theta;
        let half = dim / 2;
        let pos_freq = |i: usize| base.powf((2 * i) as f64 / dim as f64);
        let (inv_freq, attention_factor) = match &cfg.yarn {
            None => ((0..half).map(|i| (1.0 / pos_freq(i)) as f32).collect(), 1.0),
            Some(y) => {
                let correction_dim = |rotations: f64| {
                    dim as f64 * (y.original_max_position_embeddings as f64 / (rotations * 2.0 * std::f64::consts::PI)).ln()
                        / (2.0 * base.ln())
                };
                let (mut low, mut high) = (correction_dim(y.beta_fast), correction_dim(y.beta_slow));
                if y.truncate {
                    (low, high) = (low.floor(), high.ceil());
                }
                let (low, mut high) = (low.max(0.0), high.min(dim as f64 - 1.0));
                if low == high {
                    high += 0.001;
                }
                let inv = (0..half)
                    .map(|i| {
                        let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0);
                        let extrapolate = 1.0 - ramp;
                        let (extra, inter) = (1.0 / pos_freq(i), 1.0 / (y.factor * pos_freq(i)));
                        (inter * (1.0 - extrapolate) + extra * extrapolate) as f32
                    })
                    .collect();
                let af = if y.mscale != 0.0 && y.mscale_all_dim != 0.0 {
                    yarn_mscale(y.factor, y.mscale) / yarn_mscale(y.factor, y.mscale_all_dim)
                } else {
                    yarn_mscale(y.factor, 1.0)
                };
                (inv, af as f32)
            }
        };
        Self { inv_freq, attention_factor, layout: cfg.rope_layout }
    }

    /// The per-pair inverse frequencies (after YaRN), for device kernels that rotate themselves.
    pub fn inv_freq(&self) -> &[f32] {
        &self.inv_freq
    }

    /// The factor on cos and sin (YaRN's magnitude correction; 1 without scaling).
    pub fn attention_factor(&self) -> f32 {
        self.attention_factor
    }

    pub fn layout(&self) -> RopeLayout {
        self.layout
    }

    /// Rotates `x` (length `qk_rope_head_dim`) for position `pos`, in place.
    pub fn apply(&self, x: &mut [f32], pos: usize) {
        let half = self.inv_freq.len();
        for (i, &f) in self.inv_freq.iter().enumerate() {
            // f32 angle as transformers computes it; cos/sin rounded from f64.
            let angle = (pos as f32 * f) as f64;
            let (c, s) = ((angle.cos() as f32) * self.attention_factor, (angle.sin() as f32) * self.attention_factor);
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
