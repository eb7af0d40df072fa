//! Per-kernel GPU time of eager forward passes (`generate --profile-kernels`): an event pair
//! around every kernel launch and cuBLAS call, read back after each forward pass and summed by
//! (phase, name). Off unless asked for; never active while a stream is being captured.

use crate::error::{DriverContext, Result};
use cudarc::driver::{result, sys};
use std::borrow::Cow;
use std::collections::BTreeMap;

/// Which kind of forward pass a launch belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// Any step with more than one new token in a sequence (prompt or chunked prefill).
    Prefill,
    /// A step in which every sequence adds one token.
    Decode,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Prefill => "prefill",
            Phase::Decode => "decode",
        }
    }
}

/// Summed time of one (phase, name).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct KernelStat {
    pub calls: usize,
    pub micros: f64,
    /// The slowest single call (first calls pay cuBLAS's lazy kernel loading).
    pub max_micros: f64,
}

/// What a profile measured: totals by (phase, name) and the forward passes of each phase.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProfileReport {
    pub totals: BTreeMap<(Phase, String), KernelStat>,
    pub forwards: BTreeMap<Phase, usize>,
}

impl ProfileReport {
    pub fn add(&mut self, phase: Phase, name: &str, micros: f64) {
        let s = self.totals.entry((phase, name.to_string())).or_default();
        s.calls += 1;
        s.micros += micros;
        s.max_micros = s.max_micros.max(micros);
    }

    /// Rows of one phase, per forward pass, slowest first: (name, calls, µs, slowest call µs).
    pub fn per_forward(&self, phase: Phase) -> Vec<(String, f64, f64, f64)> {
        let n = self.forwards.get(&phase).copied().unwrap_or(0).max(1) as f64;
        let mut rows: Vec<_> = self
            .totals
            .iter()
            .filter(|((p, _), _)| *p == phase)
            .map(|((_, name), s)| (name.clone(), s.calls as f64 / n, s.micros / n, s.max_micros))
            .collect();
        rows.sort_by(|a, b| b.2.total_cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
        rows
    }

    /// A markdown table of one phase per forward pass, with each row's share of the summed time.
    pub fn table(&self, phase: Phase) -> String {
        let rows = self.per_forward(phase);
        let total: f64 = rows.iter().map(|r| r.2).sum();
        let mut out = format!(
            "| {} kernel ({} forward passes) | calls per pass | µs per pass | share | slowest call µs |\n|---|---|---|---|---|\n",
            phase.as_str(),
            self.forwards.get(&phase).copied().unwrap_or(0)
        );
        for (name, calls, us, max) in &rows {
            let share = if total > 0.0 { 100.0 * us / total } else { 0.0 };
            out += &format!("| {name} | {calls:.1} | {us:.1} | {share:.1}% | {max:.1} |\n");
        }
        out += &format!("| all | {:.1} | {total:.1} | 100% | |\n", rows.iter().map(|r| r.1).sum::<f64>());
        out
    }
}

/// What a profiled launch belongs to, for the per-step breakdown (issue 23's report: time in
/// attention, MoE, GEMMs and collectives per decode step and rank).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Category {
    /// MLA: the decode and prefill attention kernels, their combine, the cache write, query RoPE.
    Attention,
    /// Routed experts: routing, alignment, the grouped GEMMs, the combine.
    Moe,
    /// The dense linears (cuBLAS, cuBLASLt, the FP8 GEMMs and their activation quantization),
    /// shared experts included.
    Gemm,
    /// Sums and exchanges between ranks (NCCL, or the one-GPU emulation's kernels).
    Collective,
    /// Norms, activations, embeddings, sampling, copies.
    Other,
}

impl Category {
    pub const ALL: [Category; 5] = [Category::Attention, Category::Moe, Category::Gemm, Category::Collective, Category::Other];

    pub fn of(name: &str) -> Self {
        let starts = |p: &[&str]| p.iter().any(|p| name.starts_with(p));
        if starts(&["nccl", "rank_"]) {
            Category::Collective
        } else if name.starts_with("moe_") || name.ends_with("(experts)") {
            Category::Moe
        } else if starts(&["mla_", "latent_cache_write", "rope_query"]) {
            Category::Attention
        } else if starts(&["cuBLAS", "fp8_gemm", "fp8_skinny", "fp8_quant_act", "fp8_splitk_reduce", "linear_stream", "absorb_"]) {
            Category::Gemm
        } else {
            Category::Other
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Category::Attention => "attention",
            Category::Moe => "MoE",
            Category::Gemm => "GEMMs",
            Category::Collective => "collectives",
            Category::Other => "other",
        }
    }
}

impl ProfileReport {
    /// µs per forward pass of `phase` in each category (every category, in `Category::ALL` order).
    pub fn by_category(&self, phase: Phase) -> Vec<(Category, f64)> {
        let rows = self.per_forward(phase);
        // folded from +0.0: an empty f64 sum is -0.0, which would print as "-0.0"
        Category::ALL.iter().map(|&c| (c, rows.iter().filter(|r| Category::of(&r.0) == c).fold(0.0, |t, r| t + r.2))).collect()
    }
}

/// One row per rank of a phase's per-pass time by category, and the sum (markdown).
pub fn ranks_table(reports: &[ProfileReport], phase: Phase) -> String {
    let mut out = format!("| {} µs per pass, rank |", phase.as_str());
    Category::ALL.iter().for_each(|c| out += &format!(" {} |", c.as_str()));
    out += " all |\n|---|";
    out += &"---|".repeat(Category::ALL.len() + 1);
    out += "\n";
    for (rank, r) in reports.iter().enumerate() {
        let cats = r.by_category(phase);
        out += &format!("| {rank} |");
        cats.iter().for_each(|(_, us)| out += &format!(" {us:.1} |"));
        out += &format!(" {:.1} |\n", cats.iter().fold(0.0, |t, c| t + c.1));
    }
    out
}

struct Span {
    phase: Phase,
    name: Cow<'static, str>,
    start: sys::CUevent,
    end: sys::CUevent,
}

/// The live profile: spans recorded on the stream and not read yet, spare events, totals.
pub(crate) struct KernelProfile {
    pub(crate) phase: Phase,
    pending: Vec<Span>,
    spare: Vec<sys::CUevent>,
    pub(crate) report: ProfileReport,
}

impl KernelProfile {
    pub(crate) fn new() -> Self {
        Self { phase: Phase::Prefill, pending: Vec::new(), spare: Vec::new(), report: ProfileReport::default() }
    }

    fn event(&mut self) -> Result<sys::CUevent> {
        match self.spare.pop() {
            Some(e) => Ok(e),
            None => result::event::create(sys::CUevent_flags::CU_EVENT_DEFAULT).ctx("cuEventCreate"),
        }
    }

    /// Records an event on `stream` and returns it; `begin` and `end` bracket one launch.
    pub(crate) fn mark(&mut self, stream: sys::CUstream) -> Result<sys::CUevent> {
        let e = self.event()?;
        // SAFETY: a live event of this context and the backend's live stream.
        unsafe { result::event::record(e, stream) }.ctx("cuEventRecord")?;
        Ok(e)
    }

    /// Returns an event that ended up bracketing nothing (its launch failed).
    pub(crate) fn recycle(&mut self, e: sys::CUevent) {
        self.spare.push(e);
    }

    pub(crate) fn push(&mut self, name: Cow<'static, str>, start: sys::CUevent, end: sys::CUevent) {
        self.pending.push(Span { phase: self.phase, name, start, end });
    }

    /// Reads every pending span (the stream must have been synchronized) into the totals.
    pub(crate) fn collect(&mut self) -> Result<()> {
        for s in std::mem::take(&mut self.pending) {
            // SAFETY: both events were recorded on the stream, which the caller synchronized.
            let ms = unsafe { result::event::elapsed(s.start, s.end) }.ctx("cuEventElapsedTime")?;
            self.report.add(s.phase, &s.name, ms as f64 * 1e3);
            self.spare.extend([s.start, s.end]);
        }
        Ok(())
    }
}

impl Drop for KernelProfile {
    fn drop(&mut self) {
        for e in self.pending.drain(..).flat_map(|s| [s.start, s.end]).chain(self.spare.drain(..)) {
            // SAFETY: events created by this profile, destroyed once.
            let _ = unsafe { result::event::destroy(e) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_averages_per_forward_pass_and_orders_by_time() {
        let mut r = ProfileReport::default();
        r.forwards.insert(Phase::Decode, 2);
        r.forwards.insert(Phase::Prefill, 1);
        for _ in 0..4 {
            r.add(Phase::Decode, "moe_gemm", 10.0);
        }
        r.add(Phase::Decode, "rms_norm", 3.0);
        r.add(Phase::Decode, "rms_norm", 5.0);
        r.add(Phase::Prefill, "moe_gemm", 100.0);
        let rows = r.per_forward(Phase::Decode);
        assert_eq!(rows, vec![("moe_gemm".to_string(), 2.0, 20.0, 10.0), ("rms_norm".to_string(), 1.0, 4.0, 5.0)]);
        let t = r.table(Phase::Decode);
        assert!(t.contains("| moe_gemm | 2.0 | 20.0 | 83.3% | 10.0 |"), "{t}");
        assert!(t.contains("| all | 3.0 | 24.0 | 100% | |"), "{t}");
        assert_eq!(r.per_forward(Phase::Prefill), vec![("moe_gemm".to_string(), 1.0, 100.0, 100.0)]);
    }

    #[test]
    fn launches_fall_into_the_step_categories_per_rank() {
        for (name, c) in [
            ("mla_decode_wgmma_r64", Category::Attention),
            ("mla_decode_combine", Category::Attention),
            ("latent_cache_write", Category::Attention),
            ("moe_gemm_skinny", Category::Moe),
            ("fp8_gemm_m16 (experts)", Category::Moe),
            ("fp8_gemm_m16", Category::Gemm),
            ("cuBLAS gemm n=7168 k=2048", Category::Gemm),
            ("cuBLASLt fp8 n=576 k=7168", Category::Gemm),
            ("nccl all_reduce", Category::Collective),
            ("rank_all_gather", Category::Collective),
            ("rmsnorm_residual", Category::Other),
            ("sample_rows", Category::Other),
        ] {
            assert_eq!(Category::of(name), c, "{name}");
        }
        let mut a = ProfileReport::default();
        a.forwards.insert(Phase::Decode, 2);
        a.add(Phase::Decode, "mla_decode_wgmma_r64", 30.0);
        a.add(Phase::Decode, "moe_gemm", 50.0);
        a.add(Phase::Decode, "nccl all_reduce", 10.0);
        a.add(Phase::Decode, "nccl all_reduce", 6.0);
        let b = ProfileReport::default();
        assert_eq!(a.by_category(Phase::Decode), vec![(Category::Attention, 15.0), (Category::Moe, 25.0), (Category::Gemm, 0.0), (Category::Collective, 8.0), (Category::Other, 0.0)]);
        let t = ranks_table(&[a, b], Phase::Decode);
        assert!(t.starts_with("| decode µs per pass, rank | attention | MoE | GEMMs | collectives | other | all |\n|---|---|---|---|---|---|---|\n"), "{t}");
        assert!(t.contains("| 0 | 15.0 | 25.0 | 0.0 | 8.0 | 0.0 | 48.0 |\n"), "{t}");
        assert!(t.contains("| 1 | 0.0 | 0.0 | 0.0 | 0.0 | 0.0 | 0.0 |\n"), "{t}");
    }
}
