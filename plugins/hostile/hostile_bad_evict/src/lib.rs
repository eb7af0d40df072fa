//! A prefix policy whose `decide` names pages that are not among the candidates (and could not
//! exist): the host must treat the decision as a failed call and evict natively.

use mlahost_sdk::{Candidate, EvictionPlan, PrefixPolicy};

struct BadEvict;

impl PrefixPolicy for BadEvict {
    fn init(_config: &str) -> Result<Self, String> {
        Ok(BadEvict)
    }

    fn decide(&mut self, candidates: &[Candidate], _needed: u32) -> EvictionPlan {
        let real = candidates.first().map_or(0, |c| c.page);
        EvictionPlan { evict_order: vec![u32::MAX, real, 7_000_000], pin: vec![u32::MAX - 1] }
    }
}

mlahost_sdk::export_prefix_policy!(BadEvict);
