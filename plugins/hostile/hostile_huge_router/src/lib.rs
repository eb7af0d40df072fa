//! A router whose `route` rejects every request with a 64 MiB message: the host must bound what it
//! accepts (or the memory cap stops the guest first), never send it to a client whole, and stay
//! up. `init` succeeds.

use mlahost_sdk::{ReplicaState, RequestSummary, Route, Router};

const BYTES: usize = 64 << 20;

struct Huge;

impl Router for Huge {
    fn init(_config: &str) -> Result<Self, String> {
        Ok(Huge)
    }

    fn route(&mut self, _request: &RequestSummary, _replicas: &[ReplicaState]) -> Route {
        Route::Reject("x".repeat(BYTES))
    }
}

mlahost_sdk::export_router!(Huge);
