//! What the HTTP side sends the engine loop, and what comes back per request.

use mlahost_core::PromptHashes;
use mlahost_engine::sampling::SamplingParams;
use mlahost_plugins::Plugin;
use std::sync::Arc;

#[derive(Clone)]
pub struct EngineRequest {
    pub prompt: Vec<u32>,
    pub params: SamplingParams,
    pub max_tokens: usize,
    /// Strings that end generation; emitted only with `include_stop_str_in_output`. Shared by
    /// a request's choices.
    pub stop: Arc<[String]>,
    /// Token ids that end generation besides the model's EOS (vLLM's `stop_token_ids`).
    pub stop_token_ids: Arc<[u32]>,
    pub ignore_eos: bool,
    /// Emit the stop string or stop token's text that ended generation.
    pub include_stop_str_in_output: bool,
    /// Leave special tokens out of the generated text (vLLM's default: true).
    pub skip_special_tokens: bool,
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
    /// A sampler plugin chosen by the request (`"sampler": name`), with its per-request config.
    pub sampler: Option<(Arc<Plugin>, String)>,
    /// The tenant's scheduler index (fair share) and its metrics.
    pub tenant: u32,
    pub tenant_stats: Option<Arc<crate::metrics::TenantStats>>,
    /// When the HTTP layer received the request: latency clocks start here.
    pub arrived: std::time::Instant,
}

impl EngineRequest {
    /// A request of one tenant-less, plugin-less sequence arriving now; callers set the rest.
    pub fn new(prompt: Vec<u32>, params: SamplingParams, max_tokens: usize) -> Self {
        Self {
            prompt,
            params,
            max_tokens,
            stop: Arc::from(Vec::new()),
            stop_token_ids: Arc::from(Vec::new()),
            ignore_eos: false,
            include_stop_str_in_output: false,
            skip_special_tokens: true,
            logprobs: None,
            prompt_logprobs: None,
            priority: 0,
            salt: 0,
            prompt_hashes: None,
            sampler: None,
            tenant: 0,
            tenant_stats: None,
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

#[derive(Debug, Clone)]
pub struct TokenEvent {
    pub id: u32,
    /// Text this token completes (may be empty while a character or a possible stop string is
    /// still incomplete).
    pub text: String,
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
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
    /// The queue is full.
    Rejected(String),
    /// Logprobs of prompt tokens 1.. (the first has no context), before any `Token`.
    PromptLogprobs(Vec<PromptLogprob>),
    Token(TokenEvent),
    /// Text held back for stop-string matching, released at the end.
    TrailingText(String),
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
