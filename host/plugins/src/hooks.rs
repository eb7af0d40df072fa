//! Typed calls into each plugin kind, converting between the WIT types and plain Rust ones,
//! and checking what comes back (sizes, indices) before the host trusts it.

use crate::instance::{clip, Bound};
use crate::plugin::Plugin;
use crate::PluginError;
use mlahost_core::{EvictionCandidate, ReplicaLoad};

/// Runs `body` with `wit` naming the export module of whichever version of the kind `bound`
/// is (the versions' types have the same shape, so one body serves them all).
macro_rules! each_version {
    ($bound:expr, $( $variant:ident => $($module:ident)::+ ),+ ; |$b:ident| $body:expr) => {
        match $bound {
            $( Bound::$variant($b) => {
                #[allow(unused_imports)]
                use crate::bindings::$($module)::+ as wit;
                $body
            } )+
            _ => Err(wrong_kind()),
        }
    };
}

/// An invalid result: counted, and then treated like any other failure of the call.
pub(crate) fn bad(p: &Plugin, hook: &'static str, message: impl Into<String>) -> PluginError {
    p.stats.invalid.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    PluginError::BadResult { plugin: p.spec.name.clone(), hook, message: message.into() }
}

/// The longest Retry-After an admission plugin may ask clients to wait, in seconds.
pub const MAX_RETRY_AFTER_SECS: u32 = 3600;

pub(crate) fn wrong_kind() -> wasmtime::Error {
    wasmtime::Error::msg("hook called on a plugin of another kind")
}

impl Plugin {
    /// `Ok(Ok(i))` a replica, `Ok(Err(msg))` a rejection.
    pub fn route(&self, tenant: Option<&str>, prompt_tokens: usize, priority: i32, model: &str, replicas: &[ReplicaLoad]) -> Result<Result<usize, String>, PluginError> {
        let route = self.call("route", |store, bound| {
            each_version!(bound, RouterV2 => v2::router::exports::mlahost::plugin::router, RouterV1 => v1::router::exports::mlahost::plugin::router; |b| {
                let req = wit::RequestSummary {
                    tenant: tenant.map(str::to_string),
                    prompt_tokens: sat(prompt_tokens),
                    priority,
                    model: model.to_string(),
                };
                let states: Vec<wit::ReplicaState> = replicas
                    .iter()
                    .map(|r| wit::ReplicaState {
                        waiting: sat(r.waiting),
                        running: sat(r.running),
                        free_pages: sat(r.free_pages),
                        cached_prefix_tokens: sat(r.cached_prefix_tokens),
                    })
                    .collect();
                Ok(match b.mlahost_plugin_router().call_route(store, &req, &states)? {
                    wit::RouteDecision::Replica(i) => Ok(i),
                    wit::RouteDecision::Reject(m) => Err(m),
                })
            })
        })?;
        match route {
            Ok(i) if (i as usize) < replicas.len() => Ok(Ok(i as usize)),
            Ok(i) => Err(bad(self, "route", format!("replica {i} of {}", replicas.len()))),
            Err(m) => Ok(Err(clip(&m))),
        }
    }

    /// Eviction order and pins for the candidates (pages not among them are dropped).
    pub fn decide_eviction(&self, candidates: &[EvictionCandidate], needed: usize) -> Result<(Vec<u32>, Vec<u32>), PluginError> {
        let (evict_order, pin) = self.call("decide", |store, bound| {
            each_version!(bound, PrefixPolicyV2 => v2::prefix_policy::exports::mlahost::plugin::prefix_policy, PrefixPolicyV1 => v1::prefix_policy::exports::mlahost::plugin::prefix_policy; |b| {
                let list: Vec<wit::Candidate> = candidates
                    .iter()
                    .map(|c| wit::Candidate {
                        page: c.page,
                        tenant: None,
                        salt: c.salt,
                        last_use: c.last_used,
                        hits: c.hits,
                        depth: c.depth,
                        pages: 1,
                    })
                    .collect();
                let d = b.mlahost_plugin_prefix_policy().call_decide(store, &list, sat(needed))?;
                Ok((d.evict_order, d.pin))
            })
        })?;
        let d = EvictionAnswer { evict_order, pin };
        if d.evict_order.len() > candidates.len() || d.pin.len() > candidates.len() {
            return Err(bad(self, "decide", "more pages than candidates"));
        }
        let known: std::collections::HashSet<u32> = candidates.iter().map(|c| c.page).collect();
        if let Some(p) = d.evict_order.iter().chain(&d.pin).find(|p| !known.contains(p)) {
            return Err(bad(self, "decide", format!("page {p} is not a candidate")));
        }
        Ok((d.evict_order, d.pin))
    }

    pub fn admit(&self, info: &AdmissionInfo) -> Result<AdmissionVerdict, PluginError> {
        self.call("admit", |store, bound| {
            each_version!(bound, AdmissionV2 => v2::admission::exports::mlahost::plugin::admission, AdmissionV1 => v1::admission::exports::mlahost::plugin::admission; |b| {
                let req = wit::RequestInfo {
                    request_id: info.request_id,
                    tenant: info.tenant.clone(),
                    key_id: info.key_id.clone(),
                    priority: info.priority,
                    prompt_tokens: sat(info.prompt_tokens),
                    max_tokens: sat(info.max_tokens),
                    model: info.model.clone(),
                    now_ms: info.now_ms,
                };
                Ok(match b.mlahost_plugin_admission().call_admit(store, &req)? {
                    wit::Verdict::Admit(p) => AdmissionVerdict::Admit { priority: p },
                    wit::Verdict::Reject(r) => {
                        let status = if r.status == 403 { 403 } else { 429 };
                        let retry_after_secs = r.retry_after_secs.map(|s| s.clamp(1, MAX_RETRY_AFTER_SECS));
                        AdmissionVerdict::Reject { status, message: clip(&r.message), retry_after_secs }
                    }
                })
            })
        })
    }

    pub fn completed(&self, usage: &AdmissionUsage) -> Result<(), PluginError> {
        self.call("completed", |store, bound| {
            each_version!(bound, AdmissionV2 => v2::admission::exports::mlahost::plugin::admission, AdmissionV1 => v1::admission::exports::mlahost::plugin::admission; |b| {
                let u = wit::Usage {
                    request_id: usage.request_id,
                    tenant: usage.tenant.clone(),
                    prompt_tokens: sat(usage.prompt_tokens),
                    completion_tokens: sat(usage.completion_tokens),
                    finish_reason: usage.finish_reason.clone(),
                    now_ms: usage.now_ms,
                };
                b.mlahost_plugin_admission().call_completed(store, &u)
            })
        })
    }
}

struct EvictionAnswer {
    evict_order: Vec<u32>,
    pin: Vec<u32>,
}

fn sat(x: usize) -> u32 {
    u32::try_from(x).unwrap_or(u32::MAX)
}

#[derive(Debug, Clone)]
pub struct AdmissionInfo {
    pub request_id: u64,
    pub tenant: String,
    pub key_id: Option<String>,
    pub priority: i32,
    pub prompt_tokens: usize,
    pub max_tokens: usize,
    pub model: String,
    pub now_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdmissionVerdict {
    Admit { priority: i32 },
    Reject { status: u16, message: String, retry_after_secs: Option<u32> },
}

#[derive(Debug, Clone)]
pub struct AdmissionUsage {
    pub request_id: u64,
    pub tenant: String,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub finish_reason: String,
    pub now_ms: u64,
}
