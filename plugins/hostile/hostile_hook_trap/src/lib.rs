//! A router whose `route` panics (a trap in wasm) on every call: the host must drop the instance,
//! make a fresh one (calling `init` again, which succeeds) and apply the failure policy, every
//! time.

use mlahost_sdk::{ReplicaState, RequestSummary, Route, Router};

struct HookTrap;

impl Router for HookTrap {
    fn init(_config: &str) -> Result<Self, String> {
        Ok(HookTrap)
    }

    fn route(&mut self, _request: &RequestSummary, replicas: &[ReplicaState]) -> Route {
        panic!(
            "hostile_hook_trap: panicking in route on purpose ({} replicas)",
            replicas.len()
        );
    }
}

mlahost_sdk::export_router!(HookTrap);
