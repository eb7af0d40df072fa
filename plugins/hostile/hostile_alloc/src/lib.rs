//! A router whose `route` allocates without bound: 1 MiB buffers, each written (so the pages are
//! really used), kept in a static list, forever. The host's memory cap must make the growth fail
//! (the allocator then aborts: a trap), drop the instance and apply the failure policy. `init`
//! succeeds and allocates nothing.

use std::sync::Mutex;

use mlahost_sdk::{ReplicaState, RequestSummary, Route, Router};

static HOARD: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

struct Alloc;

impl Router for Alloc {
    fn init(_config: &str) -> Result<Self, String> {
        Ok(Alloc)
    }

    fn route(&mut self, _request: &RequestSummary, _replicas: &[ReplicaState]) -> Route {
        let mut hoard = HOARD.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            hoard.push(std::hint::black_box(vec![0xA5u8; 1 << 20]));
        }
    }
}

mlahost_sdk::export_router!(Alloc);
