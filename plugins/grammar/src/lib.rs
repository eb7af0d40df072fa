//! `grammar`: structured outputs. A request that names this sampler with a constraint in its
//! `sampler_config` (JSON Schema, JSON object, regex, choice or a Lark grammar; see
//! `constraint.rs`) gets, at every step, the set of tokens that keep its output inside the
//! constraint, and the end-of-sequence token once the output is complete. The engine is
//! llguidance (Earley parsing over a lexer of derivative-based regexes, with a token trie over
//! the model's vocabulary), compiled into this component. See README.md.

mod constraint;
mod sessions;
mod vocab;

pub use constraint::grammar_for;
use llguidance::api::ParserLimits;
use llguidance::ParserFactory;
use llguidance::toktrie::InferenceCapabilities;
use mlahost_sdk::{Decision, Sampler, SequenceView, Vocabulary};
pub use sessions::Sessions;

/// The plugin: the tokenizer environment, compiled constraints and per-request matchers.
pub struct Grammar {
    sessions: Sessions,
}

impl Grammar {
    /// Builds the parser factory for `vocab` (the slow part of `init`: it indexes the
    /// vocabulary once).
    pub fn new(vocab: &Vocabulary) -> Result<Self, String> {
        let env = vocab::token_env(vocab)?;
        let slices = llguidance::earley::SlicedBiasComputer::general_slices();
        let mut factory = ParserFactory::new(&env, InferenceCapabilities::default(), &slices).map_err(|e| e.to_string())?;
        factory.quiet();
        *factory.limits_mut() = ParserLimits::default();
        Ok(Grammar { sessions: Sessions::new(factory) })
    }

    /// One sequence's decision: no constraint passes; otherwise the allowed tokens, or a
    /// failure of that sequence alone.
    pub fn decide(&mut self, request_id: u64, config: &str, generated: &[u32]) -> Decision {
        if config.trim().is_empty() {
            return Decision::Pass;
        }
        match self.sessions.mask(request_id, config, generated) {
            Ok(words) => Decision::Allow(words),
            Err(e) => Decision::Fail(format!("grammar: {e}")),
        }
    }
}

impl Grammar {
    /// Compiles (and caches) a constraint, as `check_config` does in the sandbox.
    pub fn check_config_native(&mut self, config: &str) -> Result<(), String> {
        self.sessions.fresh(config).map(|_| ())
    }
}

impl Sampler for Grammar {
    fn init(_config: &str, vocab: Vocabulary) -> Result<Self, String> {
        Grammar::new(&vocab)
    }

    fn sample(&mut self, step: &[SequenceView<'_>]) -> Result<Vec<Decision>, String> {
        self.sessions.begin_call();
        Ok(step.iter().map(|s| self.decide(s.request_id, &s.params.config, &s.generated)).collect())
    }

    fn check_config(&mut self, config: &str) -> Result<(), String> {
        self.check_config_native(config)
    }
}

#[cfg(target_arch = "wasm32")]
mlahost_sdk::export_sampler!(Grammar);
