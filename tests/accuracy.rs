//! Latent-cache dtype accuracy: a greedy run, the same continuation teacher-forced through
//! another cache dtype, and the perplexity of a fixed text. Used by the kv_cache_dtype test and
//! the `kv_accuracy` example that produced the figures in host/engine/KV_CACHE.md.

use crate::backend_with_dtype;
use mlahost_engine::cpu::AttentionMode;
use mlahost_runtime::generate::{generate, GenerateOutput, GenerateRequest};
use mlahost_engine::sampling::{argmax, log_softmax, top_logprobs, SamplingParams};
use mlahost_engine::{Backend, KvCacheDtype, LoadedModel, LogitsRequest, Result, SeqChunk};

/// A fixed English text for teacher-forced perplexity.
pub const PERPLEXITY_TEXT: &str = "The latent cache of multi-head latent attention keeps one compressed \
vector per token and layer instead of a key and a value for every head. A server that stores it in \
eight-bit floating point holds almost twice as many tokens in the same memory, and the question is \
what that costs: how often the most likely next token changes, and by how much its probability moves. \
This paragraph is scored token by token, with the true text fed back at every step, so that the \
answer does not depend on where two greedy runs first part ways.";

const PAGE_SIZE: usize = 64;

/// Greedy decoding with `dtype`, reporting the top two log-probabilities per step.
pub fn greedy(model: &LoadedModel, dtype: KvCacheDtype, prompt: &[u32], n: usize) -> Result<GenerateOutput> {
    let mut b = backend_with_dtype(model, (prompt.len() + n).div_ceil(PAGE_SIZE), PAGE_SIZE, AttentionMode::Auto, dtype);
    let req = GenerateRequest {
        prompt: prompt.to_vec(),
        max_tokens: n,
        sampling: SamplingParams { temperature: 0.0, ..Default::default() },
        top_logprobs: 2,
        ignore_eos: true,
    };
    generate(model, &mut b, &req).map_err(|e| mlahost_engine::EngineError::InvalidRequest(e.to_string()))
}

/// One step of a teacher-forced run.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    pub argmax: u32,
    /// Log-probability of the forced token.
    pub forced_logprob: f32,
    /// Top-1 minus top-2 log-probability.
    pub margin: f32,
}

/// Prefills `prompt`, then feeds `continuation` one token at a time (the decode path), scoring
/// each forced token before it is fed.
pub fn teacher_forced(model: &LoadedModel, dtype: KvCacheDtype, prompt: &[u32], continuation: &[u32]) -> Result<Vec<Step>> {
    let total = prompt.len() + continuation.len();
    let mut b = backend_with_dtype(model, total.div_ceil(PAGE_SIZE), PAGE_SIZE, AttentionMode::Auto, dtype);
    let pages: Vec<u32> = (0..total.div_ceil(PAGE_SIZE) as u32).collect();
    let mut steps = Vec::with_capacity(continuation.len());
    let (mut pos, mut feed) = (0, prompt);
    for &forced in continuation {
        let chunk = SeqChunk { tokens: feed, start_pos: pos, block_table: &pages, logits: LogitsRequest::Last };
        let logits = b.forward(&[chunk])?;
        let row = logits.last_of(0).unwrap_or(&[]);
        let lp = log_softmax(row);
        let top = top_logprobs(&lp, 2);
        let margin = top[0].1 - top.get(1).map_or(f32::NEG_INFINITY, |t| t.1);
        steps.push(Step { argmax: argmax(row), forced_logprob: lp[forced as usize], margin });
        pos += feed.len();
        feed = std::slice::from_ref(&continuation[steps.len() - 1]);
    }
    Ok(steps)
}

/// exp(mean negative log-likelihood) of `tokens[1..]`, all positions in one pass per 256 tokens.
pub fn perplexity(model: &LoadedModel, dtype: KvCacheDtype, tokens: &[u32]) -> Result<f64> {
    let mut b = backend_with_dtype(model, tokens.len().div_ceil(PAGE_SIZE), PAGE_SIZE, AttentionMode::Auto, dtype);
    let pages: Vec<u32> = (0..tokens.len().div_ceil(PAGE_SIZE) as u32).collect();
    let mut nll = 0f64;
    for start in (0..tokens.len() - 1).step_by(256) {
        let end = (start + 256).min(tokens.len() - 1);
        let chunk = SeqChunk { tokens: &tokens[start..end], start_pos: start, block_table: &pages, logits: LogitsRequest::All };
        let logits = b.forward(&[chunk])?;
        for (i, r) in logits.rows[0].clone().enumerate() {
            nll -= log_softmax(logits.row(r))[tokens[start + i + 1] as usize] as f64;
        }
    }
    Ok((nll / (tokens.len() - 1) as f64).exp())
}

/// `candidate` against `reference` over the reference's greedy continuation.
#[derive(Debug, Clone, Copy)]
pub struct Agreement {
    /// Leading tokens of the candidate's own greedy run equal to the reference's.
    pub free_running_prefix: usize,
    /// The reference's top-1 minus top-2 log-probability where the free runs part (if they do).
    pub margin_at_divergence: Option<f32>,
    /// Teacher-forced steps whose argmax equals the reference's.
    pub top1_agree: usize,
    pub steps: usize,
    pub mean_abs_dlogprob: f64,
    pub max_abs_dlogprob: f64,
}

pub fn compare(reference: &GenerateOutput, ref_forced: &[Step], cand: &GenerateOutput, cand_forced: &[Step]) -> Agreement {
    let prefix = reference.token_ids.iter().zip(&cand.token_ids).take_while(|(a, b)| a == b).count();
    let margin_at_divergence = (prefix < reference.token_ids.len()).then(|| {
        let top = &reference.top_logprobs[prefix];
        top[0].1 - top.get(1).map_or(f32::NEG_INFINITY, |t| t.1)
    });
    let d: Vec<f64> = ref_forced.iter().zip(cand_forced).map(|(r, c)| (r.forced_logprob as f64 - c.forced_logprob as f64).abs()).collect();
    Agreement {
        free_running_prefix: prefix,
        margin_at_divergence,
        top1_agree: ref_forced.iter().zip(cand_forced).filter(|(r, c)| r.argmax == c.argmax).count(),
        steps: d.len(),
        mean_abs_dlogprob: d.iter().sum::<f64>() / d.len().max(1) as f64,
        max_abs_dlogprob: d.iter().cloned().fold(0.0, f64::max),
    }
}
