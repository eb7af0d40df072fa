//! What a front end sends the engine, and what the engine sends back per choice: token ids
//! and their logprobs (the text is made in the front end, `output`).

use mlahost_core::PromptHashes;
use mlahost_engine::sampling::SamplingParams;
use std::sync::Arc;

#[derive(Clone)]
pub struct EngineRequest {
    pub prompt: Vec<u32>,
    pub params: SamplingParams,
    pub max_tokens: usize,
    /// Token ids that end generation besides the model's EOS (vLLM's `stop_token_ids`).
    pub stop_token_ids: Arc<[u32]>,
    pub ignore_eos: bool,
    /// Report the chosen token's logprob and this many alternatives (None: no logprobs).
    pub logprobs: Option<usize>,
    /// Report each prompt token's logprob, rank and this many alternatives (None: not asked;
    /// the whole prompt is then computed, never read from the prefix cache).
    pub prompt_logprobs: Option<usize>,
    pub priority: i32,
    /// Prefix-cache salt: only requests with the same salt share cached pages.
    pub salt: u64,
    /// The prompt's page hashes, computed once after admission for the router and the
    /// scheduler (None: the scheduler computes them).
    pub prompt_hashes: Option<PromptHashes>,
    /// A sampler plugin chosen by the request, by name (the core resolves it among the
    /// sampler plugins it was built with).
    pub sampler: Option<SamplerChoice>,
    /// The tenant's scheduler index (fair share).
    pub tenant: u32,
    /// When the HTTP layer received the request: latency clocks start here.
    pub arrived: std::time::Instant,
}

/// `"sampler": name` and its per-request `sampler_config`.
#[derive(Debug, Clone)]
pub struct SamplerChoice {
    pub name: String,
    pub config: String,
}

impl EngineRequest {
    /// A request of one tenant-less, plugin-less sequence arriving now; callers set the rest.
    pub fn new(prompt: Vec<u32>, params: SamplingParams, max_tokens: usize) -> Self {
        Self {
            prompt,
            params,
            max_tokens,
            stop_token_ids: Arc::from(Vec::new()),
            ignore_eos: false,
            logprobs: None,
            prompt_logprobs: None,
            priority: 0,
            salt: 0,
            prompt_hashes: None,
            sampler: None,
            tenant: 0,
            arrived: std::time::Instant::now(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    Length,
    /// Cancelled by the server (shutdown) or the client.
    Abort,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
            Self::Abort => "abort",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Prompt tokens read from the prefix cache instead of computed.
    pub cached_tokens: usize,
}

/// A token the engine chose, with its logprob and alternatives.
#[derive(Debug, Clone)]
pub struct SampledToken {
    pub id: u32,
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
    /// The token ended the sequence as an end-of-sequence or stop token (its text is shown
    /// only with `include_stop_str_in_output`).
    pub ends_sequence: bool,
}

/// One prompt token's logprob under the model given the tokens before it.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptLogprob {
    pub token: u32,
    pub logprob: f32,
    /// 1 + how many tokens were more likely.
    pub rank: usize,
    /// The most likely tokens at that position, best first.
    pub top: Vec<(u32, f32)>,
}

#[derive(Debug, Clone)]
pub enum Event {
    /// The scheduler took the request.
    Accepted,
    /// The request ran for the first time (its queue time ends here).
    Scheduled(std::time::Instant),
    /// The queue is full.
    Rejected(String),
    /// Logprobs of prompt tokens 1.. (the first has no context), before any `Token`.
    PromptLogprobs(Vec<PromptLogprob>),
    Token(SampledToken),
    Finished { reason: FinishReason, usage: Usage },
    Failed(Failure),
}

/// Why a request failed. The detail goes to the log; clients get a message by cause.
#[derive(Debug, Clone)]
pub struct Failure {
    pub cause: FailureCause,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureCause {
    /// The request's sampler plugin failed and its policy fails closed.
    Plugin,
    /// The forward pass failed, or the engine step panicked and was rebuilt.
    Engine,
}

impl Failure {
    pub fn plugin(detail: impl Into<String>) -> Self {
        Self { cause: FailureCause::Plugin, detail: detail.into() }
    }

    pub fn engine(detail: impl Into<String>) -> Self {
        Self { cause: FailureCause::Engine, detail: detail.into() }
    }

    /// What the client is told: no plugin backtraces or internals.
    pub fn public_message(&self) -> &'static str {
        match self.cause {
            FailureCause::Plugin => "the request's sampler plugin failed (details are in the server log)",
            FailureCause::Engine => "generation failed in the engine (details are in the server log)",
        }
    }

    /// 503 for a plugin that fails closed (a policy said no), 500 for the engine.
    pub fn status(&self) -> u16 {
        match self.cause {
            FailureCause::Plugin => 503,
            FailureCause::Engine => 500,
        }
    }
}
