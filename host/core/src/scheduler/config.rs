/// Limits of one replica's scheduler.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SchedulerConfig {
    /// Tokens one forward pass may process (prefill chunks plus decodes).
    pub max_num_batched_tokens: usize,
    /// Sequences running at once.
    pub max_num_seqs: usize,
    /// Requests that may wait; one more is refused (the server answers 503).
    pub max_queued_requests: usize,
    /// Reuse cached full pages of earlier prompts (and outputs) with the same prefix and salt.
    pub prefix_caching: bool,
    /// Within a priority, admit the least-served tenant first (virtual token counters).
    pub fair_share: bool,
    /// What one generated token costs a tenant's counter; a prompt token costs 1.
    pub output_token_weight: f64,
    /// A prefill chunk's first share of a step (0: no cap). Every running and newly admitted
    /// sequence gets at most this many tokens (and at most half the step's budget) before the
    /// step's leftover budget tops the prefills up, so a long prompt cannot keep short
    /// requests out of a step.
    pub long_prefill_token_threshold: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            max_num_batched_tokens: 2048,
            max_num_seqs: 256,
            max_queued_requests: 1024,
            prefix_caching: true,
            fair_share: true,
            output_token_weight: 2.0,
            long_prefill_token_threshold: 0,
        }
    }
}
