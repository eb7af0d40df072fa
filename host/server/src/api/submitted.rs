//! A request's choices in the engine loop: submitted together, their events gathered into the
//! text each choice shows the client (detokenization, stop strings), and one way to end a choice
//! early (`EngineHandle::finish`: a stop string, or the request's owner dropped because the
//! client left).

use super::error::ApiError;
use super::params::Common;
use super::tenant_load::TenantLoad;
use super::AppState;
use crate::replicas::InFlightGuard;
use mlahost_engine::LoadedModel;
use mlahost_runtime::metrics::TenantStats;
use mlahost_runtime::{ChoiceEvent, ChoiceText, EngineEvents, EngineHandle, EngineRequest, Event, FinishReason, PromptLogprob, TokenEvent, Usage};
use mlahost_core::SeqId;
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
