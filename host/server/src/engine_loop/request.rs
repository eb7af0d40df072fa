//! What the HTTP side sends the engine loop, and what comes back per request.

use mlahost_engine::sampling::SamplingParams;
use mlahost_plugins::Plugin;
use std::sync::Arc;

#[derive(Clone)]
pub struct EngineRequest {
    pub prompt: Vec<u32>,
    pub params: SamplingParams,
    pub max_tokens: usize,
    /// Strings that end generation; never emitted.
    pub stop: Vec<String>,
    pub ignore_eos: bool,
    /// Report the chosen token's logprob and this many alternatives (None: no logprobs).
    pub logprobs: Option<usize>,
    pub priority: i32,
    /// Prefix-cache salt: only requests with the same salt share cached pages.
    pub salt: u64,
    /// A sampler plugin chosen by the request (`"sampler": name`), with its per-request config.
    pub sampler: Option<(Arc<Plugin>, String)>,
    /// The tenant's scheduler index (fair share) and its metrics.
    pub tenant: u32,
    pub tenant_stats: Option<Arc<crate::metrics::TenantStats>>,
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

#[derive(Debug, Clone)]
pub enum Event {
    /// The scheduler took the request.
    Accepted,
    /// The queue is full.
    Rejected(String),
    Token(TokenEvent),
    /// Text held back for stop-string matching, released at the end.
    TrailingText(String),
    Finished { reason: FinishReason, usage: Usage },
    Failed(String),
}
