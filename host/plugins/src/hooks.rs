//! Typed calls into each plugin kind, converting between the WIT types and plain Rust ones,
//! and checking what comes back (sizes, indices) before the host trusts it.

use crate::bindings::admission::exports::mlahost::plugin::admission as wit_admission;
use crate::bindings::prefix_policy::exports::mlahost::plugin::prefix_policy as wit_policy;
use crate::bindings::router::exports::mlahost::plugin::router as wit_router;
use crate::bindings::sampler::exports::mlahost::plugin::sampler as wit_sampler;
use crate::logits_row::LogitsRow;
use crate::instance::{clip, Bound};
use crate::plugin::Plugin;
use crate::PluginError;
use mlahost_core::{EvictionCandidate, ReplicaLoad};
use wasmtime::component::Resource;

/// An invalid result: counted, and then treated like any other failure of the call.
fn bad(p: &Plugin, hook: &'static str, message: impl Into<String>) -> PluginError {
    p.stats.invalid.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    PluginError::BadResult { plugin: p.spec.name.clone(), hook, message: message.into() }
}

/// The longest Retry-After an admission plugin may ask clients to wait, in seconds.
pub const MAX_RETRY_AFTER_SECS: u32 = 3600;

fn wrong_kind() -> wasmtime::Error {
    wasmtime::Error::msg("hook called on a plugin of another kind")
}

/// The sampling parameters a sampler plugin sees.
#[derive(Debug, Clone, Default)]
pub struct SamplerParams {
    pub temperature: f32,
    pub top_p: f32,
    pub top_k: u32,
    pub seed: Option<u64>,
    pub max_tokens: u32,
    pub config: String,
}

pub struct SampleSeq<'a> {
    pub request_id: u64,
    pub params: SamplerParams,
    pub prompt_len: u32,
    pub generated: &'a [u32],
    /// The step's logits (all rows) and this sequence's row in them.
    pub batch: &'a std::sync::Arc<Vec<f32>>,
    pub row: std::ops::Range<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SampleDecision {
    Token(u32),
    Bias(Vec<(u32, f32)>),
    /// Bitset over the vocabulary of allowed tokens.
    Allow(Vec<u64>),
    Pass,
}

impl Plugin {
    pub fn sample(&self, seqs: &[SampleSeq<'_>]) -> Result<Vec<SampleDecision>, PluginError> {
        let decisions = self.call("sample", |store, bound| {
            let Bound::Sampler(b) = bound else { return Err(wrong_kind()) };
            let mut rows: Vec<Resource<LogitsRow>> = Vec::with_capacity(seqs.len());
            for s in seqs {
                rows.push(store.data_mut().table.push(LogitsRow { batch: s.batch.clone(), range: s.row.clone() })?);
            }
            let step: Vec<wit_sampler::Sequence> = seqs
                .iter()
                .zip(&rows)
                .map(|(s, row)| wit_sampler::Sequence {
                    request_id: s.request_id,
                    params: wit_sampler::Params {
                        temperature: s.params.temperature,
                        top_p: s.params.top_p,
                        top_k: s.params.top_k,
                        seed: s.params.seed,
                        max_tokens: s.params.max_tokens,
                        config: s.params.config.clone(),
                    },
                    prompt_len: s.prompt_len,
                    generated: s.generated.to_vec(),
                    logits: Resource::new_borrow(row.rep()),
                })
                .collect();
            let out = b.mlahost_plugin_sampler().call_sample(&mut *store, &step);
            for row in rows {
                let _ = store.data_mut().table.delete(row);
            }
            out
        })?;
        let decisions = decisions.map_err(|m| bad(self, "sample", format!("returned an error: {}", clip(&m))))?;
        if decisions.len() != seqs.len() {
            return Err(bad(self, "sample", format!("{} decisions for {} sequences", decisions.len(), seqs.len())));
        }
        decisions.into_iter().zip(seqs).map(|(d, s)| self.check_decision(d, s.row.len())).collect()
    }

    /// A sampler decision is used only when it names tokens of the vocabulary, with finite
    /// biases, or a bitset of exactly the vocabulary's words that allows at least one token.
    fn check_decision(&self, d: wit_sampler::Decision, vocab: usize) -> Result<SampleDecision, PluginError> {
        let bad = |m: String| Err(bad(self, "sample", m));
        match d {
            wit_sampler::Decision::Token(t) if (t as usize) < vocab => Ok(SampleDecision::Token(t)),
            wit_sampler::Decision::Token(t) => bad(format!("token {t} is outside the vocabulary of {vocab}")),
            wit_sampler::Decision::Bias(list) => {
                if list.len() > vocab {
                    return bad(format!("{} biases for a vocabulary of {vocab}", list.len()));
                }
                if let Some(b) = list.iter().find(|b| b.id as usize >= vocab || !b.bias.is_finite()) {
                    return bad(format!("bias {} for token {} (ids must be in the vocabulary, biases finite)", b.bias, b.id));
                }
                Ok(SampleDecision::Bias(list.into_iter().map(|b| (b.id, b.bias)).collect()))
            }
            wit_sampler::Decision::Allow(bits) => {
                let words = vocab.div_ceil(64);
                if bits.len() != words {
                    return bad(format!("allow bitset of {} words; the vocabulary of {vocab} needs {words}", bits.len()));
                }
                let tail = match vocab % 64 {
                    0 => u64::MAX,
                    r => (1u64 << r) - 1,
                };
                let any = bits.iter().enumerate().any(|(i, &w)| (if i + 1 == words { w & tail } else { w }) != 0);
                if !any {
                    return bad("the allow bitset allows no token".into());
                }
                Ok(SampleDecision::Allow(bits))
            }
            wit_sampler::Decision::Pass => Ok(SampleDecision::Pass),
        }
    }

    /// `Ok(Ok(i))` a replica, `Ok(Err(msg))` a rejection.
    pub fn route(&self, tenant: Option<&str>, prompt_tokens: usize, priority: i32, model: &str, replicas: &[ReplicaLoad]) -> Result<Result<usize, String>, PluginError> {
        let req = wit_router::RequestSummary {
            tenant: tenant.map(str::to_string),
            prompt_tokens: sat(prompt_tokens),
            priority,
            model: model.to_string(),
        };
        let states: Vec<wit_router::ReplicaState> = replicas
            .iter()
            .map(|r| wit_router::ReplicaState {
                waiting: sat(r.waiting),
                running: sat(r.running),
                free_pages: sat(r.free_pages),
                cached_prefix_tokens: sat(r.cached_prefix_tokens),
            })
            .collect();
        let route = self.call("route", |store, bound| {
            let Bound::Router(b) = bound else { return Err(wrong_kind()) };
            b.mlahost_plugin_router().call_route(store, &req, &states)
        })?;
        match route {
            wit_router::RouteDecision::Replica(i) if (i as usize) < replicas.len() => Ok(Ok(i as usize)),
            wit_router::RouteDecision::Replica(i) => Err(bad(self, "route", format!("replica {i} of {}", replicas.len()))),
            wit_router::RouteDecision::Reject(m) => Ok(Err(clip(&m))),
        }
    }

    /// Eviction order and pins for the candidates (pages not among them are dropped).
    pub fn decide_eviction(&self, candidates: &[EvictionCandidate], needed: usize) -> Result<(Vec<u32>, Vec<u32>), PluginError> {
        let list: Vec<wit_policy::Candidate> = candidates
            .iter()
            .map(|c| wit_policy::Candidate {
                page: c.page,
                tenant: None,
                salt: c.salt,
                last_use: c.last_used,
                hits: c.hits,
                depth: c.depth,
                pages: 1,
            })
            .collect();
        let d = self.call("decide", |store, bound| {
            let Bound::PrefixPolicy(b) = bound else { return Err(wrong_kind()) };
            b.mlahost_plugin_prefix_policy().call_decide(store, &list, sat(needed))
        })?;
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
        let req = wit_admission::RequestInfo {
            request_id: info.request_id,
            tenant: info.tenant.clone(),
            key_id: info.key_id.clone(),
            priority: info.priority,
            prompt_tokens: sat(info.prompt_tokens),
            max_tokens: sat(info.max_tokens),
            model: info.model.clone(),
            now_ms: info.now_ms,
        };
        let v = self.call("admit", |store, bound| {
            let Bound::Admission(b) = bound else { return Err(wrong_kind()) };
            b.mlahost_plugin_admission().call_admit(store, &req)
        })?;
        Ok(match v {
            wit_admission::Verdict::Admit(p) => AdmissionVerdict::Admit { priority: p },
            wit_admission::Verdict::Reject(r) => {
                let status = if r.status == 403 { 403 } else { 429 };
                let retry_after_secs = r.retry_after_secs.map(|s| s.clamp(1, MAX_RETRY_AFTER_SECS));
                AdmissionVerdict::Reject { status, message: clip(&r.message), retry_after_secs }
            }
        })
    }

    pub fn completed(&self, usage: &AdmissionUsage) -> Result<(), PluginError> {
        let u = wit_admission::Usage {
            request_id: usage.request_id,
            tenant: usage.tenant.clone(),
            prompt_tokens: sat(usage.prompt_tokens),
            completion_tokens: sat(usage.completion_tokens),
            finish_reason: usage.finish_reason.clone(),
            now_ms: usage.now_ms,
        };
        self.call("completed", |store, bound| {
            let Bound::Admission(b) = bound else { return Err(wrong_kind()) };
            b.mlahost_plugin_admission().call_completed(store, &u)
        })
    }
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
