//! A router whose `init` panics (a trap in wasm): the host must refuse it at start-up (or keep the
//! previous version on reload) with a message that says init trapped.

use mlahost_sdk::{ReplicaState, RequestSummary, Route, Router};

struct InitTrap;

impl Router for InitTrap {
    fn init(_config: &str) -> Result<Self, String> {
        panic!("hostile_init_trap: panicking in init on purpose");
    }

    fn route(&mut self, _request: &RequestSummary, _replicas: &[ReplicaState]) -> Route {
        Route::Replica(0)
    }
}

mlahost_sdk::export_router!(InitTrap);
