//! A hub checkpoint directory: `model.safetensors` or shards listed in
//! `model.safetensors.index.json`, read through memory maps.

pub(crate) mod dtype;
mod safetensors;

pub use dtype::{bf16_to_f32, f16_to_f32, f32_to_bf16, f8e4m3_to_f32, DType};
pub use safetensors::TensorInfo;

use crate::config::Fp8Blocks;
use crate::tensor::{Fp8Data, Matrix, Storage};
use crate::{EngineError, Result};
use safetensors::SafetensorsFile;
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

pub type ProgressFn = Box<dyn Fn(u64) + Send + Sync>;

pub struct Checkpoint {
    files: Vec<SafetensorsFile>,
    /// Tensor name -> index into `files`.
    location: HashMap<String, usize>,
    progress: Option<ProgressFn>,
    /// Hand FP8 weights over as stored (codes and block scales) rather than dequantized.
    keep_fp8: bool,
}

impl Checkpoint {
    pub fn open(dir: &Path) -> Result<Self> {
        let index_path = dir.join("model.safetensors.index.json");
        let single_path = dir.join("model.safetensors");
        if index_path.exists() {
            Self::open_sharded(dir, &index_path)
        } else if single_path.exists() {
            let file = SafetensorsFile::open(&single_path)?;
            let location = file.tensors.keys().map(|k| (k.clone(), 0)).collect();
            Ok(Self { files: vec![file], location, progress: None, keep_fp8: false })
        } else {
            Err(EngineError::Io {
                path: dir.into(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no model.safetensors or model.safetensors.index.json in this directory",
                ),
            })
        }
    }

    fn open_sharded(dir: &Path, index_path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(index_path).map_err(|source| EngineError::Io { path: index_path.into(), source })?;
        let bad = |message: &str| EngineError::Json { file: index_path.into(), message: message.into() };
        let index: Value = serde_json::from_str(&text).map_err(|e| bad(&e.to_string()))?;
        let map = index.get("weight_map").and_then(Value::as_object).ok_or_else(|| bad("missing object `weight_map`"))?;
        let mut files = Vec::new();
        let mut file_ids: HashMap<String, usize> = HashMap::new();
        let mut location = HashMap::new();
        for (tensor, file) in map {
            let file = file.as_str().ok_or_else(|| bad(&format!("weight_map[{tensor:?}] is not a file name")))?;
            if file.contains('/') || file.contains("..") {
                return Err(bad(&format!("weight_map[{tensor:?}] names a file outside the checkpoint: {file:?}")));
            }
            let id = match file_ids.get(file) {
                Some(&id) => id,
                None => {
                    files.push(SafetensorsFile::open(&dir.join(file))?);
                    file_ids.insert(file.to_string(), files.len() - 1);
                    files.len() - 1
                }
            };
            if !files[id].tensors.contains_key(tensor) {
                return Err(EngineError::tensor(tensor, format!("the index places it in {file}, which does not contain it")));
            }
            location.insert(tensor.clone(), id);
        }
        Ok(Self { files, location, progress: None, keep_fp8: false })
    }

    /// Called with the byte size of each tensor as it is loaded (for a progress bar).
    pub fn set_progress(&mut self, f: ProgressFn) {
        self.progress = Some(f);
    }

    /// FP8 weights come out of `load_matrix` as stored (`Storage::Fp8`: the file's codes and
    /// `weight_scale_inv`), for a GPU that keeps them so; by default they are dequantized.
    pub fn keep_fp8(mut self, keep: bool) -> Self {
        self.keep_fp8 = keep;
        self
    }

    pub fn total_bytes(&self) -> u64 {
        self.location.iter().map(|(name, &f)| self.files[f].tensors[name].end as u64 - self.files[f].tensors[name].start as u64).sum()
    }

    /// Parameters of the model from the headers alone (no tensor data is read): every tensor
    /// except fp8 block scales (`*_scale_inv`), which disappear once weights are dequantized.
    pub fn parameter_count(&self) -> u64 {
        self.location
            .iter()
            .filter(|(name, _)| !name.ends_with("_scale_inv"))
            .map(|(name, &f)| self.files[f].tensors[name].numel() as u64)
            .sum()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.location.contains_key(name)
    }

    pub fn info(&self, name: &str) -> Result<&TensorInfo> {
        let &f = self.location.get(name).ok_or_else(|| EngineError::MissingTensor(name.into()))?;
        Ok(&self.files[f].tensors[name])
    }

    fn bytes(&self, name: &str) -> Result<(&TensorInfo, &[u8])> {
        let &f = self.location.get(name).ok_or_else(|| EngineError::MissingTensor(name.into()))?;
        let info = &self.files[f].tensors[name];
        if let Some(p) = &self.progress {
            p((info.end - info.start) as u64);
        }
        Ok((info, self.files[f].bytes(info)))
    }

    fn check_shape(name: &str, info: &TensorInfo, shape: &[usize]) -> Result<()> {
        if info.shape != shape {
            return Err(EngineError::tensor(name, format!("expected shape {shape:?}, found {:?}", info.shape)));
        }
        Ok(())
    }

    /// A 1-D (or any-shape) tensor of floats, widened to f32.
    pub fn load_f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let (info, bytes) = self.bytes(name)?;
        Self::check_shape(name, info, shape)?;
        match info.dtype {
            DType::F32 => Ok(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()),
            DType::Bf16 => Ok(u16s(bytes).map(bf16_to_f32).collect()),
            DType::F16 => Ok(u16s(bytes).map(f16_to_f32).collect()),
            _ => Err(EngineError::tensor(name, format!("dtype {} is not supported here (F32, BF16 or F16)", info.dtype_name))),
        }
    }

    /// A linear layer's `[rows, cols]` weight. Fp8 weights are dequantized with their
    /// `<name>_scale_inv` block scales when the config declares fp8 quantization.
    pub fn load_matrix(&self, name: &str, rows: usize, cols: usize, fp8: Option<Fp8Blocks>) -> Result<Matrix> {
        let info = self.info(name)?;
        match info.dtype {
            DType::Bf16 => {
                let (info, bytes) = self.bytes(name)?;
                Self::check_shape(name, info, &[rows, cols])?;
                Ok(Matrix { rows, cols, data: Storage::Bf16(u16s(bytes).collect()) })
            }
            DType::F8E4M3 => {
                let blocks = fp8.ok_or_else(|| {
                    EngineError::tensor(name, "is F8_E4M3 but config.json declares no fp8 quantization_config")
                })?;
                if self.keep_fp8 {
                    let (codes, scales) = self.load_fp8_raw(name, rows, cols, blocks)?;
                    let data = Fp8Data { codes, scales, block_rows: blocks.block_rows, block_cols: blocks.block_cols };
                    return Ok(Matrix { rows, cols, data: Storage::Fp8(data) });
                }
                self.load_fp8(name, rows, cols, blocks)
            }
            _ => Ok(Matrix::from_f32(rows, cols, self.load_f32(name, &[rows, cols])?)),
        }
    }

    /// An fp8 weight as stored: `[rows, cols]` e4m3 codes and its `[ceil(rows/br), ceil(cols/bc)]`
    /// `weight_scale_inv` (value = code x scale).
    pub fn load_fp8_raw(&self, name: &str, rows: usize, cols: usize, b: Fp8Blocks) -> Result<(Vec<u8>, Vec<f32>)> {
        let scale_name = format!("{name}_scale_inv");
        let (br, bc) = (rows.div_ceil(b.block_rows), cols.div_ceil(b.block_cols));
        let scales = self.load_f32(&scale_name, &[br, bc])?;
        let (info, bytes) = self.bytes(name)?;
        Self::check_shape(name, info, &[rows, cols])?;
        if info.dtype != DType::F8E4M3 {
            return Err(EngineError::tensor(name, format!("is {}, not F8_E4M3", info.dtype_name)));
        }
        Ok((bytes.to_vec(), scales))
    }

    fn load_fp8(&self, name: &str, rows: usize, cols: usize, b: Fp8Blocks) -> Result<Matrix> {
        let (codes, scales) = self.load_fp8_raw(name, rows, cols, b)?;
        let bytes = &codes[..];
        let bc = cols.div_ceil(b.block_cols);
        let table: Vec<f32> = (0..=255u8).map(f8e4m3_to_f32).collect();
        let mut out = vec![0f32; rows * cols];
        for r in 0..rows {
            let scale_row = &scales[(r / b.block_rows) * bc..(r / b.block_rows + 1) * bc];
            for c in 0..cols {
                out[r * cols + c] = table[bytes[r * cols + c] as usize] * scale_row[c / b.block_cols];
            }
        }
        if out.iter().any(|v| !v.is_finite()) {
            return Err(EngineError::tensor(name, "dequantized fp8 weight holds NaN or infinity"));
        }
        Ok(Matrix::from_f32(rows, cols, out))
    }
}

fn u16s(bytes: &[u8]) -> impl Iterator<Item = u16> + '_ {
    bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]))
}
