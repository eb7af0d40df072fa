//! Sampler plugins: choose, bias or restrict each sequence's next token.
//!
//! The host calls [`Sampler::sample`] once per decode step with every sequence of that step
//! whose request chose this sampler (request field `"sampler": "<plugin name>"`). Each
//! [`SequenceView`] carries the request's [`Params`], the tokens generated so far and methods
//! that read its logits, which stay on the host: read what you need (the top few, a range, one
//! id's log-probability), never the whole vocabulary. Answer one [`Decision`] per sequence, in
//! order. Export the implementation with [`export_sampler!`](crate::export_sampler).

pub(crate) mod glue;
mod view;
mod vocabulary;

pub use view::SequenceView;
pub use vocabulary::Vocabulary;

/// A large negative bias: adding it to a logit bans the token (see [`Decision::ban`]).
pub const BAN: f32 = -1e30;

/// A sampler plugin. One value lives in each plugin instance, made by [`init`](Self::init)
/// and used by every later call.
///
/// ```
/// use mlahost_sdk::{Decision, Sampler, SequenceView, Vocabulary};
///
/// /// Always emits the most likely token (greedy decoding), whatever the request asked for.
/// struct Greedy;
///
/// impl Sampler for Greedy {
///     fn init(_config: &str, _vocab: Vocabulary) -> Result<Self, String> {
///         Ok(Greedy)
///     }
///
///     fn sample(&mut self, step: &[SequenceView<'_>]) -> Result<Vec<Decision>, String> {
///         Ok(step.iter().map(|seq| Decision::Token(seq.argmax())).collect())
///     }
/// }
///
/// mlahost_sdk::export_sampler!(Greedy);
/// ```
pub trait Sampler: Sized + 'static {
    /// Makes the plugin from the text given after the plugin path on the command line
    /// (`--plugin path.wasm:CONFIG`, `""` when none) and the model's [`Vocabulary`]. Called
    /// once per instance, before any [`sample`](Self::sample). An `Err` refuses the plugin at
    /// start-up (or keeps the previous version on hot reload) with that message.
    fn init(config: &str, vocab: Vocabulary) -> Result<Self, String>;

    /// Decides the next token of every sequence of `step`: exactly one [`Decision`] per
    /// sequence, in the same order. An `Err`, or a wrong number of decisions, is a failed call:
    /// the host applies the plugin's failure policy (fail-open samples natively).
    fn sample(&mut self, step: &[SequenceView<'_>]) -> Result<Vec<Decision>, String>;

    /// Vets a request's `sampler_config` when the request arrives, before it is queued: an
    /// `Err` refuses the request with HTTP 400 and this message. Accepts anything by default.
    fn check_config(&mut self, config: &str) -> Result<(), String> {
        let _ = config;
        Ok(())
    }
}

/// The request's sampling parameters.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Params {
    /// Sampling temperature.
    pub temperature: f32,
    /// Nucleus (top-p) mass.
    pub top_p: f32,
    /// Top-k cut; 0 means none.
    pub top_k: u32,
    /// The request's seed, if it gave one.
    pub seed: Option<u64>,
    /// The request's `max_tokens`.
    pub max_tokens: u32,
    /// The request's `sampler_config` field as JSON text (`""` when absent): per-request
    /// settings for this sampler.
    pub config: String,
}

/// One vocabulary entry and its raw logit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenLogit {
    /// Token id.
    pub id: u32,
    /// Raw logit (before temperature).
    pub logit: f32,
}

/// A bias added to one token's logit before the host samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenBias {
    /// Token id.
    pub id: u32,
    /// Added to the logit; [`BAN`] (-1e30) bans the token.
    pub bias: f32,
}

/// What the host does for one sequence.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Emit this token.
    Token(u32),
    /// Add these biases, then sample natively with the request's parameters.
    Bias(Vec<TokenBias>),
    /// Sample natively among the allowed tokens only: a bitset over the vocabulary, bit
    /// `i % 64` of word `i / 64` set when token `i` is allowed (see [`Decision::allow_only`]).
    Allow(Vec<u64>),
    /// Sample natively, unchanged.
    Pass,
    /// This sequence cannot go on: its request fails with this message (the others of the
    /// step are unaffected).
    Fail(String),
}

impl Decision {
    /// Bans `ids` (a [`BAN`] bias each) and samples natively among the rest; [`Decision::Pass`]
    /// when `ids` is empty.
    pub fn ban(ids: impl IntoIterator<Item = u32>) -> Decision {
        let biases: Vec<TokenBias> = ids
            .into_iter()
            .map(|id| TokenBias { id, bias: BAN })
            .collect();
        if biases.is_empty() {
            Decision::Pass
        } else {
            Decision::Bias(biases)
        }
    }

    /// Allows only `ids` (those below `vocab_size`; others are ignored) and samples natively
    /// among them.
    pub fn allow_only(vocab_size: u32, ids: impl IntoIterator<Item = u32>) -> Decision {
        let mut words = vec![0u64; (vocab_size as usize).div_ceil(64)];
        for id in ids.into_iter().filter(|&id| id < vocab_size) {
            words[id as usize / 64] |= 1u64 << (id % 64);
        }
        Decision::Allow(words)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ban_nothing_is_pass() {
        assert_eq!(Decision::ban([]), Decision::Pass);
        assert_eq!(
            Decision::ban([3]),
            Decision::Bias(vec![TokenBias { id: 3, bias: BAN }])
        );
    }

    #[test]
    fn allow_only_sets_bits_below_vocab() {
        let Decision::Allow(words) = Decision::allow_only(130, [0, 64, 129, 130, 999]) else {
            panic!("not allow");
        };
        assert_eq!(words, vec![1, 1, 1 << 1]);
    }
}
