//! A sampler that sleeps 20 s in `sample` (WASI clock subscription + poll, which no epoch
//! deadline can interrupt): the host must not let it block the engine.

use mlahost_sdk::{Decision, Sampler, SequenceView, Vocabulary};

struct Sleepy;

impl Sampler for Sleepy {
    fn init(_config: &str, _vocab: Vocabulary) -> Result<Self, String> {
        Ok(Sleepy)
    }

    fn sample(&mut self, step: &[SequenceView<'_>]) -> Result<Vec<Decision>, String> {
        std::thread::sleep(std::time::Duration::from_secs(20));
        Ok(vec![Decision::Pass; step.len()])
    }
}

mlahost_sdk::export_sampler!(Sleepy);
