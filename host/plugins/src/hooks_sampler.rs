//! The sampler hook: both package versions' calls, and the checks on what comes back.

use crate::bindings::{v1, v2};
use crate::hooks::{bad, wrong_kind};
use crate::instance::{clip, Bound};
use crate::logits_row::LogitsRows;
use crate::plugin::Plugin;
use crate::PluginError;
use wasmtime::component::Resource;

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
    /// The sequence's request fails with this message (0.2.0 samplers).
    Fail(String),
}

impl Plugin {
    pub fn sample(&self, seqs: &[SampleSeq<'_>]) -> Result<Vec<SampleDecision>, PluginError> {
        self.sample_in_lane(None, seqs)
    }

    /// As `sample`, on the instance that served `lane` last when it is free: a step's
    /// sequences split into fixed lanes run on several instances at once, each keeping its
    /// requests' state.
    pub fn sample_in_lane(&self, lane: Option<usize>, seqs: &[SampleSeq<'_>]) -> Result<Vec<SampleDecision>, PluginError> {
        let decisions = self.call_in_lane(lane, "sample", |store, bound| match bound {
            Bound::SamplerV2(b) => {
                use v2::sampler::exports::mlahost::plugin::sampler as wit;
                let Some(batch) = seqs.first().map(|s| s.batch.clone()) else { return Ok(Ok(Vec::new())) };
                let rows = store.data_mut().table.push(LogitsRows { batch, rows: seqs.iter().map(|s| s.row.clone()).collect() })?;
                let step: Vec<wit::Sequence> = seqs
                    .iter()
                    .map(|s| wit::Sequence {
                        request_id: s.request_id,
                        params: wit::Params {
                            temperature: s.params.temperature,
                            top_p: s.params.top_p,
                            top_k: s.params.top_k,
                            seed: s.params.seed,
                            max_tokens: s.params.max_tokens,
                            config: s.params.config.clone(),
                        },
                        prompt_len: s.prompt_len,
                        generated: s.generated.to_vec(),
                    })
                    .collect();
                let out = b.mlahost_plugin_sampler().call_sample(&mut *store, &step, Resource::new_borrow(rows.rep()));
                let _ = store.data_mut().table.delete(rows);
                Ok(out?.map(|ds| {
                    ds.into_iter()
                        .map(|d| match d {
                            wit::Decision::Token(t) => SampleDecision::Token(t),
                            wit::Decision::Bias(list) => SampleDecision::Bias(list.into_iter().map(|b| (b.id, b.bias)).collect()),
                            wit::Decision::Allow(bits) => SampleDecision::Allow(bits),
                            wit::Decision::Pass => SampleDecision::Pass,
                            wit::Decision::Fail(m) => SampleDecision::Fail(clip(&m)),
                        })
                        .collect()
                }))
            }
            Bound::SamplerV1(b) => {
                use v1::sampler::exports::mlahost::plugin::sampler as wit;
                let mut rows: Vec<Resource<LogitsRows>> = Vec::with_capacity(seqs.len());
                for s in seqs {
                    rows.push(store.data_mut().table.push(LogitsRows { batch: s.batch.clone(), rows: vec![s.row.clone()] })?);
                }
                let step: Vec<wit::Sequence> = seqs
                    .iter()
                    .zip(&rows)
                    .map(|(s, row)| wit::Sequence {
                        request_id: s.request_id,
                        params: wit::Params {
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
                Ok(out?.map(|ds| {
                    ds.into_iter()
                        .map(|d| match d {
                            wit::Decision::Token(t) => SampleDecision::Token(t),
                            wit::Decision::Bias(list) => SampleDecision::Bias(list.into_iter().map(|b| (b.id, b.bias)).collect()),
                            wit::Decision::Allow(bits) => SampleDecision::Allow(bits),
                            wit::Decision::Pass => SampleDecision::Pass,
                        })
                        .collect()
                }))
            }
            _ => Err(wrong_kind()),
        })?;
        let decisions = decisions.map_err(|m| bad(self, "sample", format!("returned an error: {}", clip(&m))))?;
        if decisions.len() != seqs.len() {
            return Err(bad(self, "sample", format!("{} decisions for {} sequences", decisions.len(), seqs.len())));
        }
        decisions.into_iter().zip(seqs).map(|(d, s)| self.check_decision(d, s.row.len())).collect()
    }

    /// Vets a request's sampler config (0.2.0 samplers; 0.1.0 ones accept any): `Ok(Err(m))`
    /// refuses the request with `m`.
    pub fn check_config(&self, config: &str) -> Result<Result<(), String>, PluginError> {
        let verdict = self.call("check-config", |store, bound| match bound {
            Bound::SamplerV2(b) => b.mlahost_plugin_sampler().call_check_config(store, config),
            Bound::SamplerV1(_) => Ok(Ok(())),
            _ => Err(wrong_kind()),
        })?;
        Ok(verdict.map_err(|m| clip(&m)))
    }

    /// A sampler decision is used only when it names tokens of the vocabulary, with finite
    /// biases, or a bitset of exactly the vocabulary's words that allows at least one token.
    fn check_decision(&self, d: SampleDecision, vocab: usize) -> Result<SampleDecision, PluginError> {
        let bad = |m: String| Err(bad(self, "sample", m));
        match d {
            SampleDecision::Token(t) if (t as usize) < vocab => Ok(SampleDecision::Token(t)),
            SampleDecision::Token(t) => bad(format!("token {t} is outside the vocabulary of {vocab}")),
            SampleDecision::Bias(list) => {
                if list.len() > vocab {
                    return bad(format!("{} biases for a vocabulary of {vocab}", list.len()));
                }
                if let Some((id, bias)) = list.iter().find(|(id, bias)| *id as usize >= vocab || !bias.is_finite()) {
                    return bad(format!("bias {bias} for token {id} (ids must be in the vocabulary, biases finite)"));
                }
                Ok(SampleDecision::Bias(list))
            }
            SampleDecision::Allow(bits) => {
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
            SampleDecision::Pass => Ok(SampleDecision::Pass),
            SampleDecision::Fail(m) => Ok(SampleDecision::Fail(m)),
        }
    }

}
