//! A checkpoint directory loaded into memory: config, tokenizer and weights.

use crate::checkpoint::{Checkpoint, ProgressFn};
use crate::config::ModelConfig;
use crate::cpu::{CpuBackend, CpuOptions};
use crate::dummy_weights::DummyWeights;
use crate::tokenizer::Tokenizer;
use crate::weights::ModelWeights;
use crate::{EngineError, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub struct LoadedModel {
    pub dir: PathBuf,
    pub config: ModelConfig,
    pub tokenizer: Tokenizer,
    pub weights: Arc<ModelWeights>,
}

/// Where the weights come from (vLLM's `--load-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LoadFormat {
    /// The directory's safetensors (`auto` and `safetensors`).
    #[default]
    Safetensors,
    /// Generated from config.json's shapes (`dummy_weights`); only config.json and the
    /// tokenizer are read.
    Dummy,
}

impl LoadFormat {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "auto" | "safetensors" => Ok(Self::Safetensors),
            "dummy" => Ok(Self::Dummy),
            other => Err(EngineError::InvalidRequest(format!("--load-format {other:?}: expected auto, safetensors or dummy"))),
        }
    }
}

/// Reports loading progress: first the total bytes, then each tensor's bytes as it lands.
pub trait LoadProgress: Send + Sync {
    fn start(&self, total_bytes: u64);
    fn advance(&self, bytes: u64);
    fn finish(&self);
}

impl LoadedModel {
    pub fn load(dir: &Path, progress: Option<Arc<dyn LoadProgress>>) -> Result<Self> {
        Self::load_as(dir, LoadFormat::Safetensors, progress)
    }

    pub fn load_as(dir: &Path, format: LoadFormat, progress: Option<Arc<dyn LoadProgress>>) -> Result<Self> {
        if !dir.is_dir() {
            return Err(EngineError::Io {
                path: dir.into(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "model directory not found"),
            });
        }
        let config = ModelConfig::from_file(&dir.join("config.json"))?;
        let tokenizer = Tokenizer::from_dir(dir)?;
        if format == LoadFormat::Dummy {
            let weights = ModelWeights::load(&DummyWeights { seed: 0 }, &config)?;
            if let Some(p) = &progress {
                p.start(0);
                p.finish();
            }
            return Ok(Self { dir: dir.into(), config, tokenizer, weights: Arc::new(weights) });
        }
        let mut ckpt = Checkpoint::open(dir)?;
        if let Some(p) = &progress {
            p.start(ckpt.total_bytes());
            let p2 = p.clone();
            let f: ProgressFn = Box::new(move |b| p2.advance(b));
            ckpt.set_progress(f);
        }
        let weights = ModelWeights::load(&ckpt, &config)?;
        if let Some(p) = &progress {
            p.finish();
        }
        Ok(Self { dir: dir.into(), config, tokenizer, weights: Arc::new(weights) })
    }

    pub fn cpu_backend(&self, opts: CpuOptions) -> Result<CpuBackend> {
        CpuBackend::new(self.config.clone(), self.weights.clone(), opts)
    }

    /// Token ids that end generation: the config's, plus the tokenizer's EOS.
    pub fn stop_token_ids(&self) -> Vec<u32> {
        let mut ids = self.config.eos_token_ids.clone();
        if let Some(e) = self.tokenizer.eos_token_id {
            if !ids.contains(&e) {
                ids.push(e);
            }
        }
        ids
    }
}
