//! The engine core of one replica: it owns the scheduler, the backend, per-request sampling
//! state and stop decisions (stop tokens, lengths; stop strings are the front end's). `add`
//! queues a request (its events go to the sink it gives), `step` runs one forward pass and
//! emits the token ids it produced, `end` ends a request at any stage (an abort, or a stop
//! string the front end found) and returns its pages. A panic inside a step fails the requests
//! in flight and rebuilds the scheduler and its page pool, so one bad step never takes the
//! replica down.
//! The server drives a core from its own thread (`handle`); `generate` drives one inline.

use crate::active::Active;
use crate::events::EventSink;
use crate::metrics::Metrics;
use crate::plugin_step;
use crate::request::{EngineRequest, Event, Failure, FinishReason, Usage};
use crate::step_logits::StepLogits;
use mlahost_core::{CoreError, Scheduler, SeqId, Sequence, StepPlan};
use mlahost_engine::{AllowSet, Backend, DeviceSample, LoadedModel, LogitsRequest, SeqChunk};
use mlahost_plugins::{Plugin, SampleDecision};
use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};

/// Builds a replica's scheduler (with its page pool, prefix index and eviction policy): once
/// at start, and again after a step panicked.
pub type SchedulerFactory = Box<dyn Fn() -> Result<Scheduler, CoreError> + Send>;

/// A core over a model `M` (an `Arc` on the serving thread, a borrow inline) and a backend `B`
/// (a `Box` on the serving thread, a borrow inline).
pub struct EngineCore<M, B> {
    model: M,
    backend: B,
    scheduler: Scheduler,
    make_scheduler: SchedulerFactory,
    active: HashMap<SeqId, Active>,
    max_model_len: usize,
    metrics: Arc<Metrics>,
    /// The sampler plugins requests may name (`EngineRequest::sampler`).
    samplers: Vec<Arc<Plugin>>,
    /// One vocabulary of zeros: the logits a masks-only sampler plugin is shown before the
    /// forward pass.
    zero_logits: Arc<Vec<f32>>,
}

/// The core a server replica runs on its own thread.
pub type ServingCore = EngineCore<Arc<LoadedModel>, Box<dyn Backend>>;

impl<M: Deref<Target = LoadedModel>, B: DerefMut<Target = dyn Backend>> EngineCore<M, B> {
    pub fn new(
        model: M,
        backend: B,
        make_scheduler: SchedulerFactory,
        max_model_len: usize,
        metrics: Arc<Metrics>,
    ) -> Result<Self, CoreError> {
        let scheduler = make_scheduler()?;
        metrics.pages_total.store(scheduler.stats().pages_total as u64, Relaxed);
        let zero_logits = Arc::new(vec![0.0; model.config.vocab_size]);
        Ok(Self { model, backend, scheduler, make_scheduler, active: HashMap::new(), max_model_len, metrics, samplers: Vec::new(), zero_logits })
    }

    /// The sampler plugins requests may choose by name.
    pub fn with_samplers(mut self, samplers: Vec<Arc<Plugin>>) -> Self {
        self.samplers = samplers;
        self
    }

    pub fn has_work(&self) -> bool {
        self.scheduler.has_work()
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Runs one step if there is work. False when a step panicked and the scheduler could not
    /// be rebuilt: the core cannot serve any more.
    pub fn step(&mut self) -> bool {
        if self.scheduler.has_work() {
            let stepped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run_step()));
            if stepped.is_err() && !self.recover() {
                return false;
            }
        }
        self.publish_gauges();
        true
    }

    /// Ends every request in flight (shutdown).
    pub fn abort_all(&mut self) {
        let ids: Vec<SeqId> = self.active.keys().copied().collect();
        for id in ids {
            self.finish(id, FinishReason::Abort);
        }
    }

    /// Ends one request at any stage with `reason` (an abort, or `Stop` for a stop string the
    /// front end found); its pages return. Unknown (already finished) ids are ignored.
    pub fn end(&mut self, id: SeqId, reason: FinishReason) {
        self.finish(id, reason);
    }

    /// Empties the prefix cache of pages no request uses; returns how many went.
    pub fn reset_prefix_cache(&mut self) -> usize {
        self.scheduler.pools_mut().iter_mut().map(|p| p.drop_unused_cached()).sum()
    }

    /// After a panicked step: every request in flight fails (its state may be half-updated),
    /// and the scheduler and page pool start afresh. False when they cannot be rebuilt (the
    /// loop then ends and /health turns 503).
    fn recover(&mut self) -> bool {
        self.metrics.engine_restarts.fetch_add(1, Relaxed);
        let failed = self.active.len();
        for (_, a) in self.active.drain() {
            a.events.send(Event::Failed(Failure::engine("the engine step panicked")));
        }
        match (self.make_scheduler)() {
            Ok(s) => {
                self.scheduler = s;
                tracing::error!(failed, "an engine step panicked: its requests failed and the scheduler was rebuilt");
                true
            }
            Err(e) => {
                tracing::error!(failed, error = %e, "an engine step panicked and the scheduler could not be rebuilt");
                false
            }
        }
    }

    /// Queues a request; `Accepted` or `Rejected` arrives on `events` at once.
    pub fn add(&mut self, id: SeqId, request: EngineRequest, events: EventSink) {
        if request.max_tokens == 0 {
            // Nothing to generate: answer without touching the scheduler.
            let usage = Usage { prompt_tokens: request.prompt.len(), completion_tokens: 0, cached_tokens: 0 };
            events.send(Event::Accepted);
            events.send(Event::Finished { reason: FinishReason::Length, usage });
            self.metrics.finished_length.fetch_add(1, Relaxed);
            return;
        }
        let max_total = (request.prompt.len() + request.max_tokens).min(self.max_model_len);
        let mut seq = Sequence::new(id, request.prompt.clone(), request.priority).with_salt(request.salt).with_tenant(request.tenant);
        if let Some(hashes) = &request.prompt_hashes {
            seq = seq.with_prompt_hashes(hashes.clone());
        }
        if request.prompt_logprobs.is_some() {
            // Every prompt position's logits are wanted: none may come from the cache.
            seq = seq.without_prefix_reuse();
        }
        let sampler = match &request.sampler {
            None => None,
            Some(choice) => match self.samplers.iter().find(|p| p.spec.name == choice.name) {
                Some(p) => Some(p.clone()),
                None => {
                    // The front end checks names against the same plugins: only a caller
                    // that skipped that check gets here.
                    events.send(Event::Accepted);
                    events.send(Event::Failed(Failure::plugin(format!("no sampler plugin named `{}` is loaded", choice.name))));
                    return;
                }
            },
        };
        match self.scheduler.add(seq, max_total) {
            Ok(()) => {
                events.send(Event::Accepted);
                self.active.insert(id, Active::new(request, sampler, events));
            }
            Err(e) => {
                self.metrics.requests_rejected.fetch_add(1, Relaxed);
                events.send(Event::Rejected(e.to_string()));
            }
        }
    }

    fn run_step(&mut self) {
        let plan = self.scheduler.schedule();
        self.metrics.preemptions.fetch_add(plan.preempted.len() as u64, Relaxed);
        if plan.chunks.is_empty() {
            return;
        }
        // With no sampler plugin in this step, a backend that samples on the device (CUDA)
        // keeps the logits there; otherwise (or when it declines) they come back for the host.
        // The plan was made from these sequences a moment ago, on this thread; were one missing,
        // the step is skipped (its pages stay reserved for the next plan) rather than run half.
        let Some(seqs) = plan.chunks.iter().map(|c| self.scheduler.get(c.seq)).collect::<Option<Vec<_>>>() else {
            tracing::error!(chunks = plan.chunks.len(), "a planned sequence is missing; step skipped");
            return;
        };
        let chunks: Vec<SeqChunk> = plan
            .chunks
            .iter()
            .zip(seqs)
            .map(|(c, seq)| {
                let wants_prompt_logprobs = self.active.get(&c.seq).is_some_and(|a| a.request.prompt_logprobs.is_some());
                let logits = match (wants_prompt_logprobs && c.start < seq.prompt_len(), c.samples) {
                    (true, _) => LogitsRequest::All,
                    (false, true) => LogitsRequest::Last,
                    (false, false) => LogitsRequest::None,
                };
                SeqChunk { tokens: &seq.tokens()[c.start..c.start + c.len], start_pos: c.start, block_table: seq.block_table(), logits }
            })
            .collect();
        // Masks-only sampler plugins (grammars) decide while the forward pass runs: their
        // allow-sets can be applied on the device.
        let (early, output) = forward_with_early_plugins(&plan, &chunks, &self.scheduler, &mut self.active, &self.zero_logits, &mut *self.backend);
        let (host_logits, device_samples) = match output {
            Ok(StepOutput::Host(l)) => (Some(StepLogits::from(l)), None),
            Ok(StepOutput::Device(s)) => (None, Some(s)),
            Err(e) => return self.fail_plan(&plan, &e.to_string()),
        };
        drop(chunks);
        for c in &plan.chunks {
            if let Some(a) = self.active.get_mut(&c.seq) {
                a.mark_scheduled(&self.metrics);
            }
            let Some(seq) = self.scheduler.get(c.seq) else { continue };
            let prefilled = c.start + c.len;
            if c.start < seq.prompt_len() {
                let new_prompt = prefilled.min(seq.prompt_len()) - c.start;
                self.metrics.prompt_tokens.fetch_add(new_prompt as u64, Relaxed);
            }
        }
        if let Some(logits) = &host_logits {
            self.record_prompt_logprobs(&plan, logits);
        }
        let mut sampled = Vec::new();
        match (host_logits, device_samples) {
            (Some(logits), _) => {
                let mut decisions = plugin_step::after_forward(&plan, &self.scheduler, &self.active, &logits);
                decisions.extend(early);
                for (i, c) in plan.chunks.iter().enumerate().filter(|(_, c)| c.samples) {
                    let Some(decision) = self.unless_failed(c.seq, decisions.remove(&c.seq)) else { continue };
                    let (Some(row), Some(seq), Some(active)) =
                        (logits.last_of(i), self.scheduler.get(c.seq), self.active.get_mut(&c.seq))
                    else {
                        continue;
                    };
                    sampled.push((c.seq, active.sample(row, seq.tokens(), seq.prompt_len(), decision)));
                }
            }
            (None, Some(samples)) => {
                let mut early = early;
                for (c, s) in plan.chunks.iter().filter(|c| c.samples).zip(samples) {
                    // A plugin that failed or ended its sequence while the device sampled it
                    // (unmasked): the token is dropped with the sequence.
                    if self.unless_failed(c.seq, early.remove(&c.seq)).is_none() {
                        continue;
                    }
                    if let Some(active) = self.active.get_mut(&c.seq) {
                        sampled.push((c.seq, active.accept_device_sample(s)));
                    }
                }
            }
            (None, None) => {}
        }
        self.scheduler.commit(&plan, &sampled);
        let stop_ids = self.model.stop_token_ids();
        for (id, token) in sampled {
            let (Some(seq), Some(active)) = (self.scheduler.get(id), self.active.get_mut(&id)) else { continue };
            let (generated, total) = (seq.output().len(), seq.tokens().len());
            let outcome = active.emit(token, &stop_ids, generated, total, self.max_model_len, &self.metrics);
            if let Some(reason) = outcome {
                self.finish(id, reason);
            }
        }
    }

    /// A sampler plugin's decision for `id`, or None after failing the sequence (the plugin
    /// failed closed, or ended it).
    fn unless_failed(&mut self, id: SeqId, decision: Option<Result<SampleDecision, Failure>>) -> Option<Option<SampleDecision>> {
        match decision {
            Some(Err(failure)) => {
                self.fail(id, failure);
                None
            }
            Some(Ok(SampleDecision::Fail(message))) => {
                self.fail(id, Failure::plugin(format!("the sampler plugin ended the sequence: {message}")));
                None
            }
            d => Some(d.and_then(Result::ok)),
        }
    }

    /// Prompt logprobs from the chunks that asked for every row's logits.
    fn record_prompt_logprobs(&mut self, plan: &StepPlan, logits: &StepLogits) {
        for (i, c) in plan.chunks.iter().enumerate() {
            let (Some(seq), Some(active)) = (self.scheduler.get(c.seq), self.active.get_mut(&c.seq)) else { continue };
            if active.request.prompt_logprobs.is_none() {
                continue;
            }
            let prompt = &seq.tokens()[..seq.prompt_len()];
            for j in 0..c.len {
                if let Some(row) = logits.row_of(i, j) {
                    active.record_prompt_logprob(c.start + j, row, prompt);
                }
            }
            active.send_prompt_logprobs_if_complete(prompt.len());
        }
    }

    /// Ends one request with an error event.
    fn fail(&mut self, id: SeqId, failure: Failure) {
        if let Some(a) = self.active.remove(&id) {
            tracing::warn!(request = id, cause = ?failure.cause, detail = %failure.detail, "request failed");
            a.events.send(Event::Failed(failure));
        }
        self.scheduler.remove(id);
    }

    fn fail_plan(&mut self, plan: &StepPlan, message: &str) {
        tracing::error!(error = message, "forward pass failed");
        for c in &plan.chunks {
            self.fail(c.seq, Failure::engine(message));
        }
    }

    /// Ends a request: final events, metrics, and its pages back to the pool.
    fn finish(&mut self, id: SeqId, reason: FinishReason) {
        let seq = self.scheduler.remove(id);
        let Some(mut active) = self.active.remove(&id) else { return };
        let usage = Usage {
            prompt_tokens: seq.as_ref().map_or(0, |s| s.prompt_len()),
            completion_tokens: seq.as_ref().map_or(0, |s| s.output().len()),
            cached_tokens: seq.as_ref().map_or(0, |s| s.cached_tokens()),
        };
        active.close(reason, usage, &self.metrics);
    }

    fn publish_gauges(&self) {
        let s = self.scheduler.stats();
        self.metrics.running.store(s.running as u64, Relaxed);
        self.metrics.waiting.store(s.waiting as u64, Relaxed);
        self.metrics.pages_used.store(s.pages_used as u64, Relaxed);
        self.metrics.prefix_queried_tokens.store(s.prefix_queried_tokens, Relaxed);
        self.metrics.prefix_hit_tokens.store(s.prefix_hit_tokens, Relaxed);
        self.metrics.prefix_evictions.store(s.prefix_evictions, Relaxed);
        self.metrics.prefix_cached_pages.store(s.prefix_cached_pages as u64, Relaxed);
    }
}

/// Runs the masks-only sampler plugins of the plan on their own thread while the backend
/// runs the forward pass and, where it can, samples on the device (waiting for a
/// sequence's allow-set only when its row is sampled); where it cannot, the logits come back
/// for the host. The plugins' decisions and the step's output.
fn forward_with_early_plugins(
    plan: &StepPlan,
    chunks: &[SeqChunk<'_>],
    scheduler: &Scheduler,
    active: &mut HashMap<SeqId, Active>,
    zero_logits: &Arc<Vec<f32>>,
    backend: &mut dyn Backend,
) -> (plugin_step::Decisions, Result<StepOutput, mlahost_engine::EngineError>) {
    let calls = plugin_step::before_forward(plan, scheduler, active, zero_logits);
    let slots: MaskSlots = calls.sequences().map(|id| (id, OnceLock::new())).collect();
    let mut run = || -> Result<StepOutput, mlahost_engine::EngineError> {
        match try_device_sampling(plan, chunks, scheduler, active, &slots, backend)? {
            Some(samples) => Ok(StepOutput::Device(samples)),
            None => backend.forward(chunks).map(StepOutput::Host),
        }
    };
    if calls.is_empty() {
        return (plugin_step::Decisions::new(), run());
    }
    std::thread::scope(|s| {
        let worker = s.spawn(|| {
            // Every slot is filled however the calls end, so no sampler waits forever.
            let _fill = FillRemaining(&slots);
            let decisions = calls.call();
            for (id, d) in &decisions {
                if let (Some(slot), Ok(SampleDecision::Allow(bits))) = (slots.get(id), d) {
                    let _ = slot.set(Some(bits.clone()));
                }
            }
            decisions
        });
        let output = run();
        let decisions = worker.join().unwrap_or_else(|_| {
            slots.keys().map(|&id| (id, Err(Failure::plugin("the sampler plugin's call panicked".to_string())))).collect()
        });
        (decisions, output)
    })
}

/// What a step's forward pass gave: tokens sampled on the device, or the logits.
enum StepOutput {
    Device(Vec<DeviceSample>),
    Host(mlahost_engine::Logits),
}

type DeviceResult = Result<Option<Vec<DeviceSample>>, mlahost_engine::EngineError>;

/// Per sequence with a masks-only sampler plugin, its allow-set for this step once the plugin's
/// thread has it (None: no mask, or the plugin failed).
type MaskSlots = HashMap<SeqId, OnceLock<Option<Vec<u64>>>>;

struct FillRemaining<'a>(&'a MaskSlots);

impl Drop for FillRemaining<'_> {
    fn drop(&mut self) {
        for slot in self.0.values() {
            let _ = slot.set(None);
        }
    }
}

/// Runs the step on the backend's device sampler when every sampling sequence has its state
/// here and either uses no sampler plugin or a masks-only one (whose allow-set `slots` will
/// hold); Ok(None) when not (nothing ran).
fn try_device_sampling(
    plan: &StepPlan,
    chunks: &[SeqChunk<'_>],
    scheduler: &Scheduler,
    active: &mut HashMap<SeqId, Active>,
    slots: &MaskSlots,
    backend: &mut dyn Backend,
) -> DeviceResult {
    let sampling: Vec<SeqId> = plan.chunks.iter().filter(|c| c.samples).map(|c| c.seq).collect();
    // Prompt logprobs need every row on the host.
    if chunks.iter().any(|c| c.logits == LogitsRequest::All) {
        return Ok(None);
    }
    // No plugin, or a masks-only one whose calls are under way; a plugin that reads the
    // logits needs them on the host.
    let mask_of = |id: &SeqId, a: &Active| match (&a.sampler, slots.get(id)) {
        (None, _) => Some(AllowSet::NONE),
        (Some(_), Some(slot)) => Some(AllowSet::Pending(slot)),
        (Some(_), None) => None,
    };
    let on_device = |id: &SeqId| active.get(id).is_some_and(|a| mask_of(id, a).is_some());
    if sampling.is_empty() || !sampling.iter().all(on_device) {
        return Ok(None);
    }
    let mut states: HashMap<SeqId, &mut Active> = active.iter_mut().map(|(id, a)| (*id, a)).collect();
    let mut requests = Vec::with_capacity(sampling.len());
    for id in &sampling {
        let (Some(seq), Some(active)) = (scheduler.get(*id), states.remove(id)) else { return Ok(None) };
        let Some(mask) = mask_of(id, active) else { return Ok(None) };
        requests.push(active.sample_request(seq.tokens(), seq.prompt_len(), mask));
    }
    backend.forward_sampled(chunks, &mut requests)
}
