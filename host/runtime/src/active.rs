//! Per-request state the engine loop keeps beside the scheduler's sequence: sampling state,
//! event sink and timings.

use crate::events::EventSink;
use crate::request::{EngineRequest, Event, FinishReason, PromptLogprob, SampledToken, Usage};
use crate::metrics::Metrics;
use mlahost_engine::logits_processors::{mask_to_allowed, needs_processing, process_row};
use mlahost_engine::logprobs::RowLogprobs;
use mlahost_engine::sampling::{sample, Rng};
use mlahost_engine::{AllowSet, DeviceSample, SampleRequest};
use mlahost_plugins::{Plugin, SampleDecision};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

pub struct Active {
    pub request: EngineRequest,
    /// The request's sampler plugin, resolved by name when the core took the request.
    pub sampler: Option<Arc<Plugin>>,
    pub events: EventSink,
    rng: Rng,
    arrived: Instant,
    first_token: Option<Instant>,
    /// The sampled token's logprob and alternatives, kept from `sample` for `emit`.
    last_logprobs: Option<(f32, Vec<(u32, f32)>)>,
    scheduled: bool,
    /// Prompt logprobs gathered so far (tokens 1.. in order), while the prompt is computed.
    prompt_logprobs: Vec<PromptLogprob>,
    prompt_logprobs_sent: bool,
}

impl Active {
    pub fn new(request: EngineRequest, sampler: Option<Arc<Plugin>>, events: EventSink) -> Self {
        let rng = request.params.seed.map_or_else(Rng::from_entropy, Rng::seeded);
        let arrived = request.arrived;
        Self {
            request,
            sampler,
            events,
            rng,
            arrived,
            first_token: None,
            last_logprobs: None,
            scheduled: false,
            prompt_logprobs: Vec::new(),
            prompt_logprobs_sent: false,
        }
    }

    /// Records the prompt logprob that `row` (the logits at prompt position `pos`) gives the
    /// next prompt token; positions already recorded (a recompute after preemption) are
    /// skipped. Sends them all once the last one is in.
    pub fn record_prompt_logprob(&mut self, pos: usize, row: &[f32], prompt: &[u32]) {
        let Some(k) = self.request.prompt_logprobs else { return };
        if pos == self.prompt_logprobs.len() && pos + 1 < prompt.len() {
            let lp = RowLogprobs::new(row);
            let token = prompt[pos + 1];
            self.prompt_logprobs.push(PromptLogprob { token, logprob: lp.of(token), rank: lp.rank(token), top: lp.top(k) });
        }
        self.send_prompt_logprobs_if_complete(prompt.len());
    }

    /// Sends the prompt logprobs once all `prompt_len - 1` are in (at once for a one-token prompt).
    pub fn send_prompt_logprobs_if_complete(&mut self, prompt_len: usize) {
        if self.request.prompt_logprobs.is_some() && !self.prompt_logprobs_sent && self.prompt_logprobs.len() + 1 >= prompt_len {
            self.prompt_logprobs_sent = true;
            self.events.send(Event::PromptLogprobs(std::mem::take(&mut self.prompt_logprobs)));
        }
    }

    /// Records the replica's queue time the first time the request runs, and tells the front
    /// end (which keeps the tenant's figures).
    pub fn mark_scheduled(&mut self, metrics: &Metrics) {
        if !self.scheduled {
            self.scheduled = true;
            let now = Instant::now();
            metrics.queue_time.observe(now.duration_since(self.arrived).as_secs_f64());
            self.events.send(Event::Scheduled(now));
        }
    }

    /// This sequence's request to a device-side sampler (see `Backend::forward_sampled`).
    /// `allowed` is a masks-only sampler plugin's allow-set for this step (maybe still pending).
    pub fn sample_request<'a>(&'a mut self, tokens: &'a [u32], prompt_len: usize, allowed: AllowSet<'a>) -> SampleRequest<'a> {
        let Self { request, rng, .. } = self;
        SampleRequest {
            params: &request.params,
            prompt: &tokens[..prompt_len],
            output: &tokens[prompt_len..],
            top_logprobs: request.logprobs.unwrap_or(0),
            rng,
            allowed,
        }
    }

    /// Takes a token the device chose, keeping its logprobs for `emit` as `sample` does.
    pub fn accept_device_sample(&mut self, s: DeviceSample) -> u32 {
        self.last_logprobs = self.request.logprobs.map(|_| (s.logprob, s.top));
        s.token
    }

    /// Picks the next token from this sequence's logits row, after a sampler plugin's
    /// decision when the request chose one, then the request's logits processors and penalties.
    pub fn sample(&mut self, row: &[f32], tokens: &[u32], prompt_len: usize, plugin: Option<SampleDecision>) -> u32 {
        let p = &self.request.params;
        let (prompt, output) = tokens.split_at(prompt_len);
        let token = match plugin {
            Some(SampleDecision::Token(t)) => t,
            Some(SampleDecision::Bias(biases)) => {
                let mut row = row.to_vec();
                for (id, b) in biases {
                    row[id as usize] += b;
                }
                process_row(&mut row, prompt, output, p);
                sample(&row, p, &mut self.rng)
            }
            Some(SampleDecision::Allow(bits)) if bits.iter().any(|w| *w != 0) => {
                let mut row = row.to_vec();
                mask_to_allowed(&mut row, &bits);
                process_row(&mut row, prompt, output, p);
                sample(&row, p, &mut self.rng)
            }
            _ if needs_processing(p) => {
                let mut row = row.to_vec();
                process_row(&mut row, prompt, output, p);
                sample(&row, p, &mut self.rng)
            }
            _ => sample(row, p, &mut self.rng),
        };
        // Reported logprobs are the model's own distribution, before processors and temperature.
        self.last_logprobs = self.request.logprobs.map(|k| {
            let lp = RowLogprobs::new(row);
            (lp.of(token), lp.top(k))
        });
        token
    }

    /// Sends the token's event; returns why the request is finished, if it is. Stop strings
    /// are the front end's (`output`); stop tokens and lengths are decided here.
    pub fn emit(&mut self, token: u32, stop_ids: &[u32], generated: usize, total: usize, max_model_len: usize, metrics: &Metrics) -> Option<FinishReason> {
        if self.first_token.is_none() {
            self.first_token = Some(Instant::now());
            metrics.ttft.observe(self.arrived.elapsed().as_secs_f64());
        }
        // vLLM checks no stop condition before min_tokens are generated.
        let armed = generated >= self.request.params.min_tokens;
        let r = &self.request;
        let ends_sequence = armed && ((!r.ignore_eos && stop_ids.contains(&token)) || r.stop_token_ids.contains(&token));
        // Logprobs are only known for the token the engine just scored: the last logits.
        let (logprob, top) = self.last_logprobs.take().unwrap_or((0.0, Vec::new()));
        self.events.send(Event::Token(SampledToken { id: token, logprob, top, ends_sequence }));
        if ends_sequence {
            return Some(FinishReason::Stop);
        }
        if generated >= self.request.max_tokens || total >= max_model_len {
            return Some(FinishReason::Length);
        }
        None
    }

    pub fn close(&mut self, reason: FinishReason, usage: Usage, metrics: &Metrics) {
        let counter = match reason {
            FinishReason::Stop => &metrics.finished_stop,
            FinishReason::Length => &metrics.finished_length,
            FinishReason::Abort => &metrics.finished_abort,
        };
        counter.fetch_add(1, Relaxed);
        metrics.e2e.observe(self.arrived.elapsed().as_secs_f64());
        if let Some(first) = self.first_token {
            if usage.completion_tokens > 1 {
                metrics.tpot.observe(first.elapsed().as_secs_f64() / (usage.completion_tokens - 1) as f64);
            }
        }
        self.events.send(Event::Finished { reason, usage });
    }
}
