//! `mlahost bench`: a serving benchmark client in the manner of vLLM's. It streams OpenAI
//! completions or chat requests to any compatible server at a fixed concurrency (and optionally
//! a Poisson request rate), times every chunk, and reports TTFT, TPOT, ITL, end-to-end latency,
//! throughput and goodput, as a table, JSON and (for a sweep) an SVG plot.

pub mod dataset;
pub mod http_client;
pub mod report;
pub mod request;
pub mod stats;

use dataset::{DatasetSpec, Item, Options, Rng};
use http_client::{send, Endpoint};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use request::{Api, Outcome};
use serde_json::{json, Value};
use stats::Summary;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Usage(String),
    #[error("http: {0}")]
    Http(String),
    #[error("{path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub url: String,
    pub model: Option<String>,
    pub api: Api,
    pub dataset: DatasetSpec,
    pub input_len: usize,
    pub output_len: usize,
    pub num_prompts: usize,
    pub concurrency: Vec<usize>,
    pub request_rate: Option<f64>,
    pub slo_ttft_ms: Option<f64>,
    pub slo_tpot_ms: Option<f64>,
    pub json: Option<PathBuf>,
    pub plot: Option<PathBuf>,
    pub seed: u64,
    pub timeout: Duration,
    /// Extra request fields merged into every body (e.g. {"stop": ["\n"]}).
    pub extra_body: Value,
    /// Random prompt ids are drawn below this.
    pub vocab: u64,
    /// API key for servers that require one (`Authorization: Bearer`).
    pub api_key: Option<String>,
}

pub async fn run(cfg: BenchConfig) -> Result<Vec<Summary>, BenchError> {
    if cfg.concurrency.is_empty() || cfg.concurrency.contains(&0) {
        return Err(BenchError::Usage("--concurrency needs positive values".into()));
    }
    if cfg.request_rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        return Err(BenchError::Usage("--request-rate must be positive".into()));
    }
    let mut ep = Endpoint::parse(&cfg.url)?;
    ep.api_key = cfg.api_key.clone();
    let model = match &cfg.model {
        Some(m) => m.clone(),
        None => first_model(&ep).await?,
    };
    let opts = Options {
        num_prompts: cfg.num_prompts,
        input_len: cfg.input_len,
        output_len: cfg.output_len,
        vocab: cfg.vocab,
        text: cfg.api == Api::Chat,
        seed: cfg.seed,
    };
    let items = dataset::build(&cfg.dataset, &opts)?;
    let mut runs = Vec::new();
    for &c in &cfg.concurrency {
        let (outcomes, duration) = run_level(&ep, &cfg, &model, &items, c).await;
        let s = stats::summarize(&outcomes, duration, c, cfg.request_rate, cfg.slo_ttft_ms, cfg.slo_tpot_ms);
        println!("{}", report::table(&s));
        runs.push(s);
    }
    if let Some(path) = &cfg.json {
        let v = json!({"url": cfg.url, "model": model, "endpoint": format!("{:?}", cfg.api), "runs": runs});
        write(path, &serde_json::to_string_pretty(&v).unwrap_or_default())?;
    }
    if let Some(path) = &cfg.plot {
        write(path, &report::svg(&runs))?;
    }
    Ok(runs)
}

fn write(path: &PathBuf, text: &str) -> Result<(), BenchError> {
    std::fs::write(path, text).map_err(|source| BenchError::Write { path: path.clone(), source })
}

/// The server's first model, from GET /v1/models.
async fn first_model(ep: &Endpoint) -> Result<String, BenchError> {
    let resp = send(ep, "GET", "/v1/models", None).await?;
    let status = resp.status;
    let text = resp.text().await?;
    let v: Value = serde_json::from_str(&text).map_err(|_| BenchError::Http(format!("/v1/models answered {status}: {text}")))?;
    v["data"][0]["id"].as_str().map(str::to_string).ok_or_else(|| BenchError::Http("/v1/models lists no model".into()))
}

async fn run_level(ep: &Endpoint, cfg: &BenchConfig, model: &str, items: &[Item], concurrency: usize) -> (Vec<Outcome>, f64) {
    let bar = ProgressBar::with_draw_target(Some(items.len() as u64), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("concurrency {msg} {bar:40} {pos}/{len} requests ({elapsed})")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_message(concurrency.to_string());
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut arrivals = Rng::new(cfg.seed ^ 0x5eed);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(items.len());
    for item in items {
        if let Some(rate) = cfg.request_rate {
            // Poisson arrivals: exponential gaps with mean 1/rate.
            tokio::time::sleep(Duration::from_secs_f64(-arrivals.unit().ln() / rate)).await;
        }
        let permit = permits.clone().acquire_owned().await.expect("semaphore is never closed");
        let (ep, body, bar, timeout) = (ep.clone(), request::body(cfg.api, model, item, &cfg.extra_body), bar.clone(), cfg.timeout);
        let api = cfg.api;
        tasks.push(tokio::spawn(async move {
            let o = request::run(&ep, api, &body, timeout).await;
            bar.inc(1);
            drop(permit);
            o
        }));
    }
    let mut outcomes = Vec::with_capacity(tasks.len());
    for t in tasks {
        outcomes.push(t.await.unwrap_or_else(|e| Outcome { error: Some(format!("task failed: {e}")), ..Default::default() }));
    }
    bar.finish_and_clear();
    (outcomes, started.elapsed().as_secs_f64())
}
