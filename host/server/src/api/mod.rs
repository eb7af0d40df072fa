//! The OpenAI-compatible endpoints.

pub mod admin;
pub mod admission;
pub mod chat;
pub mod choice_json;
pub mod completions;
pub mod error;
pub mod fields;
pub mod logits_fields;
pub mod logprobs;
pub mod params;
pub mod run;
pub mod stream;
pub mod structured;
pub mod submitted;
pub mod tenant_load;
pub mod tool_calls;
pub mod tools;
pub mod utility;

use crate::chat_template::ChatTemplate;
use crate::limits::RequestLimits;
use crate::replicas::Replicas;
use error::ApiError;
use mlahost_engine::LoadedModel;
use crate::metrics::TenantRegistry;
use crate::tenants::{Tenant, Tenants};
use mlahost_plugins::PluginHost;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// How the server guards itself: request limits and the operator's credential.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    pub limits: RequestLimits,
    /// `sha256:<hex>` of the operator key for /admin/* and /reset_prefix_cache (None: those
    /// endpoints are off).
    pub admin_key: Option<String>,
    /// Per-tenant /metrics families for everyone (else only for the admin key).
    pub metrics_tenant_labels: bool,
    /// Origins whose pages may call the API (`--allowed-origins`; empty: no CORS, `*`: any).
    pub allowed_origins: Vec<String>,
}

/// What an endpoint answers: a JSON body, or a stream of server-sent events.
pub enum Reply {
    Json(Value),
    Sse(tokio::sync::mpsc::UnboundedReceiver<bytes::Bytes>),
}

/// What the server was started with, for the console's plan and overview panels.
#[derive(Debug, Clone, Default)]
pub struct ServeInfo {
    pub device: String,
    pub kv_cache_dtype: Option<mlahost_engine::KvCacheDtype>,
    pub page_size: usize,
    pub replicas: usize,
    pub max_num_batched_tokens: usize,
    pub max_num_seqs: usize,
    pub prefix_caching: bool,
    /// How the backends store the weights (per device), for /metrics.
    pub weights: Option<mlahost_engine::WeightStorage>,
}

pub struct AppState {
    pub replicas: Replicas,
    pub limits: RequestLimits,
    pub guard: Guard,
    /// Text longer than this cannot fit the model in any tokenization (max_model_len times the
    /// longest token's bytes): refused before tokenizing.
    pub max_prompt_bytes: usize,
    pub plugins: Arc<PluginHost>,
    /// Tenants and their keys (None: every request is the default tenant).
    pub tenants: std::sync::RwLock<Option<Arc<Tenants>>>,
    /// Requests in flight and their prompt + max_tokens, per tenant (static limits).
    pub tenant_load: std::sync::Mutex<std::collections::HashMap<String, (usize, usize)>>,
    pub tenant_stats: TenantRegistry,
    pub model: Arc<LoadedModel>,
    pub served_model_name: String,
    pub max_model_len: usize,
    pub chat_template: Option<ChatTemplate>,
    pub created: u64,
    /// How the server was started (device, cache, page size): the console's plan and overview.
    pub info: ServeInfo,
    started: std::time::Instant,
    next_id: AtomicU64,
}

impl AppState {
    pub fn new(
        replicas: Replicas,
        plugins: Arc<PluginHost>,
        tenants: Option<Arc<Tenants>>,
        model: Arc<LoadedModel>,
        served_model_name: String,
        max_model_len: usize,
        guard: Guard,
    ) -> Result<Self, String> {
        let tok = &model.tokenizer;
        let max_prompt_bytes = max_model_len.saturating_mul(tok.max_token_bytes().max(1));
        let chat_template = tok
            .chat_template
            .as_deref()
            .map(|t| ChatTemplate::new(t, tok.bos_token.as_deref(), tok.eos_token.as_deref()))
            .transpose()?;
        let created = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        Ok(Self {
            replicas,
            limits: guard.limits,
            guard,
            max_prompt_bytes,
            plugins,
            tenants: std::sync::RwLock::new(tenants),
            tenant_load: Default::default(),
            tenant_stats: TenantRegistry::default(),
            model,
            served_model_name,
            max_model_len,
            chat_template,
            created,
            info: Default::default(),
            started: std::time::Instant::now(),
            next_id: AtomicU64::new(1),
        })
    }

    pub fn next_id(&self, prefix: &str) -> String {
        format!("{prefix}-{:016x}{:08x}", self.created, self.next_request_number())
    }

    pub fn next_request_number(&self) -> u64 {
        self.next_id.fetch_add(1, Relaxed)
    }

    /// The request's tenant: from its API key when tenants are configured (401 otherwise).
    pub fn tenant(&self, authorization: Option<&str>) -> Result<Tenant, ApiError> {
        match self.tenants.read().unwrap_or_else(|p| p.into_inner()).as_ref() {
            None => Ok(Tenant::default_tenant()),
            Some(t) => t.authenticate(authorization),
        }
    }

    /// True when `authorization` carries the operator key.
    pub fn is_admin(&self, authorization: Option<&str>) -> bool {
        let (Some(want), Some(key)) = (self.guard.admin_key.as_deref(), crate::tenants::bearer(authorization)) else { return false };
        constant_time_eq(crate::tenants::hash_key(key).as_bytes(), want.to_ascii_lowercase().as_bytes())
    }

    /// Refuses text that no tokenization could fit into the model's length.
    pub fn check_prompt_bytes(&self, param: &str, bytes: usize) -> Result<(), ApiError> {
        if bytes > self.max_prompt_bytes {
            return Err(ApiError::invalid(
                param,
                format!("the prompt is {bytes} bytes, more than the model's maximum length of {} tokens can hold", self.max_model_len),
            ));
        }
        Ok(())
    }

    /// Milliseconds since the server started: the clock plugins are given.
    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// The request's `model` must name the served model (absent means the served one).
    pub fn check_model(&self, model: Option<&str>) -> Result<(), ApiError> {
        match model {
            Some(m) if m != self.served_model_name => Err(ApiError::model_not_found(m)),
            _ => Ok(()),
        }
    }

    pub fn models(&self) -> Value {
        json!({"object": "list", "data": [{
            "id": self.served_model_name, "object": "model", "created": self.created, "owned_by": "mlahost",
            "max_model_len": self.max_model_len,
        }]})
    }
}

/// Compares without an early exit, so timing tells nothing about a key hash.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Inputs at least this large are tokenized (or rendered) on the blocking pool, so a huge
/// prompt never holds an async worker that /health and other requests need.
const INLINE_BYTES: usize = 16 << 10;

/// Runs CPU-heavy request preparation inline when small, else on tokio's blocking pool.
pub async fn off_workers<T: Send + 'static>(bytes: usize, f: impl FnOnce() -> Result<T, ApiError> + Send + 'static) -> Result<T, ApiError> {
    if bytes < INLINE_BYTES {
        return f();
    }
    tokio::task::spawn_blocking(f).await.map_err(|_| ApiError::internal("preparing the prompt failed"))?
}
