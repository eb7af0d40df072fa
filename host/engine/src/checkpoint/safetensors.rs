//! A memory-mapped `.safetensors` file: an 8-byte little-endian header length, a JSON header
//! naming each tensor's dtype, shape and byte range, then the raw data.

use super::dtype::DType;
use crate::{EngineError, Result};
use memmap2::Mmap;
use serde_json::Value;
use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub dtype: DType,
    pub dtype_name: String,
    pub shape: Vec<usize>,
    /// Byte range inside the mapped file (header included in the offset).
    pub start: usize,
    pub end: usize,
}

impl TensorInfo {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

pub struct SafetensorsFile {
    mmap: Mmap,
    pub tensors: HashMap<String, TensorInfo>,
}

impl SafetensorsFile {
    pub fn open(path: &Path) -> Result<Self> {
        let io_err = |source| EngineError::Io { path: path.into(), source };
        let file = File::open(path).map_err(io_err)?;
        // SAFETY: the file is opened read-only and mapped privately; like every model loader we
        // rely on checkpoint files not being truncated or rewritten while the server runs.
        let mmap = unsafe { Mmap::map(&file) }.map_err(io_err)?;
        let tensors = parse_header(path, &mmap)?;
        Ok(Self { mmap, tensors })
    }

    pub fn bytes(&self, info: &TensorInfo) -> &[u8] {
        &self.mmap[info.start..info.end]
    }
}

fn parse_header(path: &Path, data: &[u8]) -> Result<HashMap<String, TensorInfo>> {
    let bad = |message: String| EngineError::Safetensors { file: path.into(), message };
    if data.len() < 8 {
        return Err(bad(format!("file is {} bytes, too short for the 8-byte header length", data.len())));
    }
    let mut len_bytes = [0u8; 8];
    len_bytes.copy_from_slice(&data[..8]);
    let header_len = u64::from_le_bytes(len_bytes) as usize;
    let data_start = 8usize.checked_add(header_len).filter(|&e| e <= data.len()).ok_or_else(|| {
        bad(format!("header of {header_len} bytes runs past the end of the {}-byte file (truncated?)", data.len()))
    })?;
    let header: Value = serde_json::from_slice(&data[8..data_start]).map_err(|e| bad(format!("header is not JSON: {e}")))?;
    let obj = header.as_object().ok_or_else(|| bad("header is not a JSON object".into()))?;
    let mut tensors = HashMap::new();
    for (name, entry) in obj {
        if name == "__metadata__" {
            continue;
        }
        let info = parse_entry(entry, data_start, data.len()).map_err(|m| bad(format!("tensor `{name}`: {m}")))?;
        tensors.insert(name.clone(), info);
    }
    Ok(tensors)
}

fn parse_entry(entry: &Value, data_start: usize, file_len: usize) -> std::result::Result<TensorInfo, String> {
    let dtype_name = entry.get("dtype").and_then(Value::as_str).ok_or("missing dtype")?.to_string();
    let elem = DType::size_of(&dtype_name).ok_or_else(|| format!("unknown dtype {dtype_name:?}"))?;
    let shape = entry
        .get("shape")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().map(|d| d.as_u64().map(|x| x as usize)).collect::<Option<Vec<_>>>())
        .ok_or("missing or invalid shape")?;
    let offsets = entry
        .get("data_offsets")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().map(|d| d.as_u64().map(|x| x as usize)).collect::<Option<Vec<_>>>())
        .filter(|o| o.len() == 2)
        .ok_or("missing or invalid data_offsets")?;
    let bytes = shape.iter().try_fold(elem, |acc, &d| acc.checked_mul(d)).ok_or("shape overflows")?;
    let (start, end) = match (data_start.checked_add(offsets[0]), data_start.checked_add(offsets[1])) {
        (Some(s), Some(e)) if e >= s => (s, e),
        _ => return Err(format!("invalid data_offsets {offsets:?}")),
    };
    if end - start != bytes {
        return Err(format!("data_offsets {offsets:?} do not match shape {shape:?} of {dtype_name}"));
    }
    if end > file_len {
        return Err(format!("data ends at byte {end} but the file has {file_len} (truncated?)"));
    }
    Ok(TensorInfo { dtype: DType::parse(&dtype_name), dtype_name, shape, start, end })
}
