//! The OpenAI-compatible endpoints.

pub mod admission;
pub mod chat;
pub mod completions;
pub mod error;
pub mod logprobs;
pub mod params;
pub mod run;
pub mod stream;

use crate::chat_template::ChatTemplate;
use crate::replicas::Replicas;
use error::ApiError;
use mlahost_engine::LoadedModel;
use crate::metrics::TenantRegistry;
use crate::tenants::{Tenant, Tenants};
use mlahost_plugins::PluginHost;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

pub struct AppState {
    pub replicas: Replicas,
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
    ) -> Result<Self, String> {
        let tok = &model.tokenizer;
        let chat_template = tok
            .chat_template
            .as_deref()
            .map(|t| ChatTemplate::new(t, tok.bos_token.as_deref(), tok.eos_token.as_deref()))
            .transpose()?;
        let created = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        Ok(Self {
            replicas,
            plugins,
            tenants: std::sync::RwLock::new(tenants),
            tenant_load: Default::default(),
            tenant_stats: TenantRegistry::default(),
            model,
            served_model_name,
            max_model_len,
            chat_template,
            created,
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
