//! A sampler whose `sample` never returns: the host's per-call deadline must stop it, drop the
//! instance and apply the failure policy. `init` succeeds.

use mlahost_sdk::{Decision, Sampler, SequenceView, Vocabulary};

struct Loop;

impl Sampler for Loop {
    fn init(_config: &str, _vocab: Vocabulary) -> Result<Self, String> {
        Ok(Loop)
    }

    fn sample(&mut self, step: &[SequenceView<'_>]) -> Result<Vec<Decision>, String> {
        let mut spins: u64 = 0;
        loop {
            // black_box keeps the loop (and its back edge, where the deadline is checked).
            spins = std::hint::black_box(spins.wrapping_add(step.len() as u64 + 1));
        }
    }
}

mlahost_sdk::export_sampler!(Loop);
