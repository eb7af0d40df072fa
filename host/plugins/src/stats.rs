//! Per-plugin counters and a call-latency histogram, rendered by the server's /metrics.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

pub const LATENCY_BOUNDS_US: &[f64] = &[5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 50000.0];

#[derive(Default)]
pub struct PluginStats {
    pub calls: AtomicU64,
    pub traps: AtomicU64,
    pub timeouts: AtomicU64,
    pub fallbacks: AtomicU64,
    pub reloads: AtomicU64,
    /// Per latency bucket (plus +Inf), then the sum in microseconds.
    latency: Mutex<(Vec<u64>, f64)>,
}

impl PluginStats {
    pub fn observe_us(&self, us: f64) {
        self.calls.fetch_add(1, Relaxed);
        let mut l = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        if l.0.is_empty() {
            l.0 = vec![0; LATENCY_BOUNDS_US.len() + 1];
        }
        let i = LATENCY_BOUNDS_US.iter().position(|&b| us <= b).unwrap_or(LATENCY_BOUNDS_US.len());
        l.0[i] += 1;
        l.1 += us;
    }

    /// Cumulative bucket counts (as Prometheus wants them), the sum (µs) and the count.
    pub fn latency(&self) -> (Vec<u64>, f64, u64) {
        let l = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        let mut cum = 0;
        let buckets = (0..=LATENCY_BOUNDS_US.len())
            .map(|i| {
                cum += l.0.get(i).copied().unwrap_or(0);
                cum
            })
            .collect();
        (buckets, l.1, cum)
    }
}
