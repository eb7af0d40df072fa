//! Choosing the engine replica for a request. The native policy prefers the replica that has
//! the longest cached prefix of the prompt, unless the load is imbalanced, then the least
//! loaded one. A router plugin can replace it.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// One replica as the router sees it, read without a round trip to its engine loop.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplicaLoad {
    pub waiting: usize,
    pub running: usize,
    pub free_pages: usize,
    /// Leading prompt tokens this replica has in its prefix cache.
    pub cached_prefix_tokens: usize,
}

impl ReplicaLoad {
    pub fn load(&self) -> usize {
        self.waiting + self.running
    }
}

#[derive(Debug, Clone, Copy)]
pub struct RouteRequest<'a> {
    pub tenant: Option<&'a str>,
    pub prompt_tokens: usize,
    pub priority: i32,
    pub model: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteDecision {
    Replica(usize),
    Reject(String),
}

pub trait Router: Send + Sync {
    fn route(&self, request: &RouteRequest<'_>, replicas: &[ReplicaLoad]) -> RouteDecision;
}

/// Best cached prefix, unless `max - min` load exceeds `abs_threshold` and `max` exceeds
/// `rel_factor * min`: then the least loaded replica (SGLang's cache-aware policy, in short).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PrefixAwareRouter {
    pub abs_threshold: usize,
    pub rel_factor: f64,
}

impl Default for PrefixAwareRouter {
    fn default() -> Self {
        Self { abs_threshold: 8, rel_factor: 1.5 }
    }
}

impl Router for PrefixAwareRouter {
    fn route(&self, _request: &RouteRequest<'_>, replicas: &[ReplicaLoad]) -> RouteDecision {
        if replicas.is_empty() {
            return RouteDecision::Reject("no replica is running".into());
        }
        let loads: Vec<usize> = replicas.iter().map(ReplicaLoad::load).collect();
        let (min, max) = (*loads.iter().min().unwrap_or(&0), *loads.iter().max().unwrap_or(&0));
        let imbalanced = max - min > self.abs_threshold && max as f64 > self.rel_factor * min as f64;
        let least_loaded = || (0..replicas.len()).min_by_key(|&i| (loads[i], std::cmp::Reverse(replicas[i].free_pages)));
        let best = if imbalanced {
            least_loaded()
        } else {
            // Longest cached prefix; ties go to the less loaded replica.
            (0..replicas.len()).max_by_key(|&i| (replicas[i].cached_prefix_tokens, std::cmp::Reverse(loads[i]), std::cmp::Reverse(i)))
        };
        RouteDecision::Replica(best.unwrap_or(0))
    }
}

/// Each replica in turn, ignoring caches and load: a baseline for benchmarks.
#[derive(Debug, Default)]
pub struct RoundRobinRouter {
    next: AtomicUsize,
}

impl Router for RoundRobinRouter {
    fn route(&self, _request: &RouteRequest<'_>, replicas: &[ReplicaLoad]) -> RouteDecision {
        if replicas.is_empty() {
            return RouteDecision::Reject("no replica is running".into());
        }
        RouteDecision::Replica(self.next.fetch_add(1, Relaxed) % replicas.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(waiting: usize, running: usize, cached: usize) -> ReplicaLoad {
        ReplicaLoad { waiting, running, free_pages: 100, cached_prefix_tokens: cached }
    }

    const REQ: RouteRequest<'static> = RouteRequest { tenant: None, prompt_tokens: 100, priority: 0, model: "m" };

    #[test]
    fn prefers_the_cached_prefix_while_balanced() {
        let router = PrefixAwareRouter { abs_threshold: 4, rel_factor: 1.5 };
        assert_eq!(router.route(&REQ, &[r(0, 3, 0), r(0, 5, 64)]), RouteDecision::Replica(1));
        // No cache anywhere: the less loaded one.
        assert_eq!(router.route(&REQ, &[r(0, 3, 0), r(1, 1, 0)]), RouteDecision::Replica(1));
    }

    #[test]
    fn goes_to_the_least_loaded_when_imbalanced() {
        let router = PrefixAwareRouter { abs_threshold: 4, rel_factor: 1.5 };
        assert_eq!(router.route(&REQ, &[r(1, 1, 0), r(6, 4, 64)]), RouteDecision::Replica(0));
        // Over the absolute threshold but not the relative factor: stay with the cache.
        assert_eq!(router.route(&REQ, &[r(10, 10, 0), r(12, 14, 64)]), RouteDecision::Replica(1));
    }

    #[test]
    fn round_robin_cycles() {
        let rr = RoundRobinRouter::default();
        let reps = [r(0, 0, 0); 3];
        let picks: Vec<_> = (0..4).map(|_| rr.route(&REQ, &reps)).collect();
        assert_eq!(picks, [0, 1, 2, 0].map(RouteDecision::Replica));
    }
}
