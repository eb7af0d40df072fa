//! The vLLM-named families that gateways read (the Gateway API Inference Extension's endpoint
//! picker, llm-d), beside the `mlahost_*` ones.
//!
//! Every gauge and counter has a pod series first (summed over replicas, no `engine` label),
//! then one series per replica (`engine="i"`, as vLLM labels its data-parallel engines). The
//! picker takes the first series of a family whose labels match, so it reads the pod total;
//! a PromQL sum must select `engine=""` or `engine!=""`, not both. Histograms too: the pod's
//! buckets, sum and count first, then each replica's.

use crate::metrics::{Histogram, Metrics};
use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// Facts about the pod that the info gauges carry.
#[derive(Debug, Clone, Default)]
pub struct VllmInfo {
    pub block_size: usize,
    pub cache_dtype: String,
    pub prefix_caching: bool,
    /// Unix seconds when the server started: `vllm:lora_requests_info`'s value (the picker
    /// keeps the series with the largest value).
    pub started_unix: f64,
}

type Read = fn(&Metrics) -> u64;

const SUMMED: &[(&str, &str, &str, Read)] = &[
    ("vllm:num_requests_running", "gauge", "Requests in the running batch.", |m| m.running.load(Relaxed)),
    ("vllm:num_requests_waiting", "gauge", "Requests waiting to be scheduled.", |m| m.waiting.load(Relaxed)),
    ("vllm:prefix_cache_queries_total", "counter", "Prompt tokens looked up in the prefix cache.", |m| m.prefix_queried_tokens.load(Relaxed)),
    ("vllm:prefix_cache_hits_total", "counter", "Prompt tokens served from the prefix cache.", |m| m.prefix_hit_tokens.load(Relaxed)),
    ("vllm:prompt_tokens_total", "counter", "Prompt tokens prefilled.", |m| m.prompt_tokens.load(Relaxed)),
    ("vllm:generation_tokens_total", "counter", "Tokens generated.", |m| m.generation_tokens.load(Relaxed)),
    ("vllm:num_preemptions_total", "counter", "Sequences preempted for recompute.", |m| m.preemptions.load(Relaxed)),
];

/// Appends the vLLM families for `replicas` (one pod) to `out`.
pub fn render(out: &mut String, replicas: &[Arc<Metrics>], info: &VllmInfo) {
    let Some(first) = replicas.first() else { return };
    let model = first.model_name.replace(['"', '\\', '\n'], "'");
    let pod = format!("model_name=\"{model}\"");
    let engine = |m: &Metrics| format!("model_name=\"{model}\",engine=\"{}\"", m.replica);
    for (name, kind, help, read) in SUMMED {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        let _ = writeln!(out, "{name}{{{pod}}} {}", replicas.iter().map(|m| read(m)).sum::<u64>());
        for m in replicas {
            let _ = writeln!(out, "{name}{{{}}} {}", engine(m), read(m));
        }
    }
    let name = "vllm:kv_cache_usage_perc";
    let _ = writeln!(out, "# HELP {name} Share of latent-cache pages in use, 0 to 1 (1 is full).\n# TYPE {name} gauge");
    let pages = |m: &Metrics| (m.pages_used.load(Relaxed), m.pages_total.load(Relaxed));
    let (used, total) = replicas.iter().map(|m| pages(m)).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    let _ = writeln!(out, "{name}{{{pod}}} {}", usage(used, total));
    for m in replicas {
        let (u, t) = pages(m);
        let _ = writeln!(out, "{name}{{{}}} {}", engine(m), usage(u, t));
    }
    let name = "vllm:cache_config_info";
    let _ = writeln!(out, "# HELP {name} Information of the latent cache (value 1; the facts are labels).\n# TYPE {name} gauge");
    let cache = |blocks: u64| {
        format!(
            "block_size=\"{}\",num_gpu_blocks=\"{blocks}\",cache_dtype=\"{}\",enable_prefix_caching=\"{}\"",
            info.block_size,
            info.cache_dtype,
            if info.prefix_caching { "True" } else { "False" }
        )
    };
    let _ = writeln!(out, "{name}{{{pod},{}}} 1", cache(total));
    for m in replicas {
        let _ = writeln!(out, "{name}{{{},{}}} 1", engine(m), cache(pages(m).1));
    }
    // mlahost serves no LoRA adapters: an empty set and a zero maximum, so the picker's LoRA
    // affinity sees "no adapters here" rather than a missing family.
    let name = "vllm:lora_requests_info";
    let _ = writeln!(out, "# HELP {name} Running and waiting LoRA adapters (none: mlahost serves no adapters).\n# TYPE {name} gauge");
    let _ = writeln!(out, "{name}{{max_lora=\"0\",running_lora_adapters=\"\",waiting_lora_adapters=\"\"}} {}", info.started_unix);
    let name = "vllm:request_success_total";
    let _ = writeln!(out, "# HELP {name} Finished requests by reason.\n# TYPE {name} counter");
    let reasons: [(&str, Read); 3] =
        [("stop", |m| m.finished_stop.load(Relaxed)), ("length", |m| m.finished_length.load(Relaxed)), ("abort", |m| m.finished_abort.load(Relaxed))];
    for (reason, read) in reasons {
        let _ = writeln!(out, "{name}{{{pod},finished_reason=\"{reason}\"}} {}", replicas.iter().map(|m| read(m)).sum::<u64>());
        for m in replicas {
            let _ = writeln!(out, "{name}{{{},finished_reason=\"{reason}\"}} {}", engine(m), read(m));
        }
    }
    let histograms: [(&str, &str, fn(&Metrics) -> &Histogram); 4] = [
        ("vllm:time_to_first_token_seconds", "Time to first token, from arrival.", |m| &m.ttft),
        ("vllm:inter_token_latency_seconds", "Time between output tokens.", |m| &m.tpot),
        ("vllm:e2e_request_latency_seconds", "End-to-end request latency, from arrival.", |m| &m.e2e),
        ("vllm:request_queue_time_seconds", "Time from arrival to the first scheduled chunk.", |m| &m.queue_time),
    ];
    for (name, help, get) in histograms {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let all: Vec<&Histogram> = replicas.iter().map(|m| get(m)).collect();
        Histogram::render_merged(&all, out, name, &pod);
        for m in replicas {
            get(m).render_series(out, name, &engine(m));
        }
    }
}

fn usage(used: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        (used as f64 / total as f64).clamp(0.0, 1.0)
    }
}
