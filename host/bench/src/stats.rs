//! Aggregating request outcomes into the figures a serving benchmark reports.

use crate::request::Outcome;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, Serialize)]
pub struct Dist {
    pub mean: f64,
    pub median: f64,
    pub p90: f64,
    pub p99: f64,
}

/// Milliseconds, from seconds.
pub fn dist_ms(mut xs: Vec<f64>) -> Dist {
    if xs.is_empty() {
        return Dist::default();
    }
    xs.sort_by(f64::total_cmp);
    let q = |p: f64| {
        // Linear interpolation between closest ranks, as numpy's default percentile.
        let r = p * (xs.len() - 1) as f64;
        let (lo, hi) = (r.floor() as usize, r.ceil() as usize);
        (xs[lo] + (xs[hi] - xs[lo]) * (r - lo as f64)) * 1e3
    };
    Dist { mean: xs.iter().sum::<f64>() / xs.len() as f64 * 1e3, median: q(0.5), p90: q(0.9), p99: q(0.99) }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub concurrency: usize,
    pub request_rate: Option<f64>,
    pub num_prompts: usize,
    pub completed: usize,
    pub failed: usize,
    /// Failure messages and how often each occurred.
    pub errors: BTreeMap<String, usize>,
    pub zero_length_outputs: usize,
    pub duration_s: f64,
    pub total_input_tokens: usize,
    pub total_output_tokens: usize,
    pub request_throughput: f64,
    pub input_throughput: f64,
    pub output_throughput: f64,
    pub total_token_throughput: f64,
    /// Requests per second that met every SLO given (None without SLOs).
    pub goodput: Option<f64>,
    pub ttft_ms: Dist,
    pub tpot_ms: Dist,
    pub itl_ms: Dist,
    pub e2el_ms: Dist,
}

pub fn summarize(
    outcomes: &[Outcome],
    duration: f64,
    concurrency: usize,
    request_rate: Option<f64>,
    slo_ttft_ms: Option<f64>,
    slo_tpot_ms: Option<f64>,
) -> Summary {
    let ok: Vec<&Outcome> = outcomes.iter().filter(|o| o.ok).collect();
    let mut errors = BTreeMap::new();
    for o in outcomes.iter().filter(|o| !o.ok) {
        *errors.entry(o.error.clone().unwrap_or_else(|| "unknown".into())).or_insert(0) += 1;
    }
    let input: usize = ok.iter().map(|o| o.prompt_tokens).sum();
    let output: usize = ok.iter().map(|o| o.output_tokens).sum();
    let d = duration.max(1e-9);
    let goodput = (slo_ttft_ms.is_some() || slo_tpot_ms.is_some()).then(|| {
        let good = ok
            .iter()
            .filter(|o| slo_ttft_ms.is_none_or(|s| o.ttft.is_some_and(|t| t * 1e3 <= s)))
            .filter(|o| slo_tpot_ms.is_none_or(|s| o.tpot().is_none_or(|t| t * 1e3 <= s)))
            .count();
        good as f64 / d
    });
    Summary {
        concurrency,
        request_rate,
        num_prompts: outcomes.len(),
        completed: ok.len(),
        failed: outcomes.len() - ok.len(),
        errors,
        zero_length_outputs: ok.iter().filter(|o| o.output_tokens == 0).count(),
        duration_s: duration,
        total_input_tokens: input,
        total_output_tokens: output,
        request_throughput: ok.len() as f64 / d,
        input_throughput: input as f64 / d,
        output_throughput: output as f64 / d,
        total_token_throughput: (input + output) as f64 / d,
        goodput,
        ttft_ms: dist_ms(ok.iter().filter_map(|o| o.ttft).collect()),
        tpot_ms: dist_ms(ok.iter().filter_map(|o| o.tpot()).collect()),
        itl_ms: dist_ms(ok.iter().flat_map(|o| o.itl.iter().copied()).collect()),
        e2el_ms: dist_ms(ok.iter().map(|o| o.e2e).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_like_numpy() {
        let d = dist_ms(vec![0.004, 0.001, 0.002, 0.003]);
        assert!((d.mean - 2.5).abs() < 1e-9);
        assert!((d.median - 2.5).abs() < 1e-9);
        assert!((d.p90 - 3.7).abs() < 1e-9);
    }

    #[test]
    fn failures_and_slos_are_counted() {
        let good = Outcome { ok: true, prompt_tokens: 4, output_tokens: 3, ttft: Some(0.01), itl: vec![0.005, 0.005], e2e: 0.02, error: None };
        let slow = Outcome { ttft: Some(0.5), e2e: 0.51, ..good.clone() };
        let bad = Outcome { error: Some("HTTP 503: busy".into()), ..Default::default() };
        let s = summarize(&[good, slow, bad.clone(), bad], 2.0, 4, None, Some(100.0), None);
        assert_eq!((s.completed, s.failed), (2, 2));
        assert_eq!(s.errors["HTTP 503: busy"], 2);
        assert_eq!(s.total_output_tokens, 6);
        assert_eq!(s.goodput, Some(0.5));
        assert!((s.tpot_ms.mean - 5.0).abs() < 1e-9);
    }
}
