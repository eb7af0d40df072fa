//! `pin_shared_prefixes`: keeps prefix pages that many requests reuse (shared system prompts,
//! few-shot headers) and evicts the rest least-recently-used first. See README.md.

mod policy;

use mlahost_sdk::{Candidate, EvictionPlan, PrefixPolicy};
pub use policy::{plan, Config};

/// The plugin: its config, parsed once by `init`.
pub struct PinSharedPrefixes {
    config: Config,
}

impl PrefixPolicy for PinSharedPrefixes {
    fn init(config: &str) -> Result<Self, String> {
        Ok(PinSharedPrefixes {
            config: Config::parse(config)?,
        })
    }

    fn decide(&mut self, candidates: &[Candidate], _needed: u32) -> EvictionPlan {
        plan(&self.config, candidates)
    }
}

mlahost_sdk::export_prefix_policy!(PinSharedPrefixes);
