//! Running a request's choices: admission, routing to a replica, then the choices submitted
//! (`submitted`) and answered as an event stream or gathered to completion.

use super::error::ApiError;
use super::params::Common;
use super::stream::{stream_response, StreamKind, StreamOptions};
use super::submitted::{collect, submit_all, ChoiceResult};
use super::tenant_load::TenantLoad;
use super::AppState;
use super::Reply;
use crate::tenants::Tenant;
use mlahost_core::{PromptHashes, RouteRequest};
use mlahost_runtime::EngineRequest;
use std::sync::Arc;

/// What admission decided for a request, the same for all its choices: the stage between a
/// validated request (`params`) and what the engine receives.
struct Admitted {
    priority: i32,
    /// The prefix-cache salt: the tenant's and the request's `cache_salt` together.
    salt: u64,
    /// The tenant's scheduler index (fair share).
    tenant: u32,
}

impl Admitted {
    /// Completes the choices for the engine, each prompt's page hashes made once (for the
    /// router and the scheduler): a prompt's n choices are consecutive and share them.
    fn apply(&self, requests: &mut [EngineRequest], page_size: usize) {
        for i in 0..requests.len() {
            let hashes = match i.checked_sub(1).map(|p| &requests[p]) {
                Some(prev) if prev.prompt == requests[i].prompt => prev.prompt_hashes.clone(),
                _ => Some(PromptHashes::of(&requests[i].prompt, page_size, self.salt)),
            };
            let r = &mut requests[i];
            (r.priority, r.salt, r.tenant, r.prompt_hashes) = (self.priority, self.salt, self.tenant, hashes);
        }
    }
}

pub enum Generated {
    Streaming(Reply),
    Done(Vec<ChoiceResult>),
}

/// Runs the choices: admission first, then routing, then as an event stream when the request
/// streams, else to completion.
pub async fn generate(
    state: &Arc<AppState>,
    tenant: &Tenant,
    mut requests: Vec<EngineRequest>,
    common: &Common,
    kind: StreamKind,
    id: &str,
) -> Result<Generated, ApiError> {
    let first = requests.first().ok_or_else(|| ApiError::internal("no choices to run"))?;
    let prompt_tokens = distinct_prompt_tokens(&requests, common.n);
    let max_tokens: usize = requests.iter().map(|r| r.max_tokens).sum();
    let stats = state.tenant_stats.get(&tenant.config.id);
    let refused = |e: ApiError| {
        stats.rejected.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        e
    };
    let load = TenantLoad::enter(state, tenant, prompt_tokens + max_tokens, requests.len()).map_err(refused)?;
    let (ticket, priority) = super::admission::admit(state, tenant, prompt_tokens, max_tokens, first.priority).map_err(refused)?;
    let admitted = Admitted {
        // Priorities first, but never above the tenant's class.
        priority: priority.min(tenant.config.max_priority),
        salt: tenant.salt(common.cache_salt.as_deref()),
        tenant: tenant.index,
    };
    admitted.apply(&mut requests, state.replicas.page_size);
    stats.requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let first = &requests[0];
    let route = RouteRequest { tenant: Some(&tenant.config.id), prompt_tokens: first.prompt.len(), priority: admitted.priority, model: &state.served_model_name };
    let first_hashes = first.prompt_hashes.as_ref().ok_or_else(|| ApiError::internal("no prompt hashes"))?;
    let replica = state.replicas.route(&route, first_hashes)?;
    let guard = replica.enter();
    let mut sub = submit_all(state, &replica.engine, requests, common).await?;
    sub.in_flight = Some(guard);
    sub.tenant_load = Some(load);
    sub.tenant_stats = Some(stats.clone());
    if !common.stream {
        let mut results = collect(sub).await?;
        if common.scores_only() {
            results.iter_mut().for_each(ChoiceResult::drop_generated);
        }
        let completion: usize = results.iter().map(|r| r.usage.completion_tokens).sum();
        stats.prompt_tokens.fetch_add(prompt_tokens as u64, std::sync::atomic::Ordering::Relaxed);
        stats.generation_tokens.fetch_add(completion as u64, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = ticket {
            let reason = results.first().and_then(|r| r.finish).map_or("stop", |f| f.as_str());
            t.settle(prompt_tokens, completion, reason);
        }
        return Ok(Generated::Done(results));
    }
    let opts = StreamOptions { kind, id: id.to_string(), common: common.clone() };
    Ok(Generated::Streaming(stream_response(state.clone(), sub, opts, ticket, stats)))
}

/// Prompt tokens of a request's choices, each prompt counted once (choices are prompt-major).
fn distinct_prompt_tokens(requests: &[EngineRequest], n: usize) -> usize {
    requests.iter().step_by(n.max(1)).map(|r| r.prompt.len()).sum()
}
