//! Prometheus text for /metrics: every replica's engine figures, every plugin's, and (for the
//! operator) every tenant's.

pub use mlahost_runtime::metrics::{Histogram, Metrics, TenantStats, LATENCY_BOUNDS};
use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

type Read = fn(&Metrics) -> u64;

const GAUGES: &[(&str, &str, &str, Read)] = &[
    ("mlahost_num_requests_running", "gauge", "Sequences in the running batch.", |m| m.running.load(Relaxed)),
    ("mlahost_num_requests_waiting", "gauge", "Sequences waiting to be scheduled.", |m| m.waiting.load(Relaxed)),
    ("mlahost_kv_cache_pages_used", "gauge", "Latent-cache pages in use.", |m| m.pages_used.load(Relaxed)),
    ("mlahost_kv_cache_pages_total", "gauge", "Latent-cache pages in the pool.", |m| m.pages_total.load(Relaxed)),
    ("mlahost_kv_cache_tokens_total", "gauge", "Tokens the configured latent-cache pool holds (pages x page size).", |m| m.kv_cache_tokens.load(Relaxed)),
    ("mlahost_kv_cache_bytes_per_token", "gauge", "Latent-cache bytes per token over all layers (configured dtype).", |m| m.kv_cache_bytes_per_token.load(Relaxed)),
    ("mlahost_prompt_tokens_total", "counter", "Prompt tokens prefilled (computed, not served from the prefix cache).", |m| m.prompt_tokens.load(Relaxed)),
    ("mlahost_generation_tokens_total", "counter", "Tokens generated.", |m| m.generation_tokens.load(Relaxed)),
    ("mlahost_num_preemptions_total", "counter", "Sequences preempted for recompute.", |m| m.preemptions.load(Relaxed)),
    ("mlahost_requests_rejected_total", "counter", "Requests refused because the queue was full.", |m| m.requests_rejected.load(Relaxed)),
    ("mlahost_requests_routed_total", "counter", "Requests the router sent to this replica.", |m| m.requests_routed.load(Relaxed)),
    ("mlahost_engine_restarts_total", "counter", "Engine steps that panicked (their requests failed, the scheduler was rebuilt).", |m| m.engine_restarts.load(Relaxed)),
    ("mlahost_prefix_cache_queries_total", "counter", "Prompt tokens looked up in the prefix cache.", |m| m.prefix_queried_tokens.load(Relaxed)),
    ("mlahost_prefix_cache_hits_total", "counter", "Prompt tokens served from the prefix cache.", |m| m.prefix_hit_tokens.load(Relaxed)),
    ("mlahost_prefix_cache_evictions_total", "counter", "Cached pages evicted to make room.", |m| m.prefix_evictions.load(Relaxed)),
    ("mlahost_prefix_cache_pages", "gauge", "Pages held by the prefix cache.", |m| m.prefix_cached_pages.load(Relaxed)),
];

/// Prometheus text for every replica, one HELP/TYPE per family.
pub fn render(replicas: &[std::sync::Arc<Metrics>]) -> String {
    let mut out = String::new();
    for (name, kind, help, read) in GAUGES {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for m in replicas {
            let _ = writeln!(out, "{name}{{{}}} {}", m.labels(), read(m));
        }
    }
    let _ = writeln!(out, "# HELP mlahost_prefix_cache_hit_rate Share of queried prompt tokens served from the prefix cache.\n# TYPE mlahost_prefix_cache_hit_rate gauge");
    for m in replicas {
        let (q, h) = (m.prefix_queried_tokens.load(Relaxed), m.prefix_hit_tokens.load(Relaxed));
        let rate = if q == 0 { 0.0 } else { h as f64 / q as f64 };
        let _ = writeln!(out, "mlahost_prefix_cache_hit_rate{{{}}} {rate}", m.labels());
    }
    let _ = writeln!(out, "# HELP mlahost_request_success_total Finished requests by reason.\n# TYPE mlahost_request_success_total counter");
    for m in replicas {
        for (reason, v) in [("stop", &m.finished_stop), ("length", &m.finished_length), ("abort", &m.finished_abort)] {
            let _ = writeln!(out, "mlahost_request_success_total{{{},finished_reason=\"{reason}\"}} {}", m.labels(), v.load(Relaxed));
        }
    }
    let histograms: [(&str, &str, fn(&Metrics) -> &Histogram); 4] = [
        ("mlahost_time_to_first_token_seconds", "Time to first token (from arrival at the HTTP layer).", |m| &m.ttft),
        ("mlahost_time_per_output_token_seconds", "Time per output token after the first.", |m| &m.tpot),
        ("mlahost_e2e_request_latency_seconds", "End-to-end request latency (from arrival at the HTTP layer).", |m| &m.e2e),
        ("mlahost_request_queue_time_seconds", "Time from arrival to the first scheduled chunk.", |m| &m.queue_time),
    ];
    for (name, help, get) in histograms {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for m in replicas {
            get(m).render_series(&mut out, name, &m.labels());
        }
    }
    out

}

/// Per-plugin calls, traps, timeouts, fallbacks, reloads and call latency.
/// The weights' storage on each device: `mlahost_weights_info` (value 1; the dtypes are labels)
/// and `mlahost_weight_bytes` (one device's share).
pub fn render_weights(out: &mut String, device: &str, weights: Option<&mlahost_engine::WeightStorage>) {
    let Some(w) = weights else { return };
    let device = device.replace(['"', '\\', '\n'], "'");
    let _ = writeln!(out, "# HELP mlahost_weights_info How the weights are stored (value 1; the element types are labels).\n# TYPE mlahost_weights_info gauge");
    let _ = writeln!(out, "mlahost_weights_info{{device=\"{device}\",linears=\"{}\",embeddings=\"{}\"}} 1", w.linears, w.embeddings);
    let _ = writeln!(out, "# HELP mlahost_weight_bytes Bytes of weights on one device (one rank's share under a split).\n# TYPE mlahost_weight_bytes gauge");
    let _ = writeln!(out, "mlahost_weight_bytes{{device=\"{device}\"}} {}", w.bytes);
}

pub fn render_plugins(out: &mut String, plugins: &[std::sync::Arc<mlahost_plugins::Plugin>]) {
    if plugins.is_empty() {
        return;
    }
    let label = |p: &mlahost_plugins::Plugin| format!("plugin=\"{}\",kind=\"{}\"", p.spec.name.replace('"', "'"), p.kind.as_str());
    let counters: [(&str, &str, fn(&mlahost_plugins::PluginStats) -> u64); 7] = [
        ("mlahost_plugin_calls_total", "Hook calls.", |s| s.calls.load(Relaxed)),
        ("mlahost_plugin_traps_total", "Calls and instance starts that trapped or failed (the instance was dropped).", |s| s.traps.load(Relaxed)),
        ("mlahost_plugin_timeouts_total", "Calls that overran their deadline.", |s| s.timeouts.load(Relaxed)),
        ("mlahost_plugin_busy_total", "Calls that found no free instance within the deadline.", |s| s.busy.load(Relaxed)),
        ("mlahost_plugin_invalid_results_total", "Calls whose result failed validation (ids, biases, bitsets).", |s| s.invalid.load(Relaxed)),
        ("mlahost_plugin_fallbacks_total", "Failed calls the native default decided (fail-open).", |s| s.fallbacks.load(Relaxed)),
        ("mlahost_plugin_reloads_total", "Versions swapped in by hot reload.", |s| s.reloads.load(Relaxed)),
    ];
    for (name, help, read) in counters {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for p in plugins {
            let _ = writeln!(out, "{name}{{{}}} {}", label(p), read(&p.stats));
        }
    }
    let name = "mlahost_plugin_output_dropped_bytes_total";
    let _ = writeln!(out, "# HELP {name} Plugin stdout/stderr bytes cut by the log's limits.\n# TYPE {name} counter");
    for p in plugins {
        let _ = writeln!(out, "{name}{{{}}} {}", label(p), p.dropped_output_bytes());
    }
    let name = "mlahost_plugin_call_latency_seconds";
    let _ = writeln!(out, "# HELP {name} Hook call latency.\n# TYPE {name} histogram");
    for p in plugins {
        p.stats.latency.render_series(out, name, &label(p));
    }
    let name = "mlahost_plugin_instance_start_seconds";
    let _ = writeln!(out, "# HELP {name} Time to build and init one instance (off the request path).\n# TYPE {name} histogram");
    for p in plugins {
        p.stats.init_seconds.render_series(out, name, &label(p));
    }
}

#[derive(Default)]
pub struct TenantRegistry {
    stats: std::sync::RwLock<std::collections::BTreeMap<String, std::sync::Arc<TenantStats>>>,
}

impl TenantRegistry {
    pub fn get(&self, tenant: &str) -> std::sync::Arc<TenantStats> {
        if let Some(s) = self.stats.read().unwrap_or_else(|p| p.into_inner()).get(tenant) {
            return s.clone();
        }
        self.stats.write().unwrap_or_else(|p| p.into_inner()).entry(tenant.to_string()).or_default().clone()
    }

    pub fn render(&self, out: &mut String) {
        let stats = self.stats.read().unwrap_or_else(|p| p.into_inner());
        let counters: [(&str, &str, fn(&TenantStats) -> u64); 4] = [
            ("mlahost_tenant_requests_total", "Requests admitted, by tenant.", |s| s.requests.load(Relaxed)),
            ("mlahost_tenant_rejections_total", "Requests refused (quota, limits, admission), by tenant.", |s| s.rejected.load(Relaxed)),
            ("mlahost_tenant_prompt_tokens_total", "Prompt tokens of finished requests, by tenant.", |s| s.prompt_tokens.load(Relaxed)),
            ("mlahost_tenant_generation_tokens_total", "Generated tokens of finished requests, by tenant.", |s| s.generation_tokens.load(Relaxed)),
        ];
        for (name, help, read) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (t, s) in stats.iter() {
                let _ = writeln!(out, "{name}{{tenant=\"{}\"}} {}", t.replace('"', "'"), read(s));
            }
        }
        for (name, help, get) in [
            ("mlahost_tenant_queue_time_seconds", "Time from arrival to the first scheduled chunk, by tenant.", (|s: &TenantStats| &s.queue_time) as fn(&TenantStats) -> &Histogram),
            ("mlahost_tenant_time_to_first_token_seconds", "Time to first token, by tenant.", |s: &TenantStats| &s.ttft),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            for (t, s) in stats.iter() {
                get(s).render_series(out, name, &format!("tenant=\"{}\"", t.replace('"', "'")));
            }
        }
    }
}
