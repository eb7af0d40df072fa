//! [`SequenceView`]: one sequence of a decode step and read access to its logits.

use super::{Params, TokenLogit};
use crate::bindings::sampler::mlahost::plugin::logits_access::Logits;

/// Most entries [`SequenceView::top_k`] returns (the host's cap).
const TOP_K_CAP: u32 = 1024;
/// Most entries [`SequenceView::read_range`] returns (the host's cap).
const READ_RANGE_CAP: u32 = 65536;

/// One sequence of a decode step: its request, what it generated so far, and its logits.
///
/// The logits stay where they are (on the host for a real call, in memory for
/// [`SequenceView::local`] in tests); each method reads only what it returns. A view lives only
/// for the [`Sampler::sample`](crate::Sampler::sample) call it was passed to.
#[derive(Debug)]
pub struct SequenceView<'a> {
    /// Stable for the whole request (and its `n` choices: one id per choice).
    pub request_id: u64,
    /// The request's sampling parameters.
    pub params: Params,
    /// Prompt length in tokens.
    pub prompt_len: u32,
    /// Tokens generated so far (the prompt is not included).
    pub generated: Vec<u32>,
    logits: Source<'a>,
}

#[derive(Debug)]
enum Source<'a> {
    /// The step's borrowed host handle (valid for the current `sample` call) and this
    /// sequence's row in it.
    Host(&'a Logits, u32),
    /// Logits held in the guest (tests, or a plugin re-running its own logic).
    Local(Vec<f32>),
}

impl<'a> SequenceView<'a> {
    pub(crate) fn from_host(
        request_id: u64,
        params: Params,
        prompt_len: u32,
        generated: Vec<u32>,
        logits: &'a Logits,
        row: u32,
    ) -> Self {
        SequenceView {
            request_id,
            params,
            prompt_len,
            generated,
            logits: Source::Host(logits, row),
        }
    }

    /// A view over logits held in memory, for testing a [`Sampler`](crate::Sampler) natively
    /// (`cargo test`) without a host. Its methods follow the host's documented behaviour.
    ///
    /// ```
    /// use mlahost_sdk::{Params, SequenceView};
    ///
    /// let seq = SequenceView::local(7, Params::default(), 3, vec![1, 2], vec![0.5, 2.0, -1.0]);
    /// assert_eq!(seq.argmax(), 1);
    /// assert_eq!(seq.vocab_size(), 3);
    /// ```
    pub fn local(
        request_id: u64,
        params: Params,
        prompt_len: u32,
        generated: Vec<u32>,
        logits: Vec<f32>,
    ) -> SequenceView<'static> {
        SequenceView {
            request_id,
            params,
            prompt_len,
            generated,
            logits: Source::Local(logits),
        }
    }

    /// Number of logits (the model's vocabulary size).
    pub fn vocab_size(&self) -> u32 {
        match &self.logits {
            Source::Host(h, _) => h.vocab_size(),
            Source::Local(v) => v.len() as u32,
        }
    }

    /// The `k` highest logits, best first (`k` is capped at 1024; ties: lower id first).
    pub fn top_k(&self, k: u32) -> Vec<TokenLogit> {
        match &self.logits {
            Source::Host(h, row) => h
                .top_k(*row, k)
                .into_iter()
                .map(|t| TokenLogit {
                    id: t.id,
                    logit: t.logit,
                })
                .collect(),
            Source::Local(v) => {
                let mut all: Vec<TokenLogit> = v
                    .iter()
                    .enumerate()
                    .map(|(i, &logit)| TokenLogit {
                        id: i as u32,
                        logit,
                    })
                    .collect();
                all.sort_by(|a, b| b.logit.total_cmp(&a.logit).then(a.id.cmp(&b.id)));
                all.truncate(k.min(TOP_K_CAP) as usize);
                all
            }
        }
    }

    /// Logits of ids `start .. start + len` (`len` is capped at 65536; past the end is cut).
    pub fn read_range(&self, start: u32, len: u32) -> Vec<f32> {
        match &self.logits {
            Source::Host(h, row) => h.read_range(*row, start, len),
            Source::Local(v) => {
                let start = (start as usize).min(v.len());
                let end = start
                    .saturating_add(len.min(READ_RANGE_CAP) as usize)
                    .min(v.len());
                v[start..end].to_vec()
            }
        }
    }

    /// The id with the highest logit (the lowest such id on ties).
    pub fn argmax(&self) -> u32 {
        match &self.logits {
            Source::Host(h, row) => h.argmax(*row),
            Source::Local(v) => {
                let mut best = 0usize;
                for (i, x) in v.iter().enumerate() {
                    if x.total_cmp(&v[best]).is_gt() {
                        best = i;
                    }
                }
                best as u32
            }
        }
    }

    /// Log-softmax over the whole vocabulary, for `ids` (one value per id, in order). For a
    /// [`local`](Self::local) view, an id past the vocabulary gives `-inf`.
    pub fn logprobs(&self, ids: &[u32]) -> Vec<f32> {
        match &self.logits {
            Source::Host(h, row) => h.logprobs(*row, ids),
            Source::Local(v) => {
                let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let sum: f64 = v.iter().map(|&x| f64::from(x - max).exp()).sum();
                let log_z = f64::from(max) + sum.ln();
                ids.iter()
                    .map(|&id| match v.get(id as usize) {
                        Some(&x) => (f64::from(x) - log_z) as f32,
                        None => f32::NEG_INFINITY,
                    })
                    .collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(logits: Vec<f32>) -> SequenceView<'static> {
        SequenceView::local(1, Params::default(), 0, vec![], logits)
    }

    #[test]
    fn local_reads_follow_host_rules() {
        let seq = view(vec![1.0, 3.0, 3.0, -2.0]);
        assert_eq!(seq.vocab_size(), 4);
        assert_eq!(seq.argmax(), 1);
        let top: Vec<u32> = seq.top_k(3).iter().map(|t| t.id).collect();
        assert_eq!(top, vec![1, 2, 0]);
        assert_eq!(seq.read_range(2, 10), vec![3.0, -2.0]);
        assert!(seq.read_range(9, 1).is_empty());
    }

    #[test]
    fn local_logprobs_normalise() {
        let seq = view(vec![0.0, 0.0]);
        let lp = seq.logprobs(&[0, 1, 5]);
        assert!((lp[0] - (0.5f32).ln()).abs() < 1e-6);
        assert!((lp[1] - (0.5f32).ln()).abs() < 1e-6);
        assert_eq!(lp[2], f32::NEG_INFINITY);
    }
}
