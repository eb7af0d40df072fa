//! The engine replicas of one server (data parallel: each has its own cache and scheduler)
//! and the router that picks one per request from their load and cached prefixes.

use crate::api::error::ApiError;
use mlahost_runtime::EngineHandle;
use crate::metrics::Metrics;
use mlahost_core::{PrefixIndex, PromptHashes, ReplicaLoad, RouteDecision, RouteRequest, Router};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

pub struct Replica {
    pub engine: EngineHandle,
    pub metrics: Arc<Metrics>,
    /// The replica's cached page hashes, mirrored by its engine loop.
    pub index: Arc<PrefixIndex>,
    /// Requests routed here and not finished: the load the router sees at once, before the
    /// engine loop has admitted them.
    pub in_flight: Arc<AtomicUsize>,
}

/// Counts one routed request against its replica until dropped.
pub struct InFlightGuard(Arc<AtomicUsize>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

impl Replica {
    pub fn enter(&self) -> InFlightGuard {
        self.in_flight.fetch_add(1, Relaxed);
        self.metrics.requests_routed.fetch_add(1, Relaxed);
        InFlightGuard(self.in_flight.clone())
    }
}

pub struct Replicas {
    pub list: Vec<Replica>,
    pub router: Box<dyn Router>,
    pub page_size: usize,
    pub prefix_caching: bool,
}

impl Replicas {
    /// What the router sees of each replica for this prompt.
    pub fn loads(&self, prompt: &PromptHashes) -> Vec<ReplicaLoad> {
        self.list
            .iter()
            .map(|r| {
                let m = &r.metrics;
                let total = m.pages_total.load(Relaxed) as usize;
                let used = m.pages_used.load(Relaxed) as usize;
                let running = m.running.load(Relaxed) as usize;
                // Routed but not yet admitted requests count as waiting.
                let waiting = (m.waiting.load(Relaxed) as usize).max(r.in_flight.load(Relaxed).saturating_sub(running));
                ReplicaLoad {
                    waiting,
                    running,
                    free_pages: total.saturating_sub(used),
                    cached_prefix_tokens: if self.prefix_caching {
                        r.index.cached_prefix_tokens(prompt)
                    } else {
                        0
                    },
                }
            })
            .collect()
    }

    /// Picks the replica for a request.
    pub fn route(&self, request: &RouteRequest<'_>, prompt: &PromptHashes) -> Result<&Replica, ApiError> {
        if self.list.len() == 1 {
            return Ok(&self.list[0]);
        }
        match self.router.route(request, &self.loads(prompt)) {
            RouteDecision::Replica(i) => self.list.get(i).ok_or_else(|| ApiError::internal(format!("the router chose replica {i}, which does not exist"))),
            RouteDecision::Reject(reason) => Err(ApiError::overloaded(format!("the router refused the request: {reason}"))),
        }
    }

    pub fn metrics(&self) -> Vec<Arc<Metrics>> {
        self.list.iter().map(|r| r.metrics.clone()).collect()
    }

    pub fn healthy(&self) -> bool {
        self.list.iter().all(|r| r.metrics.healthy())
    }
}
