//! Helpers shared by the end-to-end tests: fixture paths, goldens, scratch copies of
//! checkpoints, and a seeded source of fresh random prompts.

pub mod accuracy;

use mlahost_core::{BlockAllocator, BlockTable};
use mlahost_engine::cpu::{AttentionMode, CpuBackend, CpuOptions};
use mlahost_engine::{Backend, CacheGeometry, KvCacheDtype, LoadedModel, Logits, LogitsRequest, SeqChunk};
use serde_json::Value;
use std::path::{Path, PathBuf};

pub const FIXTURES: [&str; 3] = ["tiny-v2-lite", "tiny-v2", "tiny-v3-fp8"];
/// The trained English model `serve` runs when no --model is given (examples/train).
pub const BUILT_IN: &str = "english-18m";

/// The fixtures beside this crate, or under $MLAHOST_FIXTURES (test binaries carried to a GPU
/// machine run from another checkout).
pub fn fixture_dir(name: &str) -> PathBuf {
    let root = std::env::var_os("MLAHOST_FIXTURES").map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures"), PathBuf::from);
    root.join(name)
}

pub fn golden(name: &str) -> Value {
    let text = std::fs::read_to_string(fixture_dir(name).join("golden.json")).expect("golden.json");
    serde_json::from_str(&text).expect("golden.json is JSON")
}

pub fn load(name: &str) -> LoadedModel {
    LoadedModel::load(&fixture_dir(name), None).unwrap_or_else(|e| panic!("loading {name}: {e}"))
}

pub fn backend(model: &LoadedModel, num_pages: usize, page_size: usize, attention: AttentionMode) -> CpuBackend {
    backend_with_dtype(model, num_pages, page_size, attention, KvCacheDtype::F32)
}

pub fn backend_with_dtype(model: &LoadedModel, num_pages: usize, page_size: usize, attention: AttentionMode, kv_dtype: KvCacheDtype) -> CpuBackend {
    model.cpu_backend(CpuOptions { geometry: CacheGeometry { num_pages, page_size }, attention, kv_dtype }).expect("backend")
}

pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array().expect("id list").iter().map(|x| x.as_u64().expect("id") as u32).collect()
}

pub fn floats(v: &Value) -> Vec<f64> {
    v.as_array().expect("number list").iter().map(|x| x.as_f64().expect("number")).collect()
}

/// A seed that differs per run (printed, so a failure can be replayed with MLAHOST_TEST_SEED).
pub fn fresh_seed() -> u64 {
    let seed = std::env::var("MLAHOST_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        use std::hash::{BuildHasher, RandomState};
        RandomState::new().hash_one(std::time::SystemTime::now())
    });
    eprintln!("random seed: {seed} (set MLAHOST_TEST_SEED to replay)");
    seed
}

pub fn random_tokens(rng: &mut mlahost_engine::sampling::Rng, n: usize, vocab: usize) -> Vec<u32> {
    (0..n).map(|_| (rng.next_u64() % vocab as u64) as u32).collect()
}

/// Runs `tokens[from..]` through `backend` (positions `from..` , the cache already holding
/// `tokens[..from]`) in chunks of `chunk` tokens with pages laid out by `pages`, returning the
/// logits of every position run.
pub fn all_logits(backend: &mut dyn Backend, tokens: &[u32], from: usize, chunk: usize, pages: &[u32]) -> Vec<f32> {
    let mut out = Vec::new();
    let mut pos = from;
    while pos < tokens.len() {
        let end = pos.saturating_add(chunk).min(tokens.len());
        let seq = SeqChunk { tokens: &tokens[pos..end], start_pos: pos, block_table: pages, logits: LogitsRequest::All };
        let l: Logits = backend.forward(&[seq]).expect("forward");
        out.extend_from_slice(&l.data);
        pos = end;
    }
    out
}

/// Single-token steps from `start` to the end, as decoding does.
pub fn decode_logits_from(b: &mut dyn Backend, tokens: &[u32], start: usize, pages: &[u32]) -> Vec<f32> {
    let mut out = Vec::new();
    for pos in start..tokens.len() {
        let seq = SeqChunk { tokens: &tokens[pos..pos + 1], start_pos: pos, block_table: pages, logits: LogitsRequest::All };
        out.extend(b.forward(&[seq]).unwrap().data);
    }
    out
}

/// Pages for `tokens` tokens from a fresh allocator over the whole cache.
pub fn pages_for(backend: &dyn Backend, tokens: usize) -> Vec<u32> {
    let geo = backend.cache_geometry();
    let mut alloc = BlockAllocator::new(geo.num_pages, geo.page_size).expect("allocator");
    let mut table = BlockTable::new();
    table.ensure_capacity(&mut alloc, tokens).expect("enough pages");
    table.pages().to_vec()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// A scratch copy of a fixture that a test may break.
pub struct ScratchCheckpoint {
    pub dir: PathBuf,
}

impl ScratchCheckpoint {
    pub fn copy_of(name: &str, tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("mlahost-test-{}-{tag}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        for entry in std::fs::read_dir(fixture_dir(name)).expect("fixture dir") {
            let entry = entry.expect("entry");
            std::fs::copy(entry.path(), dir.join(entry.file_name())).expect("copy");
        }
        Self { dir }
    }

    /// Rewrites a safetensors file's JSON header with `edit`, keeping the data bytes.
    pub fn edit_safetensors_header(&self, file: &str, edit: impl FnOnce(&mut serde_json::Map<String, Value>)) {
        let path = self.dir.join(file);
        let bytes = std::fs::read(&path).expect("read safetensors");
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let mut header: Value = serde_json::from_slice(&bytes[8..8 + n]).expect("header");
        edit(header.as_object_mut().expect("object"));
        let mut text = serde_json::to_vec(&header).unwrap();
        // The data offsets are relative to the header's end, so any header length works.
        while text.len() % 8 != 0 {
            text.push(b' ');
        }
        let mut out = (text.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(&text);
        out.extend_from_slice(&bytes[8 + n..]);
        std::fs::write(&path, out).expect("write safetensors");
    }

    pub fn edit_json(&self, file: &str, edit: impl FnOnce(&mut Value)) {
        let path = self.dir.join(file);
        let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
        edit(&mut v);
        std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).expect("write");
    }

    pub fn load_error(&self) -> String {
        match LoadedModel::load(&self.dir, None) {
            Ok(_) => panic!("loading the broken checkpoint in {} succeeded", self.dir.display()),
            Err(e) => e.to_string(),
        }
    }
}

impl Drop for ScratchCheckpoint {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
