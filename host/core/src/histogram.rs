//! A Prometheus-style histogram: fixed bucket bounds, a sum and a count, rendered as text.

use std::fmt::Write;
use std::sync::Mutex;

/// Observations counted per upper bound (plus +Inf), with their sum.
pub struct Histogram {
    bounds: &'static [f64],
    /// Per bucket (plus +Inf), then sum and count.
    state: Mutex<(Vec<u64>, f64, u64)>,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self { bounds, state: Mutex::new((vec![0; bounds.len() + 1], 0.0, 0)) }
    }

    pub fn observe(&self, v: f64) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let i = self.bounds.iter().position(|&b| v <= b).unwrap_or(self.bounds.len());
        s.0[i] += 1;
        s.1 += v;
        s.2 += 1;
    }

    /// Appends `name_bucket{labels,le=..}`, `name_sum` and `name_count` lines.
    pub fn render_series(&self, out: &mut String, name: &str, labels: &str) {
        Self::render_merged(&[self], out, name, labels);
    }

    /// One series of several histograms added together (a pod's replicas). Histograms whose
    /// bounds differ from the first one's are left out of the sum.
    pub fn render_merged(hs: &[&Histogram], out: &mut String, name: &str, labels: &str) {
        let Some(first) = hs.first() else { return };
        let bounds = first.bounds;
        let (mut buckets, mut sum, mut count) = (vec![0u64; bounds.len() + 1], 0.0, 0u64);
        for h in hs.iter().filter(|h| h.bounds == bounds) {
            let s = h.state.lock().unwrap_or_else(|p| p.into_inner());
            buckets.iter_mut().zip(&s.0).for_each(|(a, b)| *a += b);
            sum += s.1;
            count += s.2;
        }
        let mut cum = 0;
        for (i, b) in bounds.iter().enumerate() {
            cum += buckets[i];
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{b}\"}} {cum}");
        }
        cum += buckets[bounds.len()];
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cum}");
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

