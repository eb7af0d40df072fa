//! `mlahost bench`: the serving benchmark client.

use anyhow::{Context, Result};
use clap::Args;
use mlahost_bench::dataset::DatasetSpec;
use mlahost_bench::request::Api;
use mlahost_bench::{run, BenchConfig};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Server base URL (http://host:port).
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    url: String,
    /// Model name to request (default: the server's first model).
    #[arg(long)]
    model: Option<String>,
    /// completions or chat.
    #[arg(long, default_value = "completions")]
    endpoint: String,
    /// random, shared-prefix, or a JSONL file of prompts (ShareGPT conversations accepted).
    #[arg(long, default_value = "random")]
    dataset: String,
    /// Prompt tokens (random: the whole prompt; shared-prefix: the question after the prefix).
    #[arg(long, default_value_t = 1024)]
    input_len: usize,
    #[arg(long, default_value_t = 256)]
    output_len: usize,
    #[arg(long, default_value_t = 200)]
    num_prompts: usize,
    /// One level or a comma-separated sweep (1,4,16,64).
    #[arg(long, value_delimiter = ',', default_value = "16")]
    concurrency: Vec<usize>,
    /// Requests per second, Poisson arrivals (default: all at once, bounded by concurrency).
    #[arg(long)]
    request_rate: Option<f64>,
    /// shared-prefix: number of groups.
    #[arg(long, default_value_t = 8)]
    num_groups: usize,
    /// shared-prefix: tokens in each group's system prompt.
    #[arg(long, default_value_t = 2048)]
    prefix_len: usize,
    #[arg(long)]
    slo_ttft_ms: Option<f64>,
    #[arg(long)]
    slo_tpot_ms: Option<f64>,
    /// Write every run's figures as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write an SVG plot of throughput and latency percentiles against concurrency.
    #[arg(long)]
    plot: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 600.0)]
    timeout: f64,
    /// JSON object merged into every request (e.g. '{"stop": ["\n"]}').
    #[arg(long)]
    extra_body: Option<String>,
    /// Random prompt token ids are drawn from 16..VOCAB.
    #[arg(long, default_value_t = 1000)]
    random_vocab: u64,
    /// API key, sent as `Authorization: Bearer` (default: $OPENAI_API_KEY when set).
    #[arg(long)]
    api_key: Option<String>,
}

pub fn run_bench(a: BenchArgs) -> Result<()> {
    let api = match a.endpoint.as_str() {
        "completions" => Api::Completions,
        "chat" => Api::Chat,
        other => anyhow::bail!("--endpoint must be completions or chat, not {other:?}"),
    };
    let dataset = match a.dataset.as_str() {
        "random" => DatasetSpec::Random,
        "shared-prefix" => DatasetSpec::SharedPrefix { groups: a.num_groups, prefix_len: a.prefix_len },
        file => DatasetSpec::File(PathBuf::from(file)),
    };
    anyhow::ensure!(a.timeout.is_finite() && a.timeout > 0.0, "--timeout must be positive");
    let extra_body = match &a.extra_body {
        Some(s) => serde_json::from_str(s).context("--extra-body must be a JSON object")?,
        None => serde_json::Value::Null,
    };
    let cfg = BenchConfig {
        url: a.url,
        model: a.model,
        api,
        dataset,
        input_len: a.input_len,
        output_len: a.output_len,
        num_prompts: a.num_prompts,
        concurrency: a.concurrency,
        request_rate: a.request_rate,
        slo_ttft_ms: a.slo_ttft_ms,
        slo_tpot_ms: a.slo_tpot_ms,
        json: a.json,
        plot: a.plot,
        seed: a.seed,
        timeout: Duration::from_secs_f64(a.timeout),
        extra_body,
        vocab: a.random_vocab,
        api_key: a.api_key.or_else(|| std::env::var("OPENAI_API_KEY").ok()),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(cfg))?;
    Ok(())
}
