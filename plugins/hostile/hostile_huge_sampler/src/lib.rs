//! A sampler whose `sample` answers, for every sequence, an `allow` bitset of 64 MiB (8 Mi words,
//! all bits set) whatever the vocabulary: the host must bound what it accepts (or the memory cap
//! stops the guest first) and apply the failure policy. `init` succeeds.

use mlahost_sdk::{Decision, Sampler, SequenceView, Vocabulary};

const WORDS: usize = (64 << 20) / 8;

struct Huge;

impl Sampler for Huge {
    fn init(_config: &str, _vocab: Vocabulary) -> Result<Self, String> {
        Ok(Huge)
    }

    fn sample(&mut self, step: &[SequenceView<'_>]) -> Result<Vec<Decision>, String> {
        Ok(step
            .iter()
            .map(|_| Decision::Allow(vec![u64::MAX; WORDS]))
            .collect())
    }
}

mlahost_sdk::export_sampler!(Huge);
