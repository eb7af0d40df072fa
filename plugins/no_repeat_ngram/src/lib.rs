//! `no_repeat_ngram`: never lets a sequence repeat an n-gram of its own output (the
//! `no_repeat_ngram_size` of other servers, which mlahost's native sampling lacks), and bans a
//! fixed list of token ids. See README.md.

mod ngram;

use mlahost_sdk::{Decision, Sampler, SequenceView, Vocabulary};
pub use ngram::{banned_continuations, Config, RequestConfig};

/// The plugin: its config, parsed once by `init`.
pub struct NoRepeatNgram {
    config: Config,
}

impl Sampler for NoRepeatNgram {
    fn init(config: &str, _vocab: Vocabulary) -> Result<Self, String> {
        Ok(NoRepeatNgram {
            config: Config::parse(config)?,
        })
    }

    fn sample(&mut self, step: &[SequenceView<'_>]) -> Result<Vec<Decision>, String> {
        Ok(step.iter().map(|seq| self.decide(seq)).collect())
    }
}

impl NoRepeatNgram {
    fn decide(&self, seq: &SequenceView<'_>) -> Decision {
        let request = RequestConfig::parse(&seq.params.config);
        let n = request.n.unwrap_or(self.config.n);
        let mut ids = banned_continuations(&seq.generated, n as usize);
        if !self.config.banned_ids.is_empty() || !request.banned_ids.is_empty() {
            let vocab = seq.vocab_size();
            ids.extend(
                self.config
                    .banned_ids
                    .iter()
                    .chain(&request.banned_ids)
                    .filter(|&&id| id < vocab),
            );
        }
        ids.sort_unstable();
        ids.dedup();
        Decision::ban(ids)
    }
}

mlahost_sdk::export_sampler!(NoRepeatNgram);

#[cfg(test)]
mod tests {
    use super::*;
    use mlahost_sdk::{Params, TokenBias, BAN};

    fn seq(generated: Vec<u32>, config: &str) -> SequenceView<'static> {
        let params = Params {
            config: config.into(),
            ..Params::default()
        };
        SequenceView::local(1, params, 4, generated, vec![0.0; 100])
    }

    fn ban(ids: &[u32]) -> Decision {
        Decision::Bias(ids.iter().map(|&id| TokenBias { id, bias: BAN }).collect())
    }

    #[test]
    fn one_decision_per_sequence() {
        let mut s = NoRepeatNgram::init(r#"{"n": 2, "banned_ids": [99, 5, 1000]}"#, Vocabulary::default()).unwrap();
        let step = [
            seq(vec![1, 2, 1], ""),
            seq(vec![], r#"{"n": 0}"#),
            seq(vec![3, 3], r#"{"n": 1}"#),
        ];
        let out = s.sample(&step).unwrap();
        // `1 2` seen, last token 1: 2 is banned; 1000 is past the vocabulary.
        assert_eq!(out, vec![ban(&[2, 5, 99]), ban(&[5, 99]), ban(&[3, 5, 99])]);
    }

    #[test]
    fn pass_when_nothing_is_banned() {
        let mut s = NoRepeatNgram::init("", Vocabulary::default()).unwrap();
        assert_eq!(
            s.sample(&[seq(vec![1, 2, 3], "")]).unwrap(),
            vec![Decision::Pass]
        );
    }
}
