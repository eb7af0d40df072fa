//! The summary table, the JSON file and the SVG plot of a sweep.

use crate::stats::{Dist, Summary};
use std::fmt::Write;

pub fn table(s: &Summary) -> String {
    let mut t = String::new();
    let rate = s.request_rate.map_or("inf".to_string(), |r| format!("{r}"));
    let _ = writeln!(t, "========== Serving Benchmark Result (concurrency {}, request rate {rate}) ==========", s.concurrency);
    let row = |t: &mut String, k: &str, v: String| {
        let _ = writeln!(t, "{k:<46}{v:>30}");
    };
    row(&mut t, "Successful requests:", s.completed.to_string());
    row(&mut t, "Failed requests:", s.failed.to_string());
    row(&mut t, "Zero-length outputs:", s.zero_length_outputs.to_string());
    row(&mut t, "Benchmark duration (s):", format!("{:.2}", s.duration_s));
    row(&mut t, "Total input tokens:", s.total_input_tokens.to_string());
    row(&mut t, "Total generated tokens:", s.total_output_tokens.to_string());
    row(&mut t, "Request throughput (req/s):", format!("{:.2}", s.request_throughput));
    if let Some(g) = s.goodput {
        row(&mut t, "Request goodput (req/s):", format!("{g:.2}"));
    }
    row(&mut t, "Input token throughput (tok/s):", format!("{:.2}", s.input_throughput));
    row(&mut t, "Output token throughput (tok/s):", format!("{:.2}", s.output_throughput));
    row(&mut t, "Total token throughput (tok/s):", format!("{:.2}", s.total_token_throughput));
    for (name, d) in [("TTFT", &s.ttft_ms), ("TPOT", &s.tpot_ms), ("ITL", &s.itl_ms), ("E2E latency", &s.e2el_ms)] {
        dist(&mut t, name, d);
    }
    for (e, n) in &s.errors {
        let _ = writeln!(t, "error x{n}: {e}");
    }
    t
}

fn dist(t: &mut String, name: &str, d: &Dist) {
    let _ = writeln!(
        t,
        "{:<46}{:>30}",
        format!("{name} (ms) mean / median / p90 / p99:"),
        format!("{:.2} / {:.2} / {:.2} / {:.2}", d.mean, d.median, d.p90, d.p99)
    );
}

/// Throughput, TTFT and TPOT percentiles against concurrency, as an SVG with three panels.
pub fn svg(runs: &[Summary]) -> String {
    let (w, h, pad) = (1200.0, 360.0, 60.0);
    let panel_w = (w - 4.0 * pad) / 3.0;
    let xs: Vec<f64> = runs.iter().map(|r| (r.concurrency.max(1) as f64).log2()).collect();
    let (xmin, xmax) = (xs.iter().copied().fold(f64::MAX, f64::min), xs.iter().copied().fold(f64::MIN, f64::max));
    let xspan = if xmax > xmin { xmax - xmin } else { 1.0 };
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    let panels: [(&str, Vec<(&str, &str, Vec<f64>)>); 3] = [
        ("output tokens/s", vec![("output tok/s", "#1f77b4", runs.iter().map(|r| r.output_throughput).collect())]),
        (
            "time to first token (ms)",
            vec![
                ("TTFT p50", "#2ca02c", runs.iter().map(|r| r.ttft_ms.median).collect()),
                ("TTFT p99", "#98df8a", runs.iter().map(|r| r.ttft_ms.p99).collect()),
            ],
        ),
        (
            "time per output token (ms)",
            vec![
                ("TPOT p50", "#d62728", runs.iter().map(|r| r.tpot_ms.median).collect()),
                ("TPOT p99", "#ff9896", runs.iter().map(|r| r.tpot_ms.p99).collect()),
            ],
        ),
    ];
    for (p, (title, series)) in panels.iter().enumerate() {
        let x0 = pad + p as f64 * (panel_w + pad);
        let (y0, ph) = (pad, h - 2.0 * pad);
        let ymax = series.iter().flat_map(|s| s.2.iter().copied()).fold(0.0, f64::max).max(1e-9) * 1.1;
        let _ = writeln!(out, "<rect x=\"{x0}\" y=\"{y0}\" width=\"{panel_w}\" height=\"{ph}\" fill=\"none\" stroke=\"#888\"/>");
        let _ = writeln!(out, "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{title}</text>", x0 + panel_w / 2.0, y0 - 10.0);
        let _ = writeln!(out, "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">concurrency</text>", x0 + panel_w / 2.0, h - 15.0);
        let _ = writeln!(out, "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{ymax:.1}</text>", x0 - 4.0, y0 + 4.0);
        let _ = writeln!(out, "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">0</text>", x0 - 4.0, y0 + ph);
        let px = |x: f64| x0 + (x - xmin) / xspan * panel_w;
        for (r, x) in runs.iter().zip(&xs) {
            let _ = writeln!(out, "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>", px(*x), y0 + ph + 15.0, r.concurrency);
        }
        for (k, (name, color, ys)) in series.iter().enumerate() {
            let pts: Vec<String> = xs.iter().zip(ys).map(|(x, y)| format!("{:.1},{:.1}", px(*x), y0 + ph - y / ymax * ph)).collect();
            let _ = writeln!(out, "<polyline points=\"{}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"/>", pts.join(" "));
            for pt in &pts {
                let (cx, cy) = pt.split_once(',').unwrap_or(("0", "0"));
                let _ = writeln!(out, "<circle cx=\"{cx}\" cy=\"{cy}\" r=\"3\" fill=\"{color}\"/>");
            }
            let _ = writeln!(out, "<text x=\"{}\" y=\"{}\" fill=\"{color}\">{name}</text>", x0 + 8.0, y0 + 16.0 + 14.0 * k as f64);
        }
    }
    out.push_str("</svg>\n");
    out
}
