//! Weight quantization for the GPU: DeepSeek-V3's block format, e4m3 codes with one f32 scale per
//! 128x128 block (ceil-div blocks at the edges), value = code x scale, scale = block amax / 448.
//!
//! A checkpoint already in that format normally reaches the GPU as stored (`Checkpoint::keep_fp8`,
//! `weights.rs`); this quantizer serves bf16/f32 checkpoints (`--quantization fp8`), block cuts a
//! split leaves ragged, and a host copy loaded dequantized, for which quantizing again gives back
//! the file's codes and scales whenever the file's scale is its block's amax / 448, as
//! DeepSeek's files are made (checked against the fp8 fixture's raw bytes below).

use mlahost_engine::kv_cache_dtype::f32_to_f8e4m3;
use std::fmt;

/// How the GPU stores the linear layers' weights (vLLM's `--quantization`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightQuant {
    /// FP8 when the checkpoint is FP8 (`quantization_config` fp8), else bf16.
    #[default]
    Auto,
    Bf16,
    /// Block-scaled FP8 whatever the checkpoint's dtype (quantized at load).
    Fp8,
}

impl WeightQuant {
    /// Whether linears are stored in FP8 for a checkpoint that is (`checkpoint_fp8`) or is not fp8.
    pub fn fp8_for(self, checkpoint_fp8: bool) -> bool {
        match self {
            // an FP8 checkpoint's weights stay as the file stores them (a GPU without FP8
            // tensor cores falls back to bf16: `CudaBackend::build`)
            Self::Auto => checkpoint_fp8,
            Self::Bf16 => false,
            Self::Fp8 => true,
        }
    }
}

impl std::str::FromStr for WeightQuant {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "bf16" | "none" => Ok(Self::Bf16),
            "fp8" => Ok(Self::Fp8),
            _ => Err(format!("expected auto, bf16 or fp8, got {s:?}")),
        }
    }
}

impl fmt::Display for WeightQuant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Bf16 => "bf16",
            Self::Fp8 => "fp8",
        })
    }
}

pub const BLOCK: usize = crate::kernels::fp8::BLOCK;
const E4M3_MAX: f32 = 448.0;

/// `[rows, cols]` row-major f32 -> (`[rows, cols]` e4m3 codes, `[ceil(rows/128), ceil(cols/128)]`
/// scales). An all-zero block gets scale 0 and zero codes.
pub fn quantize_blocks(data: &[f32], rows: usize, cols: usize) -> (Vec<u8>, Vec<f32>) {
    let bc = cols.div_ceil(BLOCK);
    let mut scales = vec![0f32; rows.div_ceil(BLOCK) * bc];
    let mut codes = vec![0u8; rows * cols];
    // one 128-row band of blocks per task, bands spread over the cores
    let bands: Vec<(usize, (&mut [u8], &mut [f32]))> = codes.chunks_mut(BLOCK * cols).zip(scales.chunks_mut(bc)).enumerate().collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(bands.len().max(1));
    let per = bands.len().div_ceil(threads.max(1)).max(1);
    let mut groups: Vec<Vec<(usize, (&mut [u8], &mut [f32]))>> = Vec::new();
    let mut bands = bands.into_iter().peekable();
    while bands.peek().is_some() {
        groups.push(bands.by_ref().take(per).collect());
    }
    std::thread::scope(|scope| {
        for group in groups {
            scope.spawn(move || {
                for (band, (codes, scales)) in group {
                    quantize_band(&data[band * BLOCK * cols..][..codes.len()], cols, codes, scales);
                }
            });
        }
    });
    (codes, scales)
}

/// One band of up to 128 rows: its blocks' scales, then the codes.
fn quantize_band(x: &[f32], cols: usize, codes: &mut [u8], scales: &mut [f32]) {
    for row in x.chunks_exact(cols) {
        for (c, v) in row.iter().enumerate() {
            scales[c / BLOCK] = scales[c / BLOCK].max(v.abs());
        }
    }
    for s in scales.iter_mut() {
        *s /= E4M3_MAX;
    }
    for (i, (q, v)) in codes.iter_mut().zip(x).enumerate() {
        let s = scales[(i % cols) / BLOCK];
        *q = if s > 0.0 { f32_to_f8e4m3(v / s) } else { 0 };
    }
}

/// Stored bytes of a `[rows, cols]` block-scaled FP8 matrix: codes plus f32 scales.
pub fn fp8_bytes(rows: usize, cols: usize) -> u64 {
    (rows * cols + rows.div_ceil(BLOCK) * cols.div_ceil(BLOCK) * 4) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlahost_engine::checkpoint::{f8e4m3_to_f32, Checkpoint};

    #[test]
    fn round_trip_error_is_within_half_an_e4m3_step() {
        let (rows, cols) = (130, 300);
        let data: Vec<f32> = (0..rows * cols).map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 1e-3 * (1 + i % 5) as f32).collect();
        let (codes, scales) = quantize_blocks(&data, rows, cols);
        assert_eq!(scales.len(), 2 * 3);
        for r in 0..rows {
            for c in 0..cols {
                let s = scales[(r / BLOCK) * 3 + c / BLOCK];
                let back = f8e4m3_to_f32(codes[r * cols + c]) * s;
                let x = data[r * cols + c];
                // e4m3 keeps 3 mantissa bits: relative step 1/8, plus the subnormal floor 2^-9 s
                assert!((back - x).abs() <= x.abs() / 16.0 + s * 2f32.powi(-10), "{x} -> {back}");
            }
        }
        let zeros = quantize_blocks(&vec![0.0; 4], 2, 2);
        assert_eq!(zeros, (vec![0; 4], vec![0.0]));
    }

    /// The fixture's fp8 weights, loaded dequantized as the engine does, quantize back to the
    /// file's own codes and scales (so the GPU holds the file's bytes).
    #[test]
    fn requantizing_the_fp8_fixture_gives_back_its_bytes() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-v3-fp8");
        let cfg = mlahost_engine::ModelConfig::from_file(&dir.join("config.json")).expect("config");
        let blocks = cfg.fp8.expect("fp8 config");
        assert_eq!((blocks.block_rows, blocks.block_cols), (BLOCK, BLOCK));
        let ckpt = Checkpoint::open(&dir).expect("checkpoint");
        let mut checked = 0;
        for name in ["model.layers.1.self_attn.kv_a_proj_with_mqa.weight", "model.layers.1.self_attn.q_b_proj.weight", "model.layers.2.mlp.experts.3.down_proj.weight", "model.layers.0.mlp.gate_proj.weight"] {
            let info = ckpt.info(name).expect("tensor");
            let (rows, cols) = (info.shape[0], info.shape[1]);
            let (raw, raw_scales) = ckpt.load_fp8_raw(name, rows, cols, blocks).expect("raw fp8");
            let deq = ckpt.load_matrix(name, rows, cols, Some(blocks)).expect("dequantized").to_f32_vec();
            let (codes, scales) = quantize_blocks(&deq, rows, cols);
            let same_codes = codes.iter().zip(&raw).filter(|(a, b)| a == b || (f8e4m3_to_f32(**a) == 0.0 && f8e4m3_to_f32(**b) == 0.0)).count();
            assert_eq!(same_codes, raw.len(), "{name}: codes differ");
            for (s, f) in scales.iter().zip(&raw_scales) {
                assert!((s - f).abs() <= f.abs() * 2.0 * f32::EPSILON, "{name}: scale {s} vs file {f}");
            }
            checked += 1;
        }
        assert_eq!(checked, 4);
    }
}
