//! Native token sampling: penalties, greedy, temperature, top-k, top-p, min-p, seeded;
//! log-probabilities are of the model's distribution before any of these, as vLLM reports them.

pub use crate::sampling_params::{Rng, SamplingParams, MIN_TEMPERATURE};

pub use crate::logprobs::log_softmax;

/// The `k` most likely `(token, logprob)` pairs of a logprob row, best first (ties: lower id first).
pub fn top_logprobs(logprobs: &[f32], k: usize) -> Vec<(u32, f32)> {
    crate::logprobs::top_k(logprobs, k)
}

/// Applies the penalties to `logits` in place, given the prompt and the tokens generated so far.
pub fn apply_penalties(logits: &mut [f32], prompt: &[u32], output: &[u32], p: &SamplingParams) {
    if !p.has_penalties() {
        return;
    }
    let mut counts = std::collections::HashMap::<u32, u32>::new();
    for &t in output {
        *counts.entry(t).or_default() += 1;
    }
    if p.repetition_penalty != 1.0 {
        let seen: std::collections::HashSet<u32> = prompt.iter().chain(output).copied().collect();
        for t in seen {
            if let Some(l) = logits.get_mut(t as usize) {
                *l = if *l > 0.0 { *l / p.repetition_penalty } else { *l * p.repetition_penalty };
            }
        }
    }
    for (t, c) in counts {
        if let Some(l) = logits.get_mut(t as usize) {
            *l -= p.frequency_penalty * c as f32 + p.presence_penalty;
        }
    }
}

/// vLLM's rank of `token` in a logprob row: 1 + how many tokens are strictly more likely.
pub fn token_rank(logprobs: &[f32], token: u32) -> usize {
    crate::logprobs::rank(logprobs, token)
}

/// The first index of the largest logit (0 when every one is NaN).
pub fn argmax(logits: &[f32]) -> u32 {
    let max = crate::cpu::max_f32(logits);
    logits.iter().position(|&l| l == max).unwrap_or(0) as u32
}

/// Draws the next token, in time linear in the vocabulary (expected): weights are computed
/// once, top-k and the top-p nucleus are found by selection, not by sorting.
pub fn sample(logits: &[f32], p: &SamplingParams, rng: &mut Rng) -> u32 {
    // Every field, by name: a new one does not compile until the CPU sampler decides on it.
    let SamplingParams {
        temperature,
        top_p,
        top_k,
        min_p,
        seed: _, // `rng` is seeded from it when the request starts
        presence_penalty: _, // the three penalties: `apply_penalties`, before this
        frequency_penalty: _,
        repetition_penalty: _,
        logit_bias: _, // the logits processors: `logits_processors::process_row`, before this
        allowed_token_ids: _,
        bad_words: _,
        min_tokens: _,
        min_tokens_banned: _,
    } = p;
    let (temperature, top_p, top_k, min_p) = (*temperature, *top_p, *top_k, *min_p);
    if p.is_greedy() {
        return argmax(logits);
    }
    let inv_t = 1.0 / temperature;
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    // (id, weight) with weight = exp((logit - max) / T), the unnormalized probability.
    let mut cand: Vec<(u32, f32)> = logits.iter().enumerate().map(|(i, &l)| (i as u32, ((l - max) * inv_t).exp())).collect();
    let desc = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if top_k > 0 && top_k < cand.len() {
        cand.select_nth_unstable_by(top_k - 1, desc);
        cand.truncate(top_k);
    }
    if min_p > 0.0 {
        // The best weight is 1 (or the top-k's best); keep those at least min_p of it.
        let best = cand.iter().map(|c| c.1).fold(0.0, f32::max);
        cand.retain(|c| c.1 >= min_p * best);
    }
    if top_p < 1.0 {
        let total: f64 = cand.iter().map(|c| c.1 as f64).sum();
        let keep = nucleus(&mut cand, top_p as f64 * total);
        cand.truncate(keep);
    }
    let total: f64 = cand.iter().map(|c| c.1 as f64).sum();
    let mut u = rng.next_f64() * total;
    for c in &cand {
        if u < c.1 as f64 {
            return c.0;
        }
        u -= c.1 as f64;
    }
    cand.last().map_or(0, |c| c.0)
}

/// Reorders `cand` so its first `k` entries are the smallest set of highest weights whose sum
/// reaches `target`, and returns `k`. Quickselect on the cumulative weight.
fn nucleus(cand: &mut [(u32, f32)], target: f64) -> usize {
    let desc = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    let (mut lo, mut hi, mut acc) = (0usize, cand.len(), 0f64);
    while hi - lo > 32 {
        // Partition [lo, hi) around the median weight: the upper half goes first.
        let mid = lo + (hi - lo) / 2;
        cand[lo..hi].select_nth_unstable_by(mid - lo, desc);
        let upper: f64 = cand[lo..mid].iter().map(|c| c.1 as f64).sum();
        if acc + upper >= target {
            hi = mid;
        } else {
            acc += upper;
            lo = mid;
        }
    }
    cand[lo..hi].sort_by(desc);
    for (i, c) in cand[lo..hi].iter().enumerate() {
        acc += c.1 as f64;
        if acc >= target {
            return lo + i + 1;
        }
    }
    hi
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_sampling_is_reproducible_and_respects_top_k() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.7).sin()).collect();
        let p = SamplingParams { temperature: 0.8, top_k: 3, seed: Some(7), ..Default::default() };
        let top3: Vec<u32> = top_logprobs(&log_softmax(&logits), 3).iter().map(|x| x.0).collect();
        let draw = |seed| {
            let mut r = Rng::seeded(seed);
            (0..200).map(|_| sample(&logits, &p, &mut r)).collect::<Vec<_>>()
        };
        let a = draw(7);
        assert_eq!(a, draw(7));
        assert!(a.iter().all(|t| top3.contains(t)));
        assert!(top3.iter().all(|t| a.contains(t)), "each of the top 3 is drawn sometimes");
    }

    #[test]
    fn a_denormal_temperature_is_greedy() {
        let logits: Vec<f32> = (0..64).map(|i| ((i * 37 % 64) as f32 * 0.3).cos()).collect();
        let best = top_logprobs(&log_softmax(&logits), 1)[0].0;
        let mut r = Rng::seeded(5);
        for t in [1e-40f32, 1e-30, 1e-6] {
            let p = SamplingParams { temperature: t, ..Default::default() };
            assert!((0..50).all(|_| sample(&logits, &p, &mut r) == best), "temperature {t}");
        }
    }

    #[test]
    fn top_p_keeps_the_nucleus() {
        let logits = [10.0, 9.0, 0.0, -1.0];
        let p = SamplingParams { top_p: 0.5, ..Default::default() };
        let mut r = Rng::seeded(1);
        assert!((0..100).all(|_| sample(&logits, &p, &mut r) == 0));
    }

    #[test]
    fn wide_nuclei_and_narrow_ones_over_a_large_vocabulary() {
        // Uniform logits: the nucleus of 0.5 is the first half of the ids (ties go to lower ids).
        let flat = vec![0.5f32; 5000];
        let p = SamplingParams { top_p: 0.5, ..Default::default() };
        let mut r = Rng::seeded(9);
        let draws: Vec<u32> = (0..300).map(|_| sample(&flat, &p, &mut r)).collect();
        assert!(draws.iter().all(|&t| t < 2500));
        assert!(draws.iter().any(|&t| t > 1024), "beyond the 1024-candidate head");
        // One dominant token: the head shortcut applies.
        let mut peaked = vec![0.0f32; 5000];
        peaked[4321] = 30.0;
        assert!((0..50).all(|_| sample(&peaked, &SamplingParams { top_p: 0.9, ..Default::default() }, &mut r) == 4321));
    }

    #[test]
    fn min_p_and_penalties() {
        let logits = [2.0, 2.0 + (0.5f32).ln() - 0.01, 1.0];
        let p = SamplingParams { min_p: 0.5, ..Default::default() };
        let mut r = Rng::seeded(3);
        assert!((0..200).all(|_| sample(&logits, &p, &mut r) == 0), "tokens under half the best are cut");
        let mut l = vec![1.0, -1.0, 3.0];
        let p = SamplingParams { presence_penalty: 0.5, frequency_penalty: 0.25, repetition_penalty: 2.0, ..Default::default() };
        apply_penalties(&mut l, &[0], &[1, 1], &p);
        assert_eq!(l, vec![0.5, -2.0 - 0.5 - 0.5, 3.0]);
    }

    #[test]
    fn log_softmax_normalizes() {
        let lp = log_softmax(&[1.0, 2.0, 3.0]);
        let s: f64 = lp.iter().map(|&x| (x as f64).exp()).sum();
        assert!((s - 1.0).abs() < 1e-6);
    }
}
