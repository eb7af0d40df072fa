//! Plugins behind the host's own extension traits, with their failure policy applied: the
//! router and the eviction policy of mlahost-core.

use crate::plugin::Plugin;
use crate::spec::FailurePolicy;
use mlahost_core::{EvictionCandidate, EvictionDecision, EvictionPolicy, ReplicaLoad, RouteDecision, RouteRequest, Router};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// A router plugin; on failure the native router decides (fail-open) or the request is
/// refused (fail-closed).
pub struct PluginRouter {
    pub plugin: Arc<Plugin>,
    pub native: Box<dyn Router>,
}

impl Router for PluginRouter {
    fn route(&self, request: &RouteRequest<'_>, replicas: &[ReplicaLoad]) -> RouteDecision {
        match self.plugin.route(request.tenant, request.prompt_tokens, request.priority, request.model, replicas) {
            Ok(Ok(i)) => RouteDecision::Replica(i),
            Ok(Err(reason)) => RouteDecision::Reject(reason),
            Err(e) => match self.plugin.spec.failure_policy {
                FailurePolicy::Open => {
                    self.plugin.stats.fallbacks.fetch_add(1, Relaxed);
                    self.native.route(request, replicas)
                }
                FailurePolicy::Closed => {
                    tracing::warn!(plugin = %self.plugin.spec.name, error = %e, "router plugin failed; failing closed");
                    RouteDecision::Reject("router plugin failed (details are in the server log)".into())
                }
            },
        }
    }
}

/// A prefix-policy plugin. A cache policy cannot fail a request, so a failure always falls
/// back to the native least-recently-used order.
pub struct PluginEvictionPolicy {
    pub plugin: Arc<Plugin>,
}

impl EvictionPolicy for PluginEvictionPolicy {
    fn decide(&mut self, candidates: &[EvictionCandidate], needed: usize) -> EvictionDecision {
        match self.plugin.decide_eviction(candidates, needed) {
            Ok((order, pinned)) => EvictionDecision { order, pinned },
            Err(_) => {
                self.plugin.stats.fallbacks.fetch_add(1, Relaxed);
                EvictionDecision::default()
            }
        }
    }
}
