//! `mlahost serve`: bind first (so /health answers 503 while loading), load the model, start
//! the engine loop, serve HTTP/1.1 until a shutdown signal, then drain gracefully.

use crate::api::error::ApiError;
use crate::api::{AppState, Guard};
use mlahost_runtime::{BackendFactory, BackendOptions, EngineCore, SchedulerFactory};
use crate::http::route;
use crate::respond::{error_response, Gate, HttpBody};
use crate::limits::HttpLimits;
use crate::metrics::Metrics;
use crate::{default_model, ServerError};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use crate::replicas::{Replica, Replicas};
use crate::tenants::Tenants;
use mlahost_core::{BlockAllocator, PrefixAwareRouter, PrefixIndex, RoundRobinRouter, Router, Scheduler, SchedulerConfig};
use mlahost_engine::{capacity, Backend, KvCacheDtype, LoadedModel, ModelConfig, TokenBytes, Tokenizer};
use mlahost_plugins::{PluginEvictionPolicy, PluginHost, PluginKind, PluginRouter, PluginSpec, Vocabulary};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

#[derive(Clone)]
pub struct ServeConfig {
    /// None serves the built-in default model.
    pub model: Option<PathBuf>,
    /// The directory's safetensors, or weights generated from its config.json (`dummy`).
    pub load_format: mlahost_engine::LoadFormat,
    pub host: String,
    pub port: u16,
    pub page_size: usize,
    pub kv_cache_pages: Option<usize>,
    pub kv_cache_memory: Option<u64>,
    /// What the latent cache stores (already resolved for the backend).
    pub kv_cache_dtype: KvCacheDtype,
    pub max_model_len: Option<usize>,
    pub served_model_name: Option<String>,
    pub shutdown_timeout: Duration,
    pub scheduler: SchedulerConfig,
    /// Engine replicas in this process (data parallel), each with its own cache and scheduler.
    pub replicas: usize,
    pub router: RouterChoice,
    /// WebAssembly plugins (`--plugin`), loaded before the model.
    pub plugins: Vec<PluginSpec>,
    /// How often plugin files are checked for a new version (None: no hot reload by file).
    pub plugin_watch: Option<Duration>,
    /// Tenants and their API keys (`--tenants`); without it every request is one default tenant.
    pub tenants: Option<PathBuf>,
    /// Builds each replica's backend (the device, its memory share and graph settings are
    /// the factory's business).
    pub backends: Arc<dyn BackendFactory>,
    /// Request limits and the operator credential.
    pub guard: Guard,
    /// Connection cap and timeouts.
    pub http: HttpLimits,
    /// Shown while the checkpoint loads (the CLI's progress bar).
    pub load_progress: Option<LoadProgressHook>,
}

/// A loading-progress sink for `ServeConfig` (a trait object, so Debug by hand).
#[derive(Clone)]
pub struct LoadProgressHook(pub Arc<dyn mlahost_engine::model::LoadProgress>);

impl std::fmt::Debug for LoadProgressHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoadProgressHook")
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RouterChoice {
    /// Best cached prefix unless the load is imbalanced (thresholds: absolute, relative).
    PrefixAware { abs_threshold: usize, rel_factor: f64 },
    RoundRobin,
}

struct Shared {
    state: OnceLock<Arc<AppState>>,
    gate: Arc<Gate>,
    http: HttpLimits,
    connections: Arc<Semaphore>,
    /// Flips to true at shutdown: every connection finishes its response and closes.
    drain: watch::Receiver<bool>,
}

pub async fn serve(cfg: ServeConfig, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
    // Settings that need no model are refused before "listening", which must not read as success.
    if cfg.page_size == 0 {
        return Err(ServerError::Config("--page-size must be at least 1".into()));
    }
    if cfg.replicas == 0 {
        return Err(ServerError::Config("--replicas must be at least 1".into()));
    }
    let addr = format!("{}:{}", cfg.host, cfg.port);
    let listener = TcpListener::bind(&addr).await.map_err(|source| ServerError::Bind { addr: addr.clone(), source })?;
    let local = listener.local_addr()?;
    eprintln!("mlahost listening on http://{local}");
    let (drain_tx, drain) = watch::channel(false);
    let gate = Arc::new(Gate { in_flight: Arc::new(AtomicUsize::new(0)), draining: AtomicBool::new(false), body_timeout: cfg.http.body_timeout });
    let shared = Arc::new(Shared {
        state: OnceLock::new(),
        gate: gate.clone(),
        http: cfg.http,
        connections: Arc::new(Semaphore::new(cfg.http.max_connections.max(1))),
        drain,
    });
    let accept = tokio::spawn(accept_loop(listener, shared.clone()));
    let cfg2 = cfg.clone();
    let started = tokio::task::spawn_blocking(move || start_engine(&cfg2)).await;
    let (state, engine_threads) = match started {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            accept.abort();
            return Err(e);
        }
        Err(e) => {
            accept.abort();
            return Err(ServerError::Config(format!("model loading panicked: {e}")));
        }
    };
    let _ = shared.state.set(state.clone());
    for r in &state.replicas.list {
        r.metrics.ready.store(true, SeqCst);
    }
    tracing::info!(model = %state.served_model_name, max_model_len = state.max_model_len, "ready");
    eprintln!("mlahost ready: model {} (max length {})", state.served_model_name, state.max_model_len);
    shutdown.await;
    eprintln!("mlahost shutting down: waiting up to {:?} for {} requests", cfg.shutdown_timeout, gate.in_flight.load(SeqCst));
    accept.abort();
    // New requests get 503; idle keep-alive connections close now, busy ones after their response.
    gate.draining.store(true, SeqCst);
    let _ = drain_tx.send(true);
    let deadline = Instant::now() + cfg.shutdown_timeout;
    while gate.in_flight.load(SeqCst) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for r in &state.replicas.list {
        r.engine.abort_all();
    }
    let grace = Instant::now() + Duration::from_secs(2);
    while gate.in_flight.load(SeqCst) > 0 && Instant::now() < grace {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for r in &state.replicas.list {
        r.metrics.ready.store(false, SeqCst);
    }
    drop(engine_threads);
    Ok(())
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        match shared.connections.clone().try_acquire_owned() {
            Ok(permit) => {
                let shared = shared.clone();
                tokio::spawn(async move {
                    serve_connection(stream, shared).await;
                    drop(permit);
                });
            }
            Err(_) => {
                tokio::spawn(refuse_connection(stream));
            }
        }
    }
}

/// Serves one connection until the client closes it, it idles past the header timeout, or
/// the server drains.
async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let shared2 = shared.clone();
    let service = service_fn(move |req| {
        let shared = shared2.clone();
        async move {
            match shared.state.get() {
                Some(state) => route(state.clone(), shared.gate.clone(), req).await,
                None => Ok(loading_response(req.uri().path())),
            }
        }
    });
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(shared.http.header_timeout);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let mut drain = shared.drain.clone();
    let mut draining = *drain.borrow();
    if draining {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            changed = drain.changed(), if !draining => {
                draining = true;
                if changed.is_ok() {
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Over the connection cap: a short 503 and close, without reading the request.
async fn refuse_connection(mut stream: TcpStream) {
    use tokio::io::AsyncWriteExt;
    const BODY: &str = r#"{"error":{"message":"too many open connections (--max-connections)","type":"service_unavailable","param":null,"code":503}}"#;
    let reply = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(reply.as_bytes())).await;
    let _ = stream.shutdown().await;
}

fn loading_response(path: &str) -> Response<HttpBody> {
    if path == "/health" {
        return Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .body(Full::new(Bytes::from_static(b"loading\n")).boxed())
            .expect("static response");
    }
    error_response(&ApiError::overloaded("the model is still loading"))
}

/// The model's vocabulary as sampler plugins receive it: the tokenizer's tokens as bytes,
/// padded to the model's vocabulary size, and its stop ids.
fn plugin_vocabulary(dir: &std::path::Path) -> Result<Vocabulary, ServerError> {
    let tokenizer = Tokenizer::from_dir(dir)?;
    let config = ModelConfig::from_file(&dir.join("config.json"))?;
    let mut eos = config.eos_token_ids.clone();
    eos.extend(tokenizer.eos_token_id.filter(|e| !eos.contains(e)));
    let t = TokenBytes::new(&tokenizer, config.vocab_size, eos);
    Ok(Vocabulary::new(&t.tokens, t.special, t.eos))
}

/// Loads the model, sizes each replica's cache and starts their engine loops.
fn start_engine(cfg: &ServeConfig) -> Result<(Arc<AppState>, Vec<std::thread::JoinHandle<()>>), ServerError> {
    let (dir, default_name) = match &cfg.model {
        Some(d) => (d.clone(), d.display().to_string()),
        None => (default_model::materialize()?, default_model::NAME.to_string()),
    };
    // Plugins first: a bad one refuses the start before the weights are loaded.
    let mut specs = cfg.plugins.clone();
    crate::builtin_plugins::add_builtin(&mut specs)?;
    let plugins = Arc::new(PluginHost::load(specs, plugin_vocabulary(&dir)?)?);
    if let Some(every) = cfg.plugin_watch {
        plugins.watch(every);
    }
    let tenants = match &cfg.tenants {
        Some(path) => Some(Arc::new(Tenants::load(path).map_err(ServerError::Config)?)),
        None => None,
    };
    // Config and tokenizer now; the weights when the backends are built (a CPU replica shares
    // one host copy, a GPU replica streams its own a layer at a time).
    let model = Arc::new(LoadedModel::open(&dir, cfg.load_format, cfg.load_progress.as_ref().map(|p| p.0.clone()))?);
    let name = cfg.served_model_name.clone().unwrap_or(default_name);
    let c = &model.config;
    if cfg.page_size == 0 {
        return Err(ServerError::Config("--page-size must be at least 1".into()));
    }
    if cfg.replicas == 0 {
        return Err(ServerError::Config("--replicas must be at least 1".into()));
    }
    // Sized by the same functions `mlahost plan` uses, so its answer is what is allocated here.
    let dtype = cfg.kv_cache_dtype;
    let weights = capacity::count_weights(&dir, c)?;
    let mut backends: Vec<Box<dyn Backend>> = Vec::with_capacity(cfg.replicas);
    for replica in 0..cfg.replicas {
        let options = BackendOptions {
            replica,
            page_size: cfg.page_size,
            kv_cache_pages: cfg.kv_cache_pages,
            kv_cache_memory: cfg.kv_cache_memory,
            kv_dtype: dtype,
            max_batched_tokens: cfg.scheduler.max_num_batched_tokens,
            max_seqs: cfg.scheduler.max_num_seqs,
            planned_weights: Some(weights),
        };
        backends.push(cfg.backends.build(&model, &options).map_err(|e| ServerError::Config(e.to_string()))?);
    }
    let num_pages = backends.iter().map(|b| b.cache_geometry().num_pages).min().unwrap_or(0);
    // Data-parallel attention: one pool per attention group, and a sequence lives in one.
    let pools = backends.first().map_or(1, |b| b.cache_pools());
    let stored = backends.first().and_then(|b| b.weight_storage());
    let page_bytes = capacity::page_bytes(c, dtype, cfg.page_size);
    let capacity = num_pages * cfg.page_size;
    let max_model_len = cfg.max_model_len.unwrap_or(c.max_position_embeddings).min(c.max_position_embeddings).min(capacity / pools);
    tracing::info!(
        replicas = cfg.replicas,
        device = %cfg.backends.describe(),
        weight_params = weights.parameters,
        weight_bytes_bf16 = weights.bf16_bytes(),
        kv_cache_dtype = dtype.as_str(),
        kv_bytes_per_token_per_layer = dtype.bytes_per_token_per_layer(c),
        layers = c.num_hidden_layers,
        page_size = cfg.page_size,
        page_bytes,
        pool_pages = num_pages,
        pool_tokens = capacity,
        pool_bytes = page_bytes * num_pages as u64,
        weight_linears = stored.as_ref().map_or("unknown", |w| w.linears),
        weight_embeddings = stored.as_ref().map_or("unknown", |w| w.embeddings),
        weight_bytes_per_device = stored.as_ref().map_or(0, |w| w.bytes),
        "latent cache per replica"
    );
    let mut list = Vec::new();
    let mut threads = Vec::new();
    for (replica, backend) in backends.into_iter().enumerate() {
        let index = Arc::new(PrefixIndex::new());
        let make_scheduler = scheduler_factory(cfg, num_pages, pools, index.clone(), &plugins);
        let metrics = Arc::new(Metrics::new(&name, replica));
        metrics.kv_cache_tokens.store(capacity as u64, SeqCst);
        metrics.kv_cache_bytes_per_token.store(page_bytes / cfg.page_size as u64, SeqCst);
        let core = EngineCore::new(model.clone(), backend, make_scheduler, max_model_len, metrics.clone())?.with_samplers(plugins.samplers());
        let (engine, join) = mlahost_runtime::spawn(core)?;
        list.push(Replica { engine, metrics, index, in_flight: Default::default() });
        threads.push(join);
    }
    let native: Box<dyn Router> = match cfg.router {
        RouterChoice::PrefixAware { abs_threshold, rel_factor } => Box::new(PrefixAwareRouter { abs_threshold, rel_factor }),
        RouterChoice::RoundRobin => Box::new(RoundRobinRouter::default()),
    };
    let router: Box<dyn Router> = match plugins.single(PluginKind::Router) {
        Some(plugin) => Box::new(PluginRouter { plugin, native }),
        None => native,
    };
    let replicas = Replicas { list, router, page_size: cfg.page_size, prefix_caching: cfg.scheduler.prefix_caching };
    let watch_tenants = tenants.is_some();
    let mut state = AppState::new(replicas, plugins, tenants, model, name, max_model_len, cfg.guard.clone()).map_err(ServerError::Config)?;
    state.info = crate::api::ServeInfo {
        device: cfg.backends.describe(),
        kv_cache_dtype: Some(dtype),
        page_size: cfg.page_size,
        replicas: cfg.replicas,
        max_num_batched_tokens: cfg.scheduler.max_num_batched_tokens,
        max_num_seqs: cfg.scheduler.max_num_seqs,
        prefix_caching: cfg.scheduler.prefix_caching,
        weights: stored,
    };
    let state = Arc::new(state);
    if watch_tenants {
        crate::api::admin::watch_tenants_file(&state);
    }
    Ok((state, threads))
}

/// A replica's scheduler over a fresh page pool, its prefix index emptied and the prefix
/// policy plugin (if any) installed: at start, and again if an engine step panics.
fn scheduler_factory(cfg: &ServeConfig, num_pages: usize, pools: usize, index: Arc<PrefixIndex>, plugins: &Arc<PluginHost>) -> SchedulerFactory {
    let (scheduler, page_size, policy) = (cfg.scheduler, cfg.page_size, plugins.single(PluginKind::PrefixPolicy));
    Box::new(move || {
        let mut s = Scheduler::with_pools(scheduler, BlockAllocator::split(num_pages, page_size, pools)?)?;
        index.clear();
        for pool in s.pools_mut() {
            pool.set_shared_index(index.clone());
            if let Some(p) = &policy {
                pool.set_eviction_policy(Box::new(PluginEvictionPolicy { plugin: p.clone() }));
            }
        }
        Ok(s)
    })
}
