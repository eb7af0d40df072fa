//! Log-probabilities of one logits row without a normalized copy of it: one vectorized
//! log-sum-exp, then only the entries asked for. Decode reports the chosen token's logprob
//! every step, so this runs once per sequence per step over the whole vocabulary.

use crate::cpu::{max_f32, sum_exp};

/// `ln Σ e^x` with the terms in f32 and the sum in f64 (-inf for an empty or all -inf row).
pub fn logsumexp(row: &[f32]) -> f64 {
    let max = max_f32(row);
    if max == f32::NEG_INFINITY {
        return f64::NEG_INFINITY;
    }
    max as f64 + sum_exp(row, max).ln()
}

/// A row with its log-normalizer: `logprob(i) = row[i] - lse`.
pub struct RowLogprobs<'a> {
    row: &'a [f32],
    lse: f64,
}

impl<'a> RowLogprobs<'a> {
    pub fn new(row: &'a [f32]) -> Self {
        Self { row, lse: logsumexp(row) }
    }

    /// The token's logprob (-inf for an id outside the row).
    pub fn of(&self, token: u32) -> f32 {
        self.row.get(token as usize).map_or(f32::NEG_INFINITY, |&l| (l as f64 - self.lse) as f32)
    }

    /// 1 + how many tokens are more likely (the row's length for an id outside it).
    pub fn rank(&self, token: u32) -> usize {
        rank(self.row, token)
    }

    /// The `k` most likely `(token, logprob)` pairs, best first (ties: lower id first).
    pub fn top(&self, k: usize) -> Vec<(u32, f32)> {
        top_k(self.row, k).into_iter().map(|(i, l)| (i, (l as f64 - self.lse) as f32)).collect()
    }
}

/// 1 + how many entries are larger than the token's (the row's length for an id outside it).
pub fn rank(row: &[f32], token: u32) -> usize {
    let Some(&own) = row.get(token as usize) else { return row.len() };
    1 + row.iter().filter(|&&l| l > own).count()
}

/// The `k` largest `(index, value)` pairs, largest first (ties: lower index first), in one pass
/// that keeps a sorted list of `k` (no index array the size of the vocabulary).
pub fn top_k(row: &[f32], k: usize) -> Vec<(u32, f32)> {
    let k = k.min(row.len());
    let mut best: Vec<(u32, f32)> = Vec::with_capacity(k + 1);
    if k == 0 {
        return best;
    }
    for (i, &l) in row.iter().enumerate() {
        // Only strictly better than the k-th: a later index never displaces an equal earlier one.
        if best.len() == k && !(l > best[k - 1].1) {
            continue;
        }
        let at = best.partition_point(|&(_, b)| b >= l);
        best.insert(at, (i as u32, l));
        best.truncate(k);
    }
    best
}

/// Every entry's logprob (for checks that compare whole distributions).
pub fn log_softmax(row: &[f32]) -> Vec<f32> {
    let lse = logsumexp(row);
    row.iter().map(|&l| (l as f64 - lse) as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_log_softmax(row: &[f32]) -> Vec<f64> {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let lse = max + row.iter().map(|&l| (l as f64 - max).exp()).sum::<f64>().ln();
        row.iter().map(|&l| l as f64 - lse).collect()
    }

    #[test]
    fn matches_a_naive_f64_log_softmax() {
        let mut rng = crate::sampling::Rng::seeded(7);
        for n in [1, 7, 100, 129_280] {
            let mut row: Vec<f32> = (0..n).map(|_| (rng.next_f64() as f32 - 0.5) * 40.0).collect();
            if n > 10 {
                row[3] = f32::NEG_INFINITY; // a masked token
                row[5] = row[6]; // a tie
            }
            let (naive, lp) = (naive_log_softmax(&row), RowLogprobs::new(&row));
            for t in [0, n as u32 / 2, n as u32 - 1] {
                assert!((lp.of(t) as f64 - naive[t as usize]).abs() < 2e-6, "n {n} token {t}");
            }
            let mut order: Vec<u32> = (0..n as u32).collect();
            order.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]).then(a.cmp(&b)));
            let top = lp.top(5);
            assert_eq!(top.iter().map(|t| t.0).collect::<Vec<_>>(), order[..5.min(n)].to_vec());
            for (t, l) in top {
                assert!((l as f64 - naive[t as usize]).abs() < 2e-6);
            }
            assert_eq!(lp.rank(order[0]), 1);
            if n > 10 {
                assert_eq!(lp.of(3), f32::NEG_INFINITY);
                assert_eq!(lp.rank(6), lp.rank(5));
            }
        }
        assert_eq!(RowLogprobs::new(&[]).top(3), vec![]);
        assert_eq!(logsumexp(&[f32::NEG_INFINITY]), f64::NEG_INFINITY);
    }
}
