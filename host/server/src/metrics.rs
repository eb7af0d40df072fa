//! Prometheus metrics: gauges and counters the engine loop updates, histograms of latencies.

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

pub struct Histogram {
    bounds: &'static [f64],
    /// Per bucket (plus +Inf), then sum and count.
    state: Mutex<(Vec<u64>, f64, u64)>,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self { bounds, state: Mutex::new((vec![0; bounds.len() + 1], 0.0, 0)) }
    }

    pub fn observe(&self, v: f64) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let i = self.bounds.iter().position(|&b| v <= b).unwrap_or(self.bounds.len());
        s.0[i] += 1;
        s.1 += v;
        s.2 += 1;
    }

    fn render(&self, out: &mut String, name: &str, help: &str, labels: &str) {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cum = 0;
        for (i, b) in self.bounds.iter().enumerate() {
            cum += s.0[i];
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{b}\"}} {cum}");
        }
        cum += s.0[self.bounds.len()];
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cum}");
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", s.1);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", s.2);
    }
}

const LATENCY_BOUNDS: &[f64] = &[0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0];

pub struct Metrics {
    pub model_name: String,
    /// False while the model loads.
    pub ready: AtomicBool,
    /// False once the engine loop has exited or died.
    pub engine_alive: AtomicBool,
    pub running: AtomicU64,
    pub waiting: AtomicU64,
    pub pages_used: AtomicU64,
    pub pages_total: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub generation_tokens: AtomicU64,
    pub preemptions: AtomicU64,
    pub requests_rejected: AtomicU64,
    pub finished_stop: AtomicU64,
    pub finished_length: AtomicU64,
    pub finished_abort: AtomicU64,
    pub ttft: Histogram,
    pub tpot: Histogram,
    pub e2e: Histogram,
}

impl Metrics {
    pub fn new(model_name: &str) -> Self {
        Self {
            model_name: model_name.to_string(),
            ready: AtomicBool::new(false),
            engine_alive: AtomicBool::new(false),
            running: AtomicU64::new(0),
            waiting: AtomicU64::new(0),
            pages_used: AtomicU64::new(0),
            pages_total: AtomicU64::new(0),
            prompt_tokens: AtomicU64::new(0),
            generation_tokens: AtomicU64::new(0),
            preemptions: AtomicU64::new(0),
            requests_rejected: AtomicU64::new(0),
            finished_stop: AtomicU64::new(0),
            finished_length: AtomicU64::new(0),
            finished_abort: AtomicU64::new(0),
            ttft: Histogram::new(LATENCY_BOUNDS),
            tpot: Histogram::new(LATENCY_BOUNDS),
            e2e: Histogram::new(LATENCY_BOUNDS),
        }
    }

    pub fn healthy(&self) -> bool {
        self.ready.load(Relaxed) && self.engine_alive.load(Relaxed)
    }

    pub fn render(&self) -> String {
        let labels = format!("model_name=\"{}\"", self.model_name.replace('"', "'"));
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{{labels}}} {v}");
        };
        metric("mlahost_num_requests_running", "gauge", "Sequences in the running batch.", self.running.load(Relaxed));
        metric("mlahost_num_requests_waiting", "gauge", "Sequences waiting to be scheduled.", self.waiting.load(Relaxed));
        metric("mlahost_kv_cache_pages_used", "gauge", "Latent-cache pages in use.", self.pages_used.load(Relaxed));
        metric("mlahost_kv_cache_pages_total", "gauge", "Latent-cache pages in the pool.", self.pages_total.load(Relaxed));
        metric("mlahost_prompt_tokens_total", "counter", "Prompt tokens prefilled.", self.prompt_tokens.load(Relaxed));
        metric("mlahost_generation_tokens_total", "counter", "Tokens generated.", self.generation_tokens.load(Relaxed));
        metric("mlahost_num_preemptions_total", "counter", "Sequences preempted for recompute.", self.preemptions.load(Relaxed));
        metric("mlahost_requests_rejected_total", "counter", "Requests refused because the queue was full.", self.requests_rejected.load(Relaxed));
        let _ = writeln!(out, "# HELP mlahost_request_success_total Finished requests by reason.\n# TYPE mlahost_request_success_total counter");
        for (reason, v) in [("stop", &self.finished_stop), ("length", &self.finished_length), ("abort", &self.finished_abort)] {
            let _ = writeln!(out, "mlahost_request_success_total{{{labels},finished_reason=\"{reason}\"}} {}", v.load(Relaxed));
        }
        self.ttft.render(&mut out, "mlahost_time_to_first_token_seconds", "Time to first token.", &labels);
        self.tpot.render(&mut out, "mlahost_time_per_output_token_seconds", "Time per output token after the first.", &labels);
        self.e2e.render(&mut out, "mlahost_e2e_request_latency_seconds", "End-to-end request latency.", &labels);
        out
    }
}
