//! A router whose `route` never returns: the host's per-call deadline must stop it, drop the
//! instance and apply the failure policy. `init` succeeds.

use mlahost_sdk::{ReplicaState, RequestSummary, Route, Router};

struct Loop;

impl Router for Loop {
    fn init(_config: &str) -> Result<Self, String> {
        Ok(Loop)
    }

    fn route(&mut self, _request: &RequestSummary, replicas: &[ReplicaState]) -> Route {
        let mut spins: u64 = 0;
        loop {
            spins = std::hint::black_box(spins.wrapping_add(replicas.len() as u64 + 1));
        }
    }
}

mlahost_sdk::export_router!(Loop);
