//! Per-plugin counters and a call-latency histogram, rendered by the server's /metrics.

use mlahost_core::Histogram;
use std::sync::atomic::AtomicU64;

/// Call latency buckets, in seconds (5 µs .. 50 ms).
pub const LATENCY_BOUNDS: &[f64] = &[5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 5e-2];

/// Instance build + init buckets, in seconds.
pub const INIT_BOUNDS: &[f64] = &[1e-3, 5e-3, 2.5e-2, 0.1, 0.5, 1.0, 2.0];

pub struct PluginStats {
    pub calls: AtomicU64,
    pub traps: AtomicU64,
    pub timeouts: AtomicU64,
    /// Calls that found no free instance within the deadline.
    pub busy: AtomicU64,
    pub fallbacks: AtomicU64,
    /// Invalid results (out-of-range ids, non-finite biases, bad bitsets).
    pub invalid: AtomicU64,
    pub reloads: AtomicU64,
    pub latency: Histogram,
    /// Time to build and `init` one instance (off the request path).
    pub init_seconds: Histogram,
}

impl Default for PluginStats {
    fn default() -> Self {
        Self {
            calls: AtomicU64::new(0),
            traps: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            busy: AtomicU64::new(0),
            fallbacks: AtomicU64::new(0),
            invalid: AtomicU64::new(0),
            reloads: AtomicU64::new(0),
            latency: Histogram::new(LATENCY_BOUNDS),
            init_seconds: Histogram::new(INIT_BOUNDS),
        }
    }
}

impl PluginStats {
    pub fn observe(&self, seconds: f64) {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.latency.observe(seconds);
    }
}
