//! `mlahost serve` (and `mlahost` with no subcommand).

use anyhow::{bail, Context, Result};
use clap::Args;
use mlahost_core::SchedulerConfig;
use mlahost_engine::{KvCacheDtypeArg, LoadFormat};
use mlahost_plugins::PluginSpec;
use mlahost_server::{serve, Guard, HttpLimits, LoadProgressHook, RequestLimits, RouterChoice, ServeConfig};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args, Clone, Debug)]
pub struct ServeArgs {
    /// Checkpoint directory in the hub's format (default: the built-in tiny model).
    #[arg(long)]
    model: Option<PathBuf>,
    /// The checkpoint directory, as vLLM's `serve MODEL` (same as --model).
    #[arg(value_name = "MODEL", conflicts_with = "model")]
    model_arg: Option<PathBuf>,
    /// auto (the directory's safetensors) or dummy (weights generated from config.json: the
    /// model's shapes, memory and speed without its files; the text is noise).
    #[arg(long, default_value = "auto", value_parser = crate::generate::parse_load_format)]
    load_format: LoadFormat,
    #[command(flatten)]
    parallel: crate::parallel_args::ParallelArgs,
    #[command(flatten)]
    nodes: crate::nodes::NodeArgs,
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// Tokens per latent-cache page.
    #[arg(long, default_value_t = 64)]
    page_size: usize,
    /// Latent-cache pages (overrides --kv-cache-memory).
    #[arg(long)]
    kv_cache_pages: Option<usize>,
    /// Latent-cache size in bytes (suffixes K, M, G, KiB, MiB, GiB allowed; default 1 GiB).
    #[arg(long, value_parser = parse_bytes)]
    kv_cache_memory: Option<u64>,
    /// Latent-cache element type: auto (the model's compute dtype: f32 on the CPU), f32, bf16,
    /// or fp8 (e4m3 c_kv with a scale per 128 channels, bf16 k_pe: ~1.76x the bf16 tokens).
    #[arg(long, default_value = "auto", value_parser = crate::generate::parse_kv_dtype)]
    kv_cache_dtype: KvCacheDtypeArg,
    /// Longest prompt + completion (default: the model's, capped by the cache).
    #[arg(long)]
    max_model_len: Option<usize>,
    /// The model name clients use (default: the --model path).
    #[arg(long)]
    served_model_name: Option<String>,
    /// Seconds to let in-flight requests finish after SIGTERM or Ctrl-C.
    #[arg(long, default_value_t = 30.0)]
    shutdown_timeout: f64,
    /// Tokens per forward pass (prefill chunks plus decodes).
    #[arg(long, default_value_t = 2048)]
    max_num_batched_tokens: usize,
    /// Sequences running at once.
    #[arg(long, default_value_t = 256)]
    max_num_seqs: usize,
    /// Requests that may wait before new ones get 503.
    #[arg(long, default_value_t = 1024)]
    max_queued_requests: usize,
    /// Turn off reuse of cached prompt pages.
    #[arg(long)]
    no_prefix_caching: bool,
    /// Engine replicas in this process (CPU), each with its own cache and scheduler.
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// prefix-aware (the native default) or round-robin.
    #[arg(long, default_value = "prefix-aware")]
    router: String,
    /// prefix-aware: route by load when max - min load exceeds this...
    #[arg(long, default_value_t = 8)]
    router_imbalance_abs: usize,
    /// ...and max load exceeds this factor times the min load.
    #[arg(long, default_value_t = 1.5)]
    router_imbalance_rel: f64,
    /// A WebAssembly plugin: PATH.wasm[:CONFIG_JSON_OR_@FILE]; repeatable. Its kind comes from
    /// its exports.
    #[arg(long = "plugin")]
    plugins: Vec<String>,
    /// A JSON file listing plugins with per-plugin limits and failure policy.
    #[arg(long)]
    plugins_file: Option<PathBuf>,
    /// How often plugin files are checked for a new version, in ms (0: never).
    #[arg(long, default_value_t = 1000)]
    plugin_watch_ms: u64,
    /// Tenants and their hashed API keys (TOML); requests then need `Authorization: Bearer KEY`.
    #[arg(long)]
    tenants: Option<PathBuf>,
    /// Where the model runs: cpu, or cuda:N (with --replicas R, replicas on cuda:N .. cuda:N+R-1).
    #[arg(long, default_value = "cpu")]
    device: mlahost_cuda::Device,
    /// Share of each GPU's memory for weights, activations and the latent cache (the cache
    /// gets what remains; `mlahost plan` prints the same split).
    #[arg(long, default_value_t = 0.92)]
    gpu_memory_utilization: f64,
    /// Run every step eagerly (no CUDA graphs for decode steps).
    #[arg(long)]
    enforce_eager: bool,
    /// GPU storage of the linear layers: auto (FP8 checkpoints stay FP8 once the FP8 path is
    /// enabled by default), bf16, or fp8 (e4m3 with one f32 scale per 128x128 block).
    #[arg(long, default_value = "auto")]
    quantization: mlahost_cuda::quant::WeightQuant,
    /// Admit waiting requests in arrival order within a priority instead of by tenant fair share.
    #[arg(long)]
    no_fair_share: bool,
    /// A prefill's first share of a step in tokens (at most half the step); the step's leftover
    /// budget tops it up, so new short requests run beside a long prompt (0: no cap).
    #[arg(long, default_value_t = 256)]
    long_prefill_token_threshold: usize,
    #[command(flatten)]
    guard: GuardArgs,
}

/// Limits on the work one request or connection may cause, and the operator credential.
#[derive(Args, Clone, Debug)]
pub struct GuardArgs {
    /// Largest request body (bytes, suffixes allowed); larger gets 413.
    #[arg(long, default_value = "8MiB", value_parser = parse_bytes)]
    max_request_body_bytes: u64,
    /// Prompts in one completions request.
    #[arg(long, default_value_t = 256)]
    max_prompts_per_request: usize,
    /// Choices per prompt (`n`).
    #[arg(long, default_value_t = 16)]
    max_n: usize,
    /// Prompts x n: the engine requests one HTTP request may start.
    #[arg(long, default_value_t = 256)]
    max_choices_per_request: usize,
    /// Stop strings per request.
    #[arg(long, default_value_t = 16)]
    max_stop_strings: usize,
    /// Bytes per stop string.
    #[arg(long, default_value_t = 256)]
    max_stop_string_bytes: usize,
    /// Engine requests (prompts x n) one tenant may have in flight; a tenants file's
    /// max_concurrent_requests overrides it per tenant.
    #[arg(long, default_value_t = 1024)]
    max_tenant_requests: usize,
    /// Open HTTP connections; more get 503 and are closed.
    #[arg(long, default_value_t = 512)]
    max_connections: usize,
    /// Seconds a connection may wait for a request's headers (idle keep-alive or slow send).
    #[arg(long, default_value_t = 15.0)]
    keep_alive_timeout: f64,
    /// Seconds a request body may take to arrive (408 after).
    #[arg(long, default_value_t = 30.0)]
    body_timeout: f64,
    /// The operator key's hash (`sha256:<hex>`, from `mlahost hash-key KEY`) for /admin/* and
    /// /reset_prefix_cache; without it those endpoints are off.
    #[arg(long)]
    admin_key: Option<String>,
    /// Show per-tenant /metrics families to everyone (else only with the admin key).
    #[arg(long)]
    metrics_tenant_labels: bool,
    /// Origins whose web pages may call the API (CORS), comma-separated, or `*` for any;
    /// off by default.
    #[arg(long, value_delimiter = ',')]
    allowed_origins: Vec<String>,
}

impl GuardArgs {
    fn resolve(&self) -> Result<(Guard, HttpLimits)> {
        let secs = |v: f64, flag: &str| -> Result<Duration> {
            if !(v.is_finite() && v > 0.0) {
                bail!("{flag} must be a positive number of seconds");
            }
            Ok(Duration::from_secs_f64(v))
        };
        for (v, flag) in [
            (self.max_prompts_per_request, "--max-prompts-per-request"),
            (self.max_n, "--max-n"),
            (self.max_choices_per_request, "--max-choices-per-request"),
            (self.max_tenant_requests, "--max-tenant-requests"),
            (self.max_connections, "--max-connections"),
        ] {
            if v == 0 {
                bail!("{flag} must be at least 1");
            }
        }
        if let Some(k) = &self.admin_key {
            let hex = k.strip_prefix("sha256:").filter(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()));
            if hex.is_none() {
                bail!("--admin-key takes the key's hash, \"sha256:<64 hex digits>\" (print it with `mlahost hash-key KEY`)");
            }
        }
        let limits = RequestLimits {
            max_body_bytes: usize::try_from(self.max_request_body_bytes).unwrap_or(usize::MAX),
            max_prompts: self.max_prompts_per_request,
            max_n: self.max_n,
            max_choices: self.max_choices_per_request,
            max_stop_strings: self.max_stop_strings,
            max_stop_bytes: self.max_stop_string_bytes,
            max_tenant_requests: self.max_tenant_requests,
        };
        let http = HttpLimits {
            max_connections: self.max_connections,
            header_timeout: secs(self.keep_alive_timeout, "--keep-alive-timeout")?,
            body_timeout: secs(self.body_timeout, "--body-timeout")?,
        };
        let allowed_origins: Vec<String> = self.allowed_origins.iter().map(|o| o.trim().to_string()).filter(|o| !o.is_empty()).collect();
        let guard = Guard { limits, admin_key: self.admin_key.clone(), metrics_tenant_labels: self.metrics_tenant_labels, allowed_origins };
        Ok((guard, http))
    }
}

/// A byte size: plain bytes, or with K/M/G/T (powers of 1000, also KB...) or KiB/MiB/GiB/TiB.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok().filter(|n: &f64| n.is_finite()).ok_or_else(|| format!("{s:?} is not a size"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1u64,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        other => return Err(format!("unknown size unit {other:?}")),
    };
    Ok((n * mult as f64) as u64)
}

pub fn run(args: ServeArgs) -> Result<()> {
    if !(args.shutdown_timeout.is_finite() && args.shutdown_timeout >= 0.0) {
        bail!("--shutdown-timeout must be a non-negative number of seconds");
    }
    let router = match args.router.as_str() {
        "prefix-aware" => {
            if !(args.router_imbalance_rel.is_finite() && args.router_imbalance_rel >= 1.0) {
                bail!("--router-imbalance-rel must be >= 1");
            }
            RouterChoice::PrefixAware { abs_threshold: args.router_imbalance_abs, rel_factor: args.router_imbalance_rel }
        }
        "round-robin" => RouterChoice::RoundRobin,
        other => bail!("--router must be prefix-aware or round-robin, not {other:?}"),
    };
    let mut plugins = Vec::new();
    if let Some(file) = &args.plugins_file {
        plugins.extend(PluginSpec::parse_file(file)?);
    }
    for p in &args.plugins {
        plugins.push(PluginSpec::parse(p)?);
    }
    if args.quantization == mlahost_cuda::quant::WeightQuant::Fp8 && args.device == mlahost_cuda::Device::Cpu {
        bail!("--quantization fp8 stores the GPU's weights in FP8: give --device cuda:N (the CPU engine computes over the checkpoint's weights)");
    }
    let (guard, http) = args.guard.resolve()?;
    let model = args.model.or(args.model_arg);
    if let Some(dir) = &model {
        check_model_dir(dir)?;
    }
    if args.load_format == LoadFormat::Dummy && model.is_none() {
        bail!("--load-format dummy needs --model DIR (its config.json and tokenizer)");
    }
    let nodes = args.nodes.group(args.device, args.parallel.layout(), args.replicas)?;
    if nodes.is_some() && model.is_none() {
        bail!("--nnodes needs --model DIR on every node");
    }
    let kv_cache_dtype = args.kv_cache_dtype.resolve(args.device == mlahost_cuda::Device::Cpu);
    let backends = std::sync::Arc::new(crate::backends::DeviceBackends {
        layout: args.parallel.layout(),
        gpu_memory_utilization: args.gpu_memory_utilization,
        cuda_graphs: !args.enforce_eager,
        quantization: args.quantization,
        nodes: nodes.clone(),
        ..crate::backends::DeviceBackends::new(args.device)
    });
    if let (Some(g), Some(dir)) = (nodes.as_ref().filter(|g| g.node_rank > 0), &model) {
        // the options node 0's server gives its backend (the rendezvous compares them)
        let options = mlahost_runtime::BackendOptions {
            replica: 0,
            page_size: args.page_size,
            kv_cache_pages: args.kv_cache_pages,
            kv_cache_memory: args.kv_cache_memory,
            kv_dtype: kv_cache_dtype,
            max_batched_tokens: args.max_num_batched_tokens,
            max_seqs: args.max_num_seqs,
            planned_weights: None,
        };
        return crate::nodes::follow(dir, args.load_format, &backends, &options, g);
    }
    let cfg = ServeConfig {
        model,
        load_format: args.load_format,
        host: args.host,
        port: args.port,
        page_size: args.page_size,
        kv_cache_pages: args.kv_cache_pages,
        kv_cache_memory: args.kv_cache_memory,
        kv_cache_dtype,
        max_model_len: args.max_model_len,
        served_model_name: args.served_model_name,
        shutdown_timeout: Duration::from_secs_f64(args.shutdown_timeout),
        scheduler: SchedulerConfig {
            max_num_batched_tokens: args.max_num_batched_tokens,
            max_num_seqs: args.max_num_seqs,
            max_queued_requests: args.max_queued_requests,
            prefix_caching: !args.no_prefix_caching,
            fair_share: !args.no_fair_share,
            long_prefill_token_threshold: args.long_prefill_token_threshold,
            ..SchedulerConfig::default()
        },
        replicas: args.replicas,
        router,
        plugins,
        plugin_watch: (args.plugin_watch_ms > 0).then(|| Duration::from_millis(args.plugin_watch_ms)),
        tenants: args.tenants,
        backends,
        guard,
        http,
        load_progress: Some(LoadProgressHook(std::sync::Arc::new(crate::progress::LoadBar::new()))),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting tokio")?;
    let served = runtime.block_on(serve(cfg, shutdown_signal()));
    // Blocking work still running (a body half sent, a plugin call) must not hold the exit.
    runtime.shutdown_timeout(Duration::from_millis(500));
    served?;
    Ok(())
}

/// Refuses a model path that is not a directory before anything starts; a hub id
/// (`org/name`) gets the command that downloads it.
fn check_model_dir(dir: &std::path::Path) -> Result<()> {
    if dir.is_dir() {
        if !dir.join("config.json").is_file() {
            bail!("{} has no config.json: give a checkpoint directory in the hub's format (config.json, *.safetensors, tokenizer.json)", dir.display());
        }
        return Ok(());
    }
    let s = dir.to_string_lossy();
    if !dir.exists() && looks_like_hub_id(&s) {
        bail!("{s} is not a local directory: mlahost reads a local directory; download it with `huggingface-cli download {s} --local-dir DIR`, then run `mlahost serve DIR`");
    }
    if dir.exists() {
        bail!("{s} is not a directory: give the checkpoint's directory (config.json, *.safetensors, tokenizer.json)");
    }
    bail!("model directory not found: {s}");
}

/// `org/name` with the hub's characters, not a relative or absolute path.
fn looks_like_hub_id(s: &str) -> bool {
    let ok = |p: &str| !p.is_empty() && !p.starts_with('.') && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    matches!(s.split_once('/'), Some((org, name)) if ok(org) && ok(name))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hub_ids() {
        assert!(super::looks_like_hub_id("deepseek-ai/DeepSeek-V2-Lite"));
        assert!(!super::looks_like_hub_id("./DeepSeek-V2-Lite"));
        assert!(!super::looks_like_hub_id("/models/DeepSeek-V2-Lite"));
        assert!(!super::looks_like_hub_id("a/b/c"));
        assert!(!super::looks_like_hub_id("models"));
    }
}
