//! The engine interface shared by the CPU and CUDA backends: one forward pass over a ragged
//! batch, each sequence bringing its own new tokens, positions and block table.

use crate::sampling_params::{Rng, SamplingParams};
use crate::Result;
use mlahost_core::PageId;
use std::ops::Range;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitsRequest {
    /// Nothing (a prefill chunk that does not end the prompt).
    None,
    /// The last new token's logits (ends a prompt, or a decode step).
    Last,
    /// Every new token's logits (scoring, perplexity, speculative verification).
    All,
}

/// One sequence's share of a forward pass: `tokens` sit at positions
/// `start_pos .. start_pos + tokens.len()`; the block table must cover all of them, and the
/// cache already holds positions `0 .. start_pos`.
#[derive(Debug, Clone, Copy)]
pub struct SeqChunk<'a> {
    pub tokens: &'a [u32],
    pub start_pos: usize,
    pub block_table: &'a [PageId],
    pub logits: LogitsRequest,
}

/// How a backend holds the model's weights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightStorage {
    /// The linear layers' element type: `bf16`, `f32`, or `fp8_e4m3` (128 x 128 block scales).
    pub linears: &'static str,
    /// The embeddings and lm_head's.
    pub embeddings: &'static str,
    /// Bytes of weights on one device (one rank's share under a split).
    pub bytes: u64,
}

/// Logits rows for the sequences that asked for them, f32 `[rows, vocab]`.
#[derive(Debug, Clone, Default)]
pub struct Logits {
    pub vocab: usize,
    pub data: Vec<f32>,
    /// Per sequence of the batch, its rows in `data` (empty when it asked for none).
    pub rows: Vec<Range<usize>>,
}

impl Logits {
    pub fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.vocab..(r + 1) * self.vocab]
    }

    /// The last row of sequence `seq`, if it asked for logits.
    pub fn last_of(&self, seq: usize) -> Option<&[f32]> {
        let range = self.rows.get(seq)?;
        (!range.is_empty()).then(|| self.row(range.end - 1))
    }
}

/// Shape of the paged latent cache a backend owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheGeometry {
    pub num_pages: usize,
    pub page_size: usize,
}

/// What one sequence asks of a device-side sampler (see `Backend::forward_sampled`).
pub struct SampleRequest<'a> {
    pub params: &'a SamplingParams,
    pub prompt: &'a [u32],
    pub output: &'a [u32],
    /// Alternatives to report with the chosen token's logprob (0: only the token's own).
    pub top_logprobs: usize,
    /// The sequence's generator: a sampled row draws from it exactly when the host would.
    pub rng: &'a mut Rng,
    /// Only these tokens may be chosen (a grammar's mask): bit `i % 64` of word `i / 64`.
    /// Applied before penalties, as the host does with a sampler plugin's allow-set; the
    /// reported logprobs stay those of the raw distribution.
    pub allowed: AllowSet<'a>,
}

/// A sequence's allow-set for one step: known when the step starts, or being computed on
/// another thread (a grammar plugin) while the forward pass runs, and waited for only when the
/// sampler needs it.
#[derive(Debug, Clone, Copy)]
pub enum AllowSet<'a> {
    Ready(Option<&'a [u64]>),
    /// Filled once by the thread computing it (None: no mask); `get` blocks until then.
    Pending(&'a std::sync::OnceLock<Option<Vec<u64>>>),
}

impl<'a> AllowSet<'a> {
    pub const NONE: Self = Self::Ready(None);

    /// The allow-set, waiting for a pending one.
    pub fn get(&self) -> Option<&'a [u64]> {
        match *self {
            Self::Ready(a) => a,
            Self::Pending(slot) => slot.wait().as_deref(),
        }
    }
}

/// A token chosen on the device, with the logprobs of the model's own distribution (before
/// penalties and temperature, as the host reports them).
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceSample {
    pub token: u32,
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
}

/// A model executor. `forward` writes the new tokens' latents into the cache pages named by
/// each block table and returns the requested logits.
pub trait Backend: Send {
    fn forward(&mut self, batch: &[SeqChunk<'_>]) -> Result<Logits>;
    fn cache_geometry(&self) -> CacheGeometry;

    /// Page pools the scheduler must keep each sequence inside (`BlockAllocator::split`): one
    /// per data-parallel attention group, whose ranks hold only their pool's latents.
    fn cache_pools(&self) -> usize {
        1
    }

    /// How this backend stores the model's weights (per device, for one rank of a group), for
    /// the start-up log and /metrics. None where it does not say.
    fn weight_storage(&self) -> Option<WeightStorage> {
        None
    }

    /// Runs `batch` and samples one token for each sequence that asked for `Last` logits (in
    /// batch order, one request each), on the device, so the logits never leave it. `Ok(None)`
    /// when the backend cannot: nothing ran, call `forward` and sample on the host.
    fn forward_sampled(&mut self, _batch: &[SeqChunk<'_>], _requests: &mut [SampleRequest<'_>]) -> Result<Option<Vec<DeviceSample>>> {
        Ok(None)
    }

}

/// The end-to-end checks' hooks, kept off `Backend` because serving never uses them: the experts
/// each token was routed to, and following another backend's routing at near ties.
pub trait RoutingTrace: Backend {
    /// The experts each token of the last `forward` was routed to, per layer (`[layer][token]`,
    /// tokens in batch order; empty for dense layers), where the backend records them.
    /// `Ok(None)`: not recorded.
    fn routing(&self) -> Result<Option<Vec<Vec<TokenRoute>>>>;

    /// For the next `forward` only: where this backend's own routing margin is below `within`,
    /// take the experts of `routes` (another backend's `routing` of the same batch) instead, as a
    /// reference follows the tokens it is fed. A no-op where the backend cannot.
    fn follow_routing(&mut self, _routes: Vec<Vec<TokenRoute>>, _within: f32) {}
}

/// One token's routing at one MoE layer: the chosen experts (ascending) and, where the backend
/// knows it, how far the decision was from another (`cpu::moe::route_margin`; NaN if unknown).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenRoute {
    pub experts: Vec<u32>,
    pub margin: f32,
}

/// Checks a batch against a backend's vocabulary and cache before anything runs: every chunk
/// has tokens inside the vocabulary, and its block table covers its positions with pages of the
/// cache (entries past the last position are not read, so they are not checked).
pub fn validate_batch(batch: &[SeqChunk<'_>], vocab_size: usize, geo: CacheGeometry) -> Result<()> {
    for (i, s) in batch.iter().enumerate() {
        let bad = |m: String| Err(crate::EngineError::InvalidBatch(format!("sequence {i}: {m}")));
        if s.tokens.is_empty() {
            return bad("no new tokens".into());
        }
        if let Some(&t) = s.tokens.iter().find(|&&t| t as usize >= vocab_size) {
            return bad(format!("token id {t} is outside the vocabulary of {vocab_size}"));
        }
        let end = s.start_pos + s.tokens.len();
        if s.block_table.len() * geo.page_size < end {
            return bad(format!("block table of {} pages cannot hold {end} tokens", s.block_table.len()));
        }
        if let Some(&p) = s.block_table[..end.div_ceil(geo.page_size)].iter().find(|&&p| p as usize >= geo.num_pages) {
            return bad(format!("page {p} is outside the cache of {} pages", geo.num_pages));
        }
    }
    Ok(())
}
