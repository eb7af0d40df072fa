//! A router whose `init` spins for a good part of a second (no clock: a fixed amount of work) and whose
//! `route` traps on every call: re-initializing after each trap must never land on a request.

use mlahost_sdk::{ReplicaState, RequestSummary, Route, Router};

struct SlowInit;

impl Router for SlowInit {
    fn init(_config: &str) -> Result<Self, String> {
        let mut x: u64 = 1;
        for i in 0..800_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
        }
        std::hint::black_box(x);
        Ok(SlowInit)
    }

    fn route(&mut self, _request: &RequestSummary, replicas: &[ReplicaState]) -> Route {
        panic!("hostile_slow_init: trapping in route ({} replicas)", replicas.len());
    }
}

mlahost_sdk::export_router!(SlowInit);
