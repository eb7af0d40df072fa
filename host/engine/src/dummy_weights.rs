//! Generated weights for `--load-format dummy` (vLLM's name): every tensor the loader asks for,
//! with the shape it asks for, so a model can be served and measured from its config.json and
//! tokenizer alone. Values depend only on the seed and the tensor's name (so loading order and
//! threads do not change them): linear weights uniform with the standard deviation of the hub's
//! initialisation (0.02), norms 1, the noaux_tc score bias 0. A model whose config declares FP8
//! blocks gets FP8 linears, as its checkpoint would: e4m3 codes with one scale per block (the
//! uniform range over 448), kept as codes for a GPU that stores them (`keep_fp8`) and
//! dequantized otherwise, so both see the same values. The text is noise; the shapes, the
//! memory and the arithmetic are the real model's.

use crate::config::Fp8Blocks;
use crate::sampling_params::Rng;
use crate::kv_cache_dtype::f32_to_f8e4m3;
use crate::tensor::{Fp8Data, Matrix, Storage};
use crate::weights::TensorSource;
use crate::Result;
use std::hash::{DefaultHasher, Hash, Hasher};

/// Uniform on [-a, a] has standard deviation a / sqrt(3): 0.02 as transformers initialises.
const HALF_WIDTH: f32 = 0.02 * 1.732_050_8;

pub struct DummyWeights {
    pub seed: u64,
    /// Hand FP8 linears over as codes and block scales (a GPU keeping FP8 weights).
    pub keep_fp8: bool,
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

    /// bf16, as the hub's checkpoints store them; FP8 where the config declares FP8 blocks.
    fn load_matrix(&self, name: &str, rows: usize, cols: usize, fp8: Option<Fp8Blocks>) -> Result<Matrix> {
        let Some(b) = fp8 else {
            let data = self.uniform(name, rows * cols).map(crate::checkpoint::f32_to_bf16).collect();
            return Ok(Matrix { rows, cols, data: Storage::Bf16(data) });
        };
        // every block's values span the uniform range: one scale for all, amax / 448
        let scale = HALF_WIDTH / 448.0;
        let codes: Vec<u8> = self.uniform(name, rows * cols).map(|v| f32_to_f8e4m3(v / scale)).collect();
        let scales = vec![scale; rows.div_ceil(b.block_rows) * cols.div_ceil(b.block_cols)];
        let m = Matrix { rows, cols, data: Storage::Fp8(Fp8Data { codes, scales, block_rows: b.block_rows, block_cols: b.block_cols }) };
        Ok(if self.keep_fp8 { m } else { m.widened() })
    }
}
