//! The admission plugin's verdict on arrival, and its usage callback when the request ends
//! (the usage charged equals the usage returned to the client).

use super::error::ApiError;
use super::AppState;
use crate::tenants::Tenant;
use mlahost_plugins::{AdmissionInfo, AdmissionUsage, AdmissionVerdict, FailurePolicy, Plugin};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// An admitted request's account with the admission plugin; reports on `settle` or, if the
/// request ends early (client gone), on drop with what was delivered.
pub struct Ticket {
    plugin: Arc<Plugin>,
    state: Arc<AppState>,
    request_id: u64,
    tenant: String,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    settled: bool,
}

impl Ticket {
    pub fn settle(mut self, prompt_tokens: usize, completion_tokens: usize, reason: &str) {
        self.prompt_tokens = prompt_tokens;
        self.completion_tokens = completion_tokens;
        self.report(reason);
    }

    fn report(&mut self, reason: &str) {
        self.settled = true;
        let usage = AdmissionUsage {
            request_id: self.request_id,
            tenant: self.tenant.clone(),
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            finish_reason: reason.to_string(),
            now_ms: self.state.now_ms(),
        };
        if let Err(e) = self.plugin.completed(&usage) {
            tracing::warn!(plugin = %self.plugin.spec.name, error = %e, "admission completion callback failed");
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.settled {
            self.report("abort");
        }
    }
}

/// Asks the admission plugin (if any). Returns the ticket to settle and the priority to run
/// at; a rejection becomes a 429/403 with Retry-After.
pub fn admit(
    state: &Arc<AppState>,
    tenant: &Tenant,
    prompt_tokens: usize,
    max_tokens: usize,
    priority: i32,
) -> Result<(Option<Ticket>, i32), ApiError> {
    let Some(plugin) = state.plugins.single(mlahost_plugins::PluginKind::Admission) else { return Ok((None, priority)) };
    let request_id = state.next_request_number();
    let key_id = tenant.key_id.clone();
    let tenant = tenant.config.id.clone();
    let info = AdmissionInfo {
        request_id,
        tenant: tenant.clone(),
        key_id,
        priority,
        prompt_tokens,
        max_tokens,
        model: state.served_model_name.clone(),
        now_ms: state.now_ms(),
    };
    let ticket = |priority| {
        let t = Ticket { plugin: plugin.clone(), state: state.clone(), request_id, tenant: tenant.clone(), prompt_tokens, completion_tokens: 0, settled: false };
        Ok((Some(t), priority))
    };
    match plugin.admit(&info) {
        Ok(AdmissionVerdict::Admit { priority }) => ticket(priority),
        Ok(AdmissionVerdict::Reject { status, message, retry_after_secs }) => Err(ApiError {
            status,
            message,
            kind: if status == 403 { "permission_error" } else { "rate_limit_error" },
            param: None,
            retry_after: retry_after_secs.map(u64::from),
        }),
        Err(e) => match plugin.spec.failure_policy {
            FailurePolicy::Open => {
                plugin.stats.fallbacks.fetch_add(1, Relaxed);
                Ok((None, priority))
            }
            FailurePolicy::Closed => {
                tracing::warn!(plugin = %plugin.spec.name, error = %e, "admission plugin failed; failing closed");
                Err(ApiError::overloaded("admission plugin failed (details are in the server log)"))
            }
        },
    }
}
