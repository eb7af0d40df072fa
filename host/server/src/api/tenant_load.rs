//! A request's weight against its tenant's static limits (concurrent engine requests, queued
//! tokens), held from admission until the request ends.

use super::error::ApiError;
use super::AppState;
use crate::tenants::Tenant;
use std::sync::Arc;

/// A request counted against its tenant's static limits until it ends: its engine requests
/// (prompts x n) and its tokens.
pub struct TenantLoad {
    state: Arc<AppState>,
    tenant: String,
    requests: usize,
    tokens: usize,
}

impl TenantLoad {
    pub fn enter(state: &Arc<AppState>, tenant: &Tenant, tokens: usize, requests: usize) -> Result<Self, ApiError> {
        let mut load = state.tenant_load.lock().unwrap_or_else(|p| p.into_inner());
        let (running, queued) = load.entry(tenant.config.id.clone()).or_default();
        let over = |what: &str, limit: usize| ApiError {
            status: 429,
            message: format!("over the tenant's {what} limit ({limit})"),
            kind: "rate_limit_error",
            param: None,
            retry_after: Some(1),
        };
        let (limit, what) = match tenant.config.max_concurrent_requests {
            Some(l) => (l, "max_concurrent_requests"),
            None => (state.limits.max_tenant_requests, "--max-tenant-requests"),
        };
        if *running + requests > limit {
            return Err(over(what, limit));
        }
        if let Some(limit) = tenant.config.max_queued_tokens {
            if *queued + tokens > limit {
                return Err(over("max_queued_tokens", limit));
            }
        }
        *running += requests;
        *queued += tokens;
        Ok(Self { state: state.clone(), tenant: tenant.config.id.clone(), requests, tokens })
    }
}

impl Drop for TenantLoad {
    fn drop(&mut self) {
        let mut load = self.state.tenant_load.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((running, queued)) = load.get_mut(&self.tenant) {
            *running = running.saturating_sub(self.requests);
            *queued = queued.saturating_sub(self.tokens);
        }
    }
}
