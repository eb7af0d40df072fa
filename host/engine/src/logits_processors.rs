//! The request's logits processors, vLLM's semantics: `allowed_token_ids`, `bad_words`,
//! `min_tokens` (its stop tokens banned until enough are generated) and `logit_bias`, then the
//! penalties. They change the row that is sampled from, never the reported logprobs. One host
//! implementation serves the CPU engine and the rows a device sampler hands back to the host.

use crate::sampling::{apply_penalties, sample, Rng, SamplingParams};

/// Applies the logits processors to `row` in place, given the tokens generated so far.
pub fn apply_logits_processors(row: &mut [f32], output: &[u32], p: &SamplingParams) {
    // Every field, by name: a new one does not compile until this decides on it.
    let SamplingParams {
        temperature: _, // the sampling knobs: `sample`, after this
        top_p: _,
        top_k: _,
        min_p: _,
        seed: _,
        presence_penalty: _, // the penalties: `apply_penalties`, after this
        frequency_penalty: _,
        repetition_penalty: _,
        logit_bias,
        allowed_token_ids,
        bad_words,
        min_tokens,
        min_tokens_banned,
    } = p;
    let mut ban = |t: u32| {
        if let Some(l) = row.get_mut(t as usize) {
            *l = f32::NEG_INFINITY;
        }
    };
    for word in bad_words {
        if let Some((&last, prefix)) = word.split_last() {
            if output.ends_with(prefix) {
                ban(last);
            }
        }
    }
    if output.len() < *min_tokens {
        for &t in min_tokens_banned {
            ban(t);
        }
    }
    if let Some(allowed) = allowed_token_ids {
        let mut keep = vec![false; row.len()];
        for &t in allowed {
            if let Some(k) = keep.get_mut(t as usize) {
                *k = true;
            }
        }
        for (l, k) in row.iter_mut().zip(keep) {
            if !k {
                *l = f32::NEG_INFINITY;
            }
        }
    }
    for &(t, b) in logit_bias {
        if let Some(l) = row.get_mut(t as usize) {
            *l += b;
        }
    }
}

/// Whether `process_row` changes anything for these parameters.
pub fn needs_processing(p: &SamplingParams) -> bool {
    p.has_logits_processors() || p.has_penalties()
}

/// The logits processors, then the penalties: the row that is sampled from.
pub fn process_row(row: &mut [f32], prompt: &[u32], output: &[u32], p: &SamplingParams) {
    apply_logits_processors(row, output, p);
    apply_penalties(row, prompt, output, p);
}

/// Leaves only the allowed tokens (a grammar's allow-set: bit `i % 64` of word `i / 64`; ids past
/// the words are not allowed) samplable.
pub fn mask_to_allowed(row: &mut [f32], allowed: &[u64]) {
    for (i, l) in row.iter_mut().enumerate() {
        if allowed.get(i / 64).is_none_or(|w| w >> (i % 64) & 1 == 0) {
            *l = f32::NEG_INFINITY;
        }
    }
}

/// A token drawn on the host from a raw logits row, with its logprob and the `top` best
/// alternatives of the model's own distribution (before processors, penalties and temperature).
pub struct HostSample {
    pub token: u32,
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
}

/// Samples `raw` for a sequence with `prompt` and `output` so far: the same decision the CPU
/// engine loop makes (the allow-set first, then the processors and penalties). `top`:
/// alternatives to report.
pub fn sample_row(raw: &[f32], prompt: &[u32], output: &[u32], p: &SamplingParams, allowed: Option<&[u64]>, top: usize, rng: &mut Rng) -> HostSample {
    let token = if needs_processing(p) || allowed.is_some() {
        let mut row = raw.to_vec();
        if let Some(bits) = allowed {
            mask_to_allowed(&mut row, bits);
        }
        process_row(&mut row, prompt, output, p);
        sample(&row, p, rng)
    } else {
        sample(raw, p, rng)
    };
    let lp = crate::logprobs::RowLogprobs::new(raw);
    HostSample { token, logprob: lp.of(token), top: lp.top(top) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::log_softmax;

    fn greedy() -> SamplingParams {
        SamplingParams { temperature: 0.0, ..Default::default() }
    }

    #[test]
    fn an_allow_set_is_applied_before_the_processors_and_logprobs_stay_raw() {
        let raw = [3.0, 1.0, 2.0, 0.5];
        let mut r = Rng::seeded(1);
        // ids 1 and 3 allowed: the argmax among them, with the model's own logprob reported
        let s = sample_row(&raw, &[], &[], &greedy(), Some(&[0b1010]), 1, &mut r);
        assert_eq!((s.token, s.logprob, s.top[0].0), (1, log_softmax(&raw)[1], 0));
        // a bias inside the allow-set still decides among the allowed ids
        let p = SamplingParams { logit_bias: vec![(3, 5.0)], ..greedy() };
        assert_eq!(sample_row(&raw, &[], &[], &p, Some(&[0b1010]), 0, &mut r).token, 3);
        // ids past the words are not allowed
        let mut row = vec![0.0; 70];
        mask_to_allowed(&mut row, &[u64::MAX]);
        assert!(row[63].is_finite() && row[64] == f32::NEG_INFINITY);
    }

    #[test]
    fn logit_bias_moves_the_argmax() {
        let raw = [3.0, 1.0, 2.0];
        let mut r = Rng::seeded(1);
        assert_eq!(sample_row(&raw, &[], &[], &greedy(), None, 0, &mut r).token, 0);
        let p = SamplingParams { logit_bias: vec![(1, 5.0)], ..greedy() };
        let s = sample_row(&raw, &[], &[], &p, None, 2, &mut r);
        assert_eq!(s.token, 1);
        // Reported logprobs are the model's, before the bias.
        let lp = log_softmax(&raw);
        assert_eq!((s.logprob, s.top[0].0), (lp[1], 0));
    }

    #[test]
    fn allowed_token_ids_restrict_sampling() {
        let raw: Vec<f32> = (0..40).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let p = SamplingParams { allowed_token_ids: Some(vec![5, 17, 33]), temperature: 1.5, ..Default::default() };
        let mut r = Rng::seeded(4);
        let drawn: Vec<u32> = (0..300).map(|_| sample_row(&raw, &[], &[], &p, None, 0, &mut r).token).collect();
        assert!(drawn.iter().all(|t| [5, 17, 33].contains(t)));
        assert!([5, 17, 33].iter().all(|t| drawn.contains(t)));
    }

    #[test]
    fn bad_words_ban_the_last_token_after_their_prefix() {
        let mut row = vec![0.0; 10];
        let p = SamplingParams { bad_words: vec![vec![7], vec![2, 3, 4]], ..greedy() };
        apply_logits_processors(&mut row, &[1, 2], &p);
        assert_eq!(row[7], f32::NEG_INFINITY, "a one-token word is always banned");
        assert_eq!(row[4], 0.0, "prefix [2, 3] not generated yet");
        apply_logits_processors(&mut row, &[1, 2, 3], &p);
        assert_eq!(row[4], f32::NEG_INFINITY);
    }

    #[test]
    fn min_tokens_bans_stop_tokens_until_reached() {
        let raw = [0.0, 9.0, 1.0];
        let p = SamplingParams { min_tokens: 2, min_tokens_banned: vec![1], ..greedy() };
        let mut r = Rng::seeded(2);
        assert_eq!(sample_row(&raw, &[], &[0], &p, None, 0, &mut r).token, 2);
        assert_eq!(sample_row(&raw, &[], &[0, 2], &p, None, 0, &mut r).token, 1);
    }
}
