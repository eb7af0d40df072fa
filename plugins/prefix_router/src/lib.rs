//! `prefix_router`: sends a request to the replica that already caches the longest prefix of its
//! prompt, unless the replicas' loads are out of balance; then to the least-loaded replica.
//! See README.md for the config and how to see it work.

mod policy;

use mlahost_sdk::{ReplicaState, RequestSummary, Route, Router};
pub use policy::{choose, Config};

/// The plugin: its config, parsed once by `init`.
pub struct PrefixRouter {
    config: Config,
}

impl Router for PrefixRouter {
    fn init(config: &str) -> Result<Self, String> {
        Ok(PrefixRouter {
            config: Config::parse(config)?,
        })
    }

    fn route(&mut self, _request: &RequestSummary, replicas: &[ReplicaState]) -> Route {
        match choose(&self.config, replicas) {
            Some(i) => Route::Replica(i as u32),
            None => Route::Reject("prefix_router: no replica to route to".to_string()),
        }
    }
}

mlahost_sdk::export_router!(PrefixRouter);
