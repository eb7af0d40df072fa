//! Submitting a request's choices to the engine loop and gathering their events: one event
//! stream per request, the text of each choice made here (detokenization, stop strings), and
//! one way to end a choice early (`EngineHandle::finish`: a stop string, or the request's
//! owner dropped because the client left).

use super::error::ApiError;
use super::params::Common;
use super::stream::{stream_response, StreamKind, StreamOptions};
use super::AppState;
use mlahost_runtime::{ChoiceEvent, ChoiceText, EngineEvents, EngineHandle, EngineRequest, Event, FinishReason, PromptLogprob, TokenEvent, Usage};
use super::Reply;
use crate::replicas::InFlightGuard;
use crate::tenants::Tenant;
use mlahost_core::{PromptHashes, RouteRequest, SeqId};
use mlahost_engine::LoadedModel;
use mlahost_runtime::metrics::TenantStats;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

/// The engine requests of one HTTP request; the unfinished ones are aborted if it is dropped.
pub struct Submitted {
    handle: EngineHandle,
    /// Keeps the request counted against its replica's load until it ends.
    pub in_flight: Option<InFlightGuard>,
    /// Keeps the request counted against its tenant's limits until it ends.
    pub tenant_load: Option<TenantLoad>,
    /// The tenant's queue-time and TTFT histograms, observed per choice as its events come.
    pub tenant_stats: Option<Arc<TenantStats>>,
    arrived: Instant,
    model: Arc<LoadedModel>,
    ids: Vec<SeqId>,
    events: EngineEvents,
    texts: Vec<ChoiceText>,
    done: Vec<bool>,
    /// What the last engine event produced, not yet handed out.
    ready: VecDeque<(usize, ChoiceEvent)>,
}

impl Drop for Submitted {
    fn drop(&mut self) {
        for (id, done) in self.ids.iter().zip(&self.done) {
            if !done {
                self.handle.finish(*id, FinishReason::Abort);
            }
        }
    }
}

impl Submitted {
    pub fn choices(&self) -> usize {
        self.ids.len()
    }

    /// The next event of any choice, as the client sees it; None once every choice has
    /// finished, or when the engine went away (the caller tells them apart by what it saw).
    pub async fn next(&mut self) -> Option<(usize, ChoiceEvent)> {
        loop {
            if let Some(e) = self.ready.pop_front() {
                return Some(e);
            }
            if self.done.iter().all(|d| *d) {
                return None;
            }
            let (i, event) = self.events.recv().await?;
            self.take(i, event);
        }
    }

    fn take(&mut self, i: usize, event: Event) {
        let (Some(text), Some(&id)) = (self.texts.get_mut(i), self.ids.get(i)) else { return };
        if let (Event::Scheduled(at), Some(t)) = (&event, &self.tenant_stats) {
            t.queue_time.observe(at.saturating_duration_since(self.arrived).as_secs_f64());
        }
        let mut out = Vec::new();
        let outcome = text.on_event(&self.model.tokenizer, event, &mut out);
        if outcome.token {
            self.handle.metrics().generation_tokens.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let (1, Some(t)) = (text.generated(), &self.tenant_stats) {
                t.ttft.observe(self.arrived.elapsed().as_secs_f64());
            }
        }
        if outcome.stopped {
            // A stop string: the engine ends the choice and reports its usage.
            self.handle.finish(id, FinishReason::Stop);
        }
        if outcome.finished {
            self.done[i] = true;
        }
        self.ready.extend(out.into_iter().map(|e| (i, e)));
    }
}

/// Queues every choice; all accepted or a 503 (the accepted ones are aborted).
pub async fn submit_all(state: &AppState, handle: &EngineHandle, requests: Vec<EngineRequest>, common: &Common) -> Result<Submitted, ApiError> {
    let texts = requests.iter().map(|r| ChoiceText::new(&common.text, r.params.min_tokens)).collect();
    let arrived = requests.first().map_or_else(Instant::now, |r| r.arrived);
    let n = requests.len();
    let (ids, events) = handle.submit(requests);
    let mut sub = Submitted {
        handle: handle.clone(),
        in_flight: None,
        tenant_load: None,
        tenant_stats: None,
        arrived,
        model: state.model.clone(),
        ids,
        events,
        texts,
        done: vec![false; n],
        ready: VecDeque::new(),
    };
    let mut accepted = vec![false; n];
    while accepted.iter().any(|a| !a) {
        match sub.events.recv().await {
            Some((i, Event::Accepted)) if i < n => accepted[i] = true,
            Some((i, Event::Rejected(reason))) if i < n => {
                sub.done[i] = true;
                return Err(ApiError::overloaded(format!("the server is overloaded: {reason}")));
            }
            // A fast choice's first events can arrive before a later choice's acceptance.
            Some((i, event)) => sub.take(i, event),
            None => return Err(ApiError::overloaded("the engine is not running")),
        }
    }
    Ok(sub)
}

#[derive(Debug, Default)]
pub struct ChoiceResult {
    pub text: String,
    pub tokens: Vec<TokenEvent>,
    pub finish: Option<FinishReason>,
    pub usage: Usage,
    /// Logprobs of prompt tokens 1.. (when the request asked for them).
    pub prompt_logprobs: Option<Vec<PromptLogprob>>,
}

impl ChoiceResult {
    /// A scoring request's choice: the one token generated to run the prompt is dropped.
    pub fn drop_generated(&mut self) {
        self.text.clear();
        self.tokens.clear();
        self.usage.completion_tokens = 0;
        self.finish = Some(FinishReason::Length);
    }
}

/// Waits for every choice to finish (non-streaming responses).
pub async fn collect(mut sub: Submitted) -> Result<Vec<ChoiceResult>, ApiError> {
    let mut results: Vec<ChoiceResult> = (0..sub.choices()).map(|_| ChoiceResult::default()).collect();
    let mut finished = 0;
    while finished < results.len() {
        let Some((i, event)) = sub.next().await else { return Err(ApiError::internal("the engine stopped")) };
        let r = &mut results[i];
        match event {
            ChoiceEvent::Token(t) => {
                r.text.push_str(&t.text);
                r.tokens.push(t);
            }
            ChoiceEvent::TrailingText(t) => r.text.push_str(&t),
            ChoiceEvent::PromptLogprobs(p) => r.prompt_logprobs = Some(p),
            ChoiceEvent::Finished { reason, usage } => {
                r.finish = Some(reason);
                r.usage = usage;
                finished += 1;
            }
            ChoiceEvent::Failed(f) => return Err(ApiError::from_failure(&f)),
        }
    }
    Ok(results)
}

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

/// A request counted against its tenant's static limits until it ends: its engine requests
/// (prompts x n) and its tokens.
pub struct TenantLoad {
    state: Arc<AppState>,
    tenant: String,
    requests: usize,
    tokens: usize,
}

impl TenantLoad {
    fn enter(state: &Arc<AppState>, tenant: &Tenant, tokens: usize, requests: usize) -> Result<Self, ApiError> {
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

/// Prompt tokens of a request's choices, each prompt counted once (choices are prompt-major).
fn distinct_prompt_tokens(requests: &[EngineRequest], n: usize) -> usize {
    requests.iter().step_by(n.max(1)).map(|r| r.prompt.len()).sum()
}
