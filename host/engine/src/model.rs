//! A checkpoint directory loaded into memory: config, tokenizer and weights.

use crate::checkpoint::{Checkpoint, ProgressFn};
use crate::config::ModelConfig;
use crate::cpu::{CpuBackend, CpuOptions};
use crate::dummy_weights::DummyWeights;
use crate::tokenizer::Tokenizer;
use crate::weights::{ModelWeights, TensorSource};
use crate::{EngineError, Result};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub struct LoadedModel {
    pub dir: PathBuf,
    pub config: ModelConfig,
    pub tokenizer: Tokenizer,
    pub format: LoadFormat,
    /// The whole model in host memory, loaded on first use (`weights`): the CPU engine and the
    /// checks need it; a GPU backend streams its share from `source` instead.
    host: Mutex<Option<Arc<ModelWeights>>>,
    progress: Option<Arc<dyn LoadProgress>>,
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
    /// Config, tokenizer and weights (in host memory).
    pub fn load(dir: &Path, progress: Option<Arc<dyn LoadProgress>>) -> Result<Self> {
        Self::load_as(dir, LoadFormat::Safetensors, progress)
    }

    /// As `load`, from `format`.
    pub fn load_as(dir: &Path, format: LoadFormat, progress: Option<Arc<dyn LoadProgress>>) -> Result<Self> {
        let model = Self::open(dir, format, progress)?;
        model.weights()?;
        Ok(model)
    }

    /// Config and tokenizer only; the weights are read when a backend asks (`weights`, or
    /// `source` for a loader that streams them).
    pub fn open(dir: &Path, format: LoadFormat, progress: Option<Arc<dyn LoadProgress>>) -> Result<Self> {
        if !dir.is_dir() {
            return Err(EngineError::Io {
                path: dir.into(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "model directory not found"),
            });
        }
        let config = ModelConfig::from_file(&dir.join("config.json"))?;
        let tokenizer = Tokenizer::from_dir(dir)?;
        if format == LoadFormat::Safetensors {
            Checkpoint::open(dir)?; // a missing or unreadable checkpoint is refused here
        }
        Ok(Self { dir: dir.into(), config, tokenizer, format, host: Mutex::new(None), progress })
    }

    /// A model whose weights are already in memory (e.g. a check's edited copy).
    pub fn with_weights(dir: &Path, config: ModelConfig, tokenizer: Tokenizer, weights: Arc<ModelWeights>) -> Self {
        Self { dir: dir.into(), config, tokenizer, format: LoadFormat::Safetensors, host: Mutex::new(Some(weights)), progress: None }
    }

    /// The whole model in host memory (FP8 weights dequantized), loaded once.
    pub fn weights(&self) -> Result<Arc<ModelWeights>> {
        let mut host = self.host.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = host.as_ref() {
            return Ok(w.clone());
        }
        let w = Arc::new(ModelWeights::load(self.source(false)?.as_ref(), &self.config)?);
        if let Some(p) = &self.progress {
            p.finish();
        }
        *host = Some(w.clone());
        Ok(w)
    }

    /// The weights if they are in host memory already.
    pub fn loaded_weights(&self) -> Option<Arc<ModelWeights>> {
        self.host.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Where the weights come from, tensor by tensor: the checkpoint (FP8 weights as stored
    /// when `keep_fp8`, else dequantized) or generated values. Reports to the progress bar.
    pub fn source(&self, keep_fp8: bool) -> Result<Box<dyn TensorSource>> {
        if self.format == LoadFormat::Dummy {
            if let Some(p) = &self.progress {
                p.start(0);
            }
            return Ok(Box::new(DummyWeights { seed: 0, keep_fp8 }));
        }
        let mut ckpt = Checkpoint::open(&self.dir)?.keep_fp8(keep_fp8);
        if let Some(p) = &self.progress {
            p.start(ckpt.total_bytes());
            let p2 = p.clone();
            let f: ProgressFn = Box::new(move |b| p2.advance(b));
            ckpt.set_progress(f);
        }
        Ok(Box::new(ckpt))
    }

    /// Tells the progress bar the weights are in (after a streaming loader's last tensor).
    pub fn finish_progress(&self) {
        if let Some(p) = &self.progress {
            p.finish();
        }
    }

    pub fn cpu_backend(&self, opts: CpuOptions) -> Result<CpuBackend> {
        CpuBackend::new(self.config.clone(), self.weights()?, opts)
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
