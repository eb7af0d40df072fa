//! Generated weights for `--load-format dummy` (vLLM's name): every tensor the loader asks for,
//! with the shape it asks for, so a model can be served and measured from its config.json and
//! tokenizer alone. Values depend only on the seed and the tensor's name (so loading order and
//! threads do not change them): linear weights uniform with the standard deviation of the hub's
//! initialisation (0.02), norms 1, the noaux_tc score bias 0. The text is noise; the shapes,
//! the memory and the arithmetic are the real model's.

use crate::config::Fp8Blocks;
use crate::sampling_params::Rng;
use crate::tensor::{Matrix, Storage};
use crate::weights::TensorSource;
use crate::Result;
use std::hash::{DefaultHasher, Hash, Hasher};

/// Uniform on [-a, a] has standard deviation a / sqrt(3): 0.02 as transformers initialises.
const HALF_WIDTH: f32 = 0.02 * 1.732_050_8;

pub struct DummyWeights {
    pub seed: u64,
}

impl DummyWeights {
    fn rng(&self, name: &str) -> Rng {
        let mut h = DefaultHasher::new();
        (self.seed, name).hash(&mut h);
        Rng::seeded(h.finish())
    }

    fn uniform(&self, name: &str, n: usize) -> impl Iterator<Item = f32> {
        let mut rng = self.rng(name);
        (0..n).map(move |_| (rng.next_f64() as f32 * 2.0 - 1.0) * HALF_WIDTH)
    }
}

impl TensorSource for DummyWeights {
    fn contains(&self, _name: &str) -> bool {
        true
    }

    fn load_f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let n = shape.iter().product();
        Ok(if name.ends_with("norm.weight") {
            vec![1.0; n]
        } else if name.ends_with("e_score_correction_bias") {
            vec![0.0; n]
        } else {
            self.uniform(name, n).collect()
        })
    }

    /// bf16, as the hub's checkpoints store them (an FP8 model's GPU backend quantizes them to
    /// its blocks at load, as it does a bf16 checkpoint's).
    fn load_matrix(&self, name: &str, rows: usize, cols: usize, _fp8: Option<Fp8Blocks>) -> Result<Matrix> {
        let data = self.uniform(name, rows * cols).map(crate::checkpoint::f32_to_bf16).collect();
        Ok(Matrix { rows, cols, data: Storage::Bf16(data) })
    }
}
