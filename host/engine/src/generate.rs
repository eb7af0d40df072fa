//! One sequence from prompt to finish on a backend: what `mlahost generate` runs. The server's
//! scheduler batches many of these; this loop is the simplest correct use of the interface.

use crate::batch::{Backend, LogitsRequest, SeqChunk};
use crate::sampling::{log_softmax, sample, top_logprobs, Rng, SamplingParams};
use crate::{EngineError, Result};
use mlahost_core::{BlockAllocator, BlockTable};
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct GenerateRequest {
    pub prompt: Vec<u32>,
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// How many alternatives to report per step (0: none).
    pub top_logprobs: usize,
    pub stop_token_ids: Vec<u32>,
    pub ignore_eos: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Length,
    Stop,
}

#[derive(Debug, Clone)]
pub struct GenerateOutput {
    pub token_ids: Vec<u32>,
    /// Log-softmax (before temperature) of each generated token.
    pub logprobs: Vec<f32>,
    pub top_logprobs: Vec<Vec<(u32, f32)>>,
    pub finish_reason: FinishReason,
    pub prefill_seconds: f64,
    pub decode_seconds: f64,
}

pub fn generate(backend: &mut dyn Backend, req: &GenerateRequest) -> Result<GenerateOutput> {
    if req.prompt.is_empty() {
        return Err(EngineError::InvalidRequest("the prompt is empty".into()));
    }
    req.sampling.validate().map_err(EngineError::InvalidRequest)?;
    let geo = backend.cache_geometry();
    let mut pages = BlockAllocator::new(geo.num_pages, geo.page_size)?;
    let mut table = BlockTable::new();
    let mut rng = req.sampling.seed.map_or_else(Rng::from_entropy, Rng::seeded);
    let mut out = GenerateOutput {
        token_ids: Vec::new(),
        logprobs: Vec::new(),
        top_logprobs: Vec::new(),
        finish_reason: FinishReason::Length,
        prefill_seconds: 0.0,
        decode_seconds: 0.0,
    };
    let mut input: Vec<u32> = req.prompt.clone();
    let mut pos = 0;
    while out.token_ids.len() < req.max_tokens {
        let started = Instant::now();
        table.ensure_capacity(&mut pages, pos + input.len())?;
        let chunk = SeqChunk { tokens: &input, start_pos: pos, block_table: table.pages(), logits: LogitsRequest::Last };
        let logits = backend.forward(&[chunk])?;
        let row = logits.last_of(0).ok_or_else(|| EngineError::Device("the backend returned no logits row for the sequence".into()))?;
        let token = sample(row, &req.sampling, &mut rng);
        let lp = log_softmax(row);
        out.logprobs.push(lp[token as usize]);
        if req.top_logprobs > 0 {
            out.top_logprobs.push(top_logprobs(&lp, req.top_logprobs));
        }
        out.token_ids.push(token);
        let elapsed = started.elapsed().as_secs_f64();
        if pos == 0 {
            out.prefill_seconds = elapsed;
        } else {
            out.decode_seconds += elapsed;
        }
        pos += input.len();
        input = vec![token];
        if !req.ignore_eos && req.stop_token_ids.contains(&token) {
            out.finish_reason = FinishReason::Stop;
            break;
        }
    }
    table.release_all(&mut pages)?;
    Ok(out)
}
