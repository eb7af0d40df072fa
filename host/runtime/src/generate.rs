//! One sequence from prompt to finish, driven inline through the same engine core the server
//! runs: what `mlahost generate`, the golden tests and the GPU checks use. The whole prompt is
//! one prefill chunk and nothing is cached across calls, so each call starts from an empty
//! cache, as a single request to a fresh server would.

use crate::core::EngineCore;
use crate::metrics::Metrics;
use crate::request::{EngineRequest, Event, FinishReason as EngineFinish};
use crate::RuntimeError;
use mlahost_core::{BlockAllocator, Scheduler, SchedulerConfig};
use mlahost_engine::sampling::SamplingParams;
use mlahost_engine::{Backend, LoadedModel};
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct GenerateRequest {
    pub prompt: Vec<u32>,
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// How many alternatives to report per step (0: none).
    pub top_logprobs: usize,
    /// Keep going past the model's end-of-sequence tokens.
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
    /// Wall time of the steps up to the first token, and of the steps after it.
    pub prefill_seconds: f64,
    pub decode_seconds: f64,
}

pub fn generate(model: &LoadedModel, backend: &mut (dyn Backend + 'static), req: &GenerateRequest) -> Result<GenerateOutput, RuntimeError> {
    if req.prompt.is_empty() {
        return Err(RuntimeError::InvalidRequest("the prompt is empty".into()));
    }
    req.sampling.validate().map_err(RuntimeError::InvalidRequest)?;
    let geo = backend.cache_geometry();
    let total = req.prompt.len() + req.max_tokens;
    let scheduler = SchedulerConfig {
        max_num_batched_tokens: req.prompt.len(),
        max_num_seqs: 1,
        max_queued_requests: 1,
        prefix_caching: false,
        ..SchedulerConfig::default()
    };
    let pools = backend.cache_pools();
    let make = Box::new(move || Scheduler::with_pools(scheduler, BlockAllocator::split(geo.num_pages, geo.page_size, pools)?));
    let mut core = EngineCore::new(model, backend, make, total, Arc::new(Metrics::new("generate", 0)))?;
    let started = Instant::now();
    let request = EngineRequest {
        ignore_eos: req.ignore_eos,
        logprobs: Some(req.top_logprobs),
        arrived: started,
        ..EngineRequest::new(req.prompt.clone(), req.sampling.clone(), req.max_tokens)
    };
    let (mut sinks, mut rx) = crate::events::event_stream(std::slice::from_ref(&request));
    let sink = sinks.pop().ok_or_else(|| RuntimeError::Generation("no event sink".into()))?;
    core.add(1, request, sink);
    let mut out = GenerateOutput {
        token_ids: Vec::new(),
        logprobs: Vec::new(),
        top_logprobs: Vec::new(),
        finish_reason: FinishReason::Length,
        prefill_seconds: 0.0,
        decode_seconds: 0.0,
    };
    let mut first_token = None;
    loop {
        while let Some((_, event)) = rx.try_recv() {
            match event {
                Event::Token(t) => {
                    first_token.get_or_insert_with(Instant::now);
                    out.token_ids.push(t.id);
                    out.logprobs.push(t.logprob);
                    if req.top_logprobs > 0 {
                        out.top_logprobs.push(t.top);
                    }
                }
                Event::Finished { reason, .. } => {
                    out.finish_reason = if reason == EngineFinish::Stop { FinishReason::Stop } else { FinishReason::Length };
                    let first = first_token.unwrap_or(started);
                    out.prefill_seconds = first.duration_since(started).as_secs_f64();
                    out.decode_seconds = first.elapsed().as_secs_f64();
                    return Ok(out);
                }
                Event::Failed(f) => return Err(RuntimeError::Generation(f.detail)),
                Event::Rejected(why) => return Err(RuntimeError::InvalidRequest(why)),
                Event::Accepted | Event::Scheduled(_) | Event::PromptLogprobs(_) => {}
            }
        }
        if !core.has_work() {
            return Err(RuntimeError::Generation("the engine stopped before the request finished".into()));
        }
        if !core.step() {
            return Err(RuntimeError::Generation("the engine step panicked".into()));
        }
    }
}
