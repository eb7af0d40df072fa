//! Sampler plugins within an engine step: which sequences each plugin decides for, and when.
//! A plugin marked `masks_only` (it never reads logits; the built-in grammar) is called on its
//! own thread while the forward pass runs (the mask for step t+1 depends only on the tokens up
//! to t), so its allow-sets can go to a device sampler with the logits left on the device; the
//! others are called after the forward pass, with the step's logits.

use crate::active::Active;
use crate::request::Failure;
use crate::step_logits::StepLogits;
use mlahost_core::{Scheduler, SeqId, StepPlan};
use mlahost_engine::sampling::SamplingParams;
use mlahost_plugins::{FailurePolicy, Plugin, PluginError, SampleDecision, SampleSeq, SamplerParams};
use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

pub type Decisions = HashMap<SeqId, Result<SampleDecision, Failure>>;

/// The masks-only plugins' calls for the plan's sampling sequences. Their logits view is a row
/// of zeros (`zeros`, one vocabulary long): such a plugin does not read it. Prepared on the
/// engine thread, so the calls can run on another while the forward pass does.
pub fn before_forward<'a>(plan: &StepPlan, scheduler: &'a Scheduler, active: &HashMap<SeqId, Active>, zeros: &'a Arc<Vec<f32>>) -> PluginCalls<'a> {
    let row = 0..zeros.len();
    prepare(plan, scheduler, active, zeros, |_| Some(row.clone()), |p| p.spec.masks_only)
}

/// Calls every other sampler plugin with the step's logits.
pub fn after_forward(plan: &StepPlan, scheduler: &Scheduler, active: &HashMap<SeqId, Active>, logits: &StepLogits) -> Decisions {
    prepare(plan, scheduler, active, &logits.data, |i| logits.last_range(i), |p| !p.spec.masks_only).call()
}

/// One call per plugin with all of its sequences in a plan, ready to run.
pub struct PluginCalls<'a> {
    groups: Vec<(Arc<Plugin>, Vec<SampleSeq<'a>>)>,
}

/// Groups the plan's sampling sequences by their sampler plugin (those `which` picks) and reads
/// what each call needs from the scheduler and the requests.
fn prepare<'a>(
    plan: &StepPlan,
    scheduler: &'a Scheduler,
    active: &HashMap<SeqId, Active>,
    batch: &'a Arc<Vec<f32>>,
    row_of: impl Fn(usize) -> Option<Range<usize>>,
    which: impl Fn(&Plugin) -> bool,
) -> PluginCalls<'a> {
    let mut groups: Vec<(Arc<Plugin>, Vec<SampleSeq<'a>>)> = Vec::new();
    for (i, c) in plan.chunks.iter().enumerate().filter(|(_, c)| c.samples) {
        let Some(a) = active.get(&c.seq) else { continue };
        let Some(plugin) = a.sampler.as_ref().filter(|p| which(p)) else { continue };
        let (Some(seq), Some(row)) = (scheduler.get(c.seq), row_of(i)) else { continue };
        let r = &a.request;
        // Every field, by name: a new one does not compile until the plugin view decides on
        // it. Plugins see the sampling knobs; penalties apply natively after a plugin's bias
        // or allow-set.
        let SamplingParams {
            temperature,
            top_p,
            top_k,
            min_p: _,
            seed,
            presence_penalty: _,
            frequency_penalty: _,
            repetition_penalty: _,
            logit_bias: _, // the logits processors apply natively, after the plugin
            allowed_token_ids: _,
            bad_words: _,
            min_tokens: _,
            min_tokens_banned: _,
        } = &r.params;
        let s = SampleSeq {
            request_id: c.seq,
            params: SamplerParams {
                temperature: *temperature,
                top_p: *top_p,
                top_k: *top_k as u32,
                seed: *seed,
                max_tokens: r.max_tokens as u32,
                config: r.sampler.as_ref().map(|s| s.config.clone()).unwrap_or_default(),
            },
            prompt_len: seq.prompt_len() as u32,
            generated: seq.output(),
            batch,
            row,
        };
        match groups.iter_mut().find(|(p, _)| p.spec.name == plugin.spec.name) {
            Some((_, seqs)) => seqs.push(s),
            None => groups.push((plugin.clone(), vec![s])),
        }
    }
    PluginCalls { groups }
}

impl PluginCalls<'_> {
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// The sequences these calls decide for.
    pub fn sequences(&self) -> impl Iterator<Item = SeqId> + '_ {
        self.groups.iter().flat_map(|(_, seqs)| seqs.iter().map(|s| s.request_id))
    }

    /// Runs each plugin over its sequences; per sequence, a decision or, when the plugin
    /// failed and fails closed, an error.
    pub fn call(self) -> Decisions {
        let mut out = HashMap::new();
        for (plugin, seqs) in self.groups {
            for (ids, result) in run_in_lanes(&plugin, seqs) {
                match result {
                    Ok(ds) => {
                        for (&id, d) in ids.iter().zip(ds) {
                            out.insert(id, Ok(d));
                        }
                    }
                    Err(e) => {
                        for &id in &ids {
                            let fallback = match plugin.spec.failure_policy {
                                FailurePolicy::Open => {
                                    plugin.stats.fallbacks.fetch_add(1, Relaxed);
                                    Ok(SampleDecision::Pass)
                                }
                                FailurePolicy::Closed => Err(Failure::plugin(format!("sampler plugin failed: {e}"))),
                            };
                            out.insert(id, fallback);
                        }
                    }
                }
            }
        }
        out
    }
}

type LaneResult = (Vec<SeqId>, Result<Vec<SampleDecision>, PluginError>);

/// A masks-only plugin's sequences split into fixed lanes (request id modulo its instance
/// count), one call per lane on its own instance, in parallel: a mask costs about a
/// millisecond per sequence at a 129k vocabulary, so a batch of 64 in one call would outlast
/// the forward pass it should hide behind. A request stays in its lane, and so on the
/// instance that holds its matcher. Other samplers get one call for all of their sequences.
fn run_in_lanes(plugin: &Plugin, seqs: Vec<SampleSeq<'_>>) -> Vec<LaneResult> {
    let width = plugin.max_instances() as u64;
    if !plugin.spec.masks_only || width == 1 {
        let result = checked_sample(plugin, None, &seqs);
        return vec![(seqs.iter().map(|s| s.request_id).collect(), result)];
    }
    let mut split: Vec<Vec<SampleSeq<'_>>> = (0..width).map(|_| Vec::new()).collect();
    for s in seqs {
        split[(s.request_id % width) as usize].push(s);
    }
    std::thread::scope(|scope| {
        let running: Vec<_> = split
            .into_iter()
            .enumerate()
            .filter(|(_, lane)| !lane.is_empty())
            .map(|(k, lane)| {
                let ids: Vec<SeqId> = lane.iter().map(|s| s.request_id).collect();
                (ids, scope.spawn(move || checked_sample(plugin, Some(k), &lane)))
            })
            .collect();
        running
            .into_iter()
            .map(|(ids, h)| {
                let result = h.join().unwrap_or_else(|_| {
                    Err(PluginError::BadResult { plugin: plugin.spec.name.clone(), hook: "sample", message: "the call's thread panicked".into() })
                });
                (ids, result)
            })
            .collect()
    })
}

/// One call; a masks-only plugin that answers anything but allow-sets, pass or fail breaks its
/// promise: that is an invalid result.
fn checked_sample(plugin: &Plugin, lane: Option<usize>, seqs: &[SampleSeq<'_>]) -> Result<Vec<SampleDecision>, PluginError> {
    let ds = plugin.sample_in_lane(lane, seqs)?;
    match ds.iter().find(|d| plugin.spec.masks_only && matches!(d, SampleDecision::Token(_) | SampleDecision::Bias(_))) {
        Some(d) => Err(PluginError::BadResult { plugin: plugin.spec.name.clone(), hook: "sample", message: format!("a masks-only sampler answered {d:?}") }),
        None => Ok(ds),
    }
}
