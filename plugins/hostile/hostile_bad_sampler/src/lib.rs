//! A sampler whose decisions are invalid, chosen by its config: `inf` (an infinite bias),
//! `nan` (a NaN bias), `zero` (an all-zero allow bitset), `short` (a one-word bitset) or
//! `token` (a token id past the vocabulary). Each must count as a failed call.

use mlahost_sdk::{Decision, Sampler, SequenceView, TokenBias, Vocabulary};

struct BadSampler {
    mode: String,
}

impl Sampler for BadSampler {
    fn init(config: &str, _vocab: Vocabulary) -> Result<Self, String> {
        let mode = config.trim().trim_matches('"').to_string();
        match mode.as_str() {
            "inf" | "nan" | "zero" | "short" | "token" => Ok(BadSampler { mode }),
            other => Err(format!("hostile_bad_sampler: unknown mode {other:?}")),
        }
    }

    fn sample(&mut self, step: &[SequenceView<'_>]) -> Result<Vec<Decision>, String> {
        Ok(step
            .iter()
            .map(|s| {
                let vocab = s.vocab_size();
                match self.mode.as_str() {
                    "inf" => Decision::Bias(vec![TokenBias { id: 1, bias: f32::INFINITY }]),
                    "nan" => Decision::Bias(vec![TokenBias { id: 1, bias: f32::NAN }]),
                    "zero" => Decision::Allow(vec![0; (vocab as usize).div_ceil(64)]),
                    "short" => Decision::Allow(vec![u64::MAX]),
                    _ => Decision::Token(vocab),
                }
            })
            .collect())
    }
}

mlahost_sdk::export_sampler!(BadSampler);
