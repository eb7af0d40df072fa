//! Sampler plugins within an engine step: which sequences each plugin decides for, and when.
//! A plugin marked `masks_only` (it never reads logits; the built-in grammar) is called before
//! the forward pass, so its allow-sets can go to a device sampler with the logits left on the
//! device; the others are called after it, with the step's logits.

use crate::active::Active;
use crate::request::Failure;
use crate::step_logits::StepLogits;
use mlahost_core::{Scheduler, SeqId, StepPlan};
use mlahost_engine::sampling::SamplingParams;
use mlahost_plugins::{FailurePolicy, Plugin, SampleDecision, SampleSeq, SamplerParams};
use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

pub type Decisions = HashMap<SeqId, Result<SampleDecision, Failure>>;

/// Calls every masks-only plugin for its sampling sequences of the plan. Their logits view is
/// a row of zeros (`zeros`, one vocabulary long): such a plugin does not read it.
pub fn before_forward(plan: &StepPlan, scheduler: &Scheduler, active: &HashMap<SeqId, Active>, zeros: &Arc<Vec<f32>>) -> Decisions {
    let row = 0..zeros.len();
    decide(plan, scheduler, active, zeros, |_| Some(row.clone()), |p| p.spec.masks_only)
}

/// Calls every other sampler plugin with the step's logits.
pub fn after_forward(plan: &StepPlan, scheduler: &Scheduler, active: &HashMap<SeqId, Active>, logits: &StepLogits) -> Decisions {
    decide(plan, scheduler, active, &logits.data, |i| logits.last_range(i), |p| !p.spec.masks_only)
}

/// One call per plugin (chosen by `which`) with all of its sequences in the plan; per
/// sequence, a decision or, when the plugin failed and fails closed, an error.
fn decide(
    plan: &StepPlan,
    scheduler: &Scheduler,
    active: &HashMap<SeqId, Active>,
    batch: &Arc<Vec<f32>>,
    row_of: impl Fn(usize) -> Option<Range<usize>>,
    which: impl Fn(&Plugin) -> bool,
) -> Decisions {
    let mut groups: HashMap<String, (Arc<Plugin>, Vec<(usize, SeqId)>)> = HashMap::new();
    for (i, c) in plan.chunks.iter().enumerate().filter(|(_, c)| c.samples) {
        if let Some(plugin) = active.get(&c.seq).and_then(|a| a.sampler.as_ref()).filter(|p| which(p)) {
            groups.entry(plugin.spec.name.clone()).or_insert_with(|| (plugin.clone(), Vec::new())).1.push((i, c.seq));
        }
    }
    let mut out = HashMap::new();
    for (_, (plugin, members)) in groups {
        let seqs: Vec<SampleSeq> = members
            .iter()
            .filter_map(|&(i, id)| {
                let (seq, active, row) = (scheduler.get(id)?, active.get(&id)?, row_of(i)?);
                let r = &active.request;
                // Every field, by name: a new one does not compile until the plugin view
                // decides on it. Plugins see the sampling knobs; penalties apply natively
                // after a plugin's bias or allow-set.
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
                let (temperature, top_p, top_k, seed) = (*temperature, *top_p, *top_k, *seed);
                Some(SampleSeq {
                    request_id: id,
                    params: SamplerParams {
                        temperature,
                        top_p,
                        top_k: top_k as u32,
                        seed,
                        max_tokens: r.max_tokens as u32,
                        config: r.sampler.as_ref().map(|s| s.config.clone()).unwrap_or_default(),
                    },
                    prompt_len: seq.prompt_len() as u32,
                    generated: seq.output(),
                    batch,
                    row,
                })
            })
            .collect();
        let result = plugin.sample(&seqs).and_then(|ds| {
            // A masks-only plugin that answers anything but allow-sets, pass or fail breaks
            // its promise: that is an invalid result.
            match ds.iter().find(|d| plugin.spec.masks_only && matches!(d, SampleDecision::Token(_) | SampleDecision::Bias(_))) {
                Some(d) => Err(mlahost_plugins::PluginError::BadResult { plugin: plugin.spec.name.clone(), hook: "sample", message: format!("a masks-only sampler answered {d:?}") }),
                None => Ok(ds),
            }
        });
        match result {
            Ok(ds) => {
                for (s, d) in seqs.iter().zip(ds) {
                    out.insert(s.request_id, Ok(d));
                }
            }
            Err(e) => {
                for s in &seqs {
                    let fallback = match plugin.spec.failure_policy {
                        FailurePolicy::Open => {
                            plugin.stats.fallbacks.fetch_add(1, Relaxed);
                            Ok(SampleDecision::Pass)
                        }
                        FailurePolicy::Closed => Err(Failure::plugin(format!("sampler plugin failed: {e}"))),
                    };
                    out.insert(s.request_id, fallback);
                }
            }
        }
    }
    out
}

/// The allow-set a device sampler applies for `id`: `Some(None)` when the sequence may be
/// sampled on the device without one, `Some(Some(bits))` with one, `None` when it must take
/// the host path (a plugin decides after the forward pass, or failed).
pub fn device_mask<'a>(id: SeqId, active: &Active, early: &'a Decisions) -> Option<Option<&'a [u64]>> {
    match (active.sampler.as_ref(), early.get(&id)) {
        (None, _) => Some(None),
        (Some(_), Some(Ok(SampleDecision::Allow(bits)))) => Some(Some(bits)),
        (Some(_), Some(Ok(SampleDecision::Pass))) => Some(None),
        _ => None,
    }
}
