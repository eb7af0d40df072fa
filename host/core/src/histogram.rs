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
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut cum = 0;
        for (i, b) in self.bounds.iter().enumerate() {
            cum += s.0[i];
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{b}\"}} {cum}");
        }
        cum += s.0[self.bounds.len()];
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cum}");
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", s.1);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", s.2);
    }
}

