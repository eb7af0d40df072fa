//! What an engine replica counts: gauges and counters its loop updates, latency histograms,
//! and the per-tenant figures a request carries. The server renders them for /metrics.

pub use mlahost_core::Histogram;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

pub const LATENCY_BOUNDS: &[f64] = &[0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0];

/// One replica's metrics; /metrics renders every replica's, labelled `replica="i"`.
pub struct Metrics {
    pub model_name: String,
    pub replica: usize,
    /// False while the model loads.
    pub ready: AtomicBool,
    /// False once the engine loop has exited or died.
    pub engine_alive: AtomicBool,
    pub running: AtomicU64,
    pub waiting: AtomicU64,
    pub pages_used: AtomicU64,
    pub pages_total: AtomicU64,
    /// The configured pool in tokens (pages x page size), set once at start-up.
    pub kv_cache_tokens: AtomicU64,
    /// Cache bytes per token over all layers, in the configured dtype.
    pub kv_cache_bytes_per_token: AtomicU64,
    pub prompt_tokens: AtomicU64,
    /// Generated tokens the front end took (`EngineHandle::metrics`).
    pub generation_tokens: AtomicU64,
    pub preemptions: AtomicU64,
    pub requests_rejected: AtomicU64,
    pub requests_routed: AtomicU64,
    /// Engine steps that panicked (their requests failed; the scheduler was rebuilt).
    pub engine_restarts: AtomicU64,
    pub prefix_queried_tokens: AtomicU64,
    pub prefix_hit_tokens: AtomicU64,
    pub prefix_evictions: AtomicU64,
    pub prefix_cached_pages: AtomicU64,
    pub finished_stop: AtomicU64,
    pub finished_length: AtomicU64,
    pub finished_abort: AtomicU64,
    pub ttft: Histogram,
    pub tpot: Histogram,
    pub e2e: Histogram,
    /// From arrival at the HTTP layer to the first scheduled chunk.
    pub queue_time: Histogram,
}

impl Metrics {
    pub fn new(model_name: &str, replica: usize) -> Self {
        Self {
            model_name: model_name.to_string(),
            replica,
            ready: AtomicBool::new(false),
            engine_alive: AtomicBool::new(false),
            running: AtomicU64::new(0),
            waiting: AtomicU64::new(0),
            pages_used: AtomicU64::new(0),
            pages_total: AtomicU64::new(0),
            kv_cache_tokens: AtomicU64::new(0),
            kv_cache_bytes_per_token: AtomicU64::new(0),
            prompt_tokens: AtomicU64::new(0),
            generation_tokens: AtomicU64::new(0),
            preemptions: AtomicU64::new(0),
            requests_rejected: AtomicU64::new(0),
            requests_routed: AtomicU64::new(0),
            engine_restarts: AtomicU64::new(0),
            prefix_queried_tokens: AtomicU64::new(0),
            prefix_hit_tokens: AtomicU64::new(0),
            prefix_evictions: AtomicU64::new(0),
            prefix_cached_pages: AtomicU64::new(0),
            finished_stop: AtomicU64::new(0),
            finished_length: AtomicU64::new(0),
            finished_abort: AtomicU64::new(0),
            ttft: Histogram::new(LATENCY_BOUNDS),
            tpot: Histogram::new(LATENCY_BOUNDS),
            e2e: Histogram::new(LATENCY_BOUNDS),
            queue_time: Histogram::new(LATENCY_BOUNDS),
        }
    }

    pub fn healthy(&self) -> bool {
        self.ready.load(Relaxed) && self.engine_alive.load(Relaxed)
    }

    pub fn labels(&self) -> String {
        format!("model_name=\"{}\",replica=\"{}\"", self.model_name.replace('"', "'"), self.replica)
    }
}

/// Per-tenant figures, labelled by tenant id (never by key).
pub struct TenantStats {
    pub requests: AtomicU64,
    pub rejected: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub generation_tokens: AtomicU64,
    /// From arrival to the first scheduled chunk.
    pub queue_time: Histogram,
    pub ttft: Histogram,
}

impl Default for TenantStats {
    fn default() -> Self {
        Self {
            requests: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            prompt_tokens: AtomicU64::new(0),
            generation_tokens: AtomicU64::new(0),
            queue_time: Histogram::new(LATENCY_BOUNDS),
            ttft: Histogram::new(LATENCY_BOUNDS),
        }
    }
}

