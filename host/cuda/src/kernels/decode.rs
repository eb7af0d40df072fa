//! MLA attention launchers: the tiled decode kernels of mla_decode.cu (DeepSeek's 512 + 64
//! latent, bf16 cache) with their split-KV plan and combine, and the generic kernel of
//! mla_prefill.cu (any latent width, bf16 or fp8 cache). See kernels/DESIGN.md.

use super::{ensure, View};
pub use super::decode_kernel::DecodeKernel;
use crate::module::{Arg, Kernels};
use crate::Result;

pub const FAST_KV_LORA: usize = 512;
pub const FAST_ROPE: usize = 64;
const D: usize = FAST_KV_LORA + FAST_ROPE;
const MAX_SPLITS: usize = 1024;

/// Latent slices per row in the combine grid (mla_decode_combine.cuh). Its 256 threads form 2 groups
/// per slice, each summing every (2 x slices)-th split, so few splits get few slices and no group
/// sits idle; and every CTA repeats the split-weight phase, so the grid stays near 4 CTAs per SM
/// (H200: 16 rows x 1 sequence are fastest with 8 slices, 128 rows with 2-4, 64
/// sequences with 1).
fn combine_slices(max_splits: usize, rows: usize, batch: usize, num_sms: usize) -> u32 {
    let by_splits = max_splits.div_ceil(2).next_power_of_two();
    let by_grid = 1usize << (4 * num_sms / (rows * batch).max(1)).max(1).ilog2();
    by_splits.min(by_grid).clamp(1, 8) as u32
}

/// What the split heuristic knows of the GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeTarget {
    pub num_sms: usize,
    /// sm_90a: the wgmma kernel is available.
    pub hopper: bool,
}

impl DecodeTarget {
    pub fn of(gpu: &crate::Gpu) -> Self {
        Self { num_sms: gpu.info.multiprocessors as usize, hopper: gpu.is_hopper() }
    }
}

/// How one decode launch splits each sequence's context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitPlan {
    pub kernel: DecodeKernel,
    /// Tokens per split, a multiple of 64.
    pub chunk: usize,
    /// Exclusive prefix sums of the splits per sequence (length B + 1).
    pub offsets: Vec<i32>,
    pub max_splits: usize,
}

impl SplitPlan {
    pub fn total_splits(&self) -> usize {
        *self.offsets.last().unwrap_or(&0) as usize
    }

    /// Whether the combine runs: whenever the grid has room for several splits (a sequence
    /// with one split is skipped inside it), so a captured graph stays valid as lengths change.
    pub fn needs_combine(&self) -> bool {
        self.max_splits > 1
    }

    /// A plan with a fixed `chunk` and grid (`max_splits`), e.g. chosen for a length bucket:
    /// each sequence gets ceil(len / chunk) splits, at most `max_splits`.
    pub fn with_chunk(kernel: DecodeKernel, chunk: usize, max_splits: usize, seq_lens: &[usize]) -> Self {
        let mut offsets = vec![0i32];
        for &l in seq_lens {
            let s = l.div_ceil(chunk).clamp(1, max_splits);
            offsets.push(offsets.last().copied().unwrap_or(0) + s as i32);
        }
        Self { kernel, chunk, offsets, max_splits }
    }

    /// One split per sequence (prefill chunks: the rows already fill the GPU).
    pub fn single(kernel: DecodeKernel, seq_lens: &[usize]) -> Self {
        let max_len = seq_lens.iter().copied().max().unwrap_or(1).max(1);
        Self { kernel, chunk: max_len.div_ceil(64) * 64, offsets: (0..=seq_lens.len() as i32).collect(), max_splits: 1 }
    }
}

/// The split heuristic (kernels/DESIGN.md), in units of one 64-token tile streamed by a CTA
/// alone on its SM: waves of CTAs over the resident slots, each wave costing its longest split's
/// tiles plus fill; two CTAs sharing an SM each run 1.75x slower (together they gain ~14%); plus
/// the combine's fixed cost and its partial traffic. Fitted to H200 split sweeps.
pub fn plan_splits(seq_lens: &[usize], q_len: usize, heads: usize, target: &DecodeTarget, fp8: bool) -> SplitPlan {
    let kernel = DecodeKernel::choose(q_len, heads, target.hopper, fp8);
    let rows_per_seq = q_len * heads;
    let rt = rows_per_seq.div_ceil(kernel.rows());
    let num_sms = target.num_sms.max(1);
    let slots = num_sms * kernel.per_sm();
    let max_len = seq_lens.iter().copied().max().unwrap_or(1).max(1);
    let max_ns = max_len.div_ceil(64).min(4 * slots).min(MAX_SPLITS);
    // Equal lengths cost the same: the candidates are scored over (length, count) groups, so a
    // uniform batch (every graph-mode step) costs O(candidates), not O(candidates x B).
    let mut sorted = seq_lens.to_vec();
    sorted.sort_unstable();
    let mut groups: Vec<(usize, usize)> = Vec::new();
    for l in sorted {
        match groups.last_mut() {
            Some((len, n)) if *len == l => *n += 1,
            _ => groups.push((l, 1)),
        }
    }
    let mut best: Option<(f64, usize)> = None;
    let mut last_chunk = 0;
    let candidates: Vec<usize> = if seq_lens.len() > 64 {
        // large ragged batches: a short ladder keeps the host cost O(40 B)
        let mut c: Vec<usize> = (1..=16.min(max_ns)).collect();
        let mut x = 16.0f64;
        while (x as usize) < max_ns {
            x *= 1.25;
            c.push((x as usize).min(max_ns));
        }
        c
    } else {
        (1..=max_ns).collect()
    };
    for ns in candidates {
        let chunk = max_len.div_ceil(ns).div_ceil(64) * 64;
        if chunk == last_chunk {
            continue;
        }
        last_chunk = chunk;
        let (mut total, mut multi) = (0usize, 0usize);
        for &(len, n) in &groups {
            let s = len.div_ceil(chunk).max(1);
            total += n * s;
            if s > 1 {
                multi += n * s;
            }
        }
        let ctas = rt * total;
        let waves = ctas.div_ceil(slots);
        let tile = if ctas.min(slots) > num_sms { 1.75 } else { 1.0 };
        let mut cost = waves as f64 * (chunk as f64 / 64.0 * tile + 2.5);
        if multi > 0 {
            // bf16 partials: 4 bytes per element written and read back
            cost += 1.25 + (multi * rows_per_seq * 512 * 4) as f64 / (64.0 * 1152.0 * num_sms as f64);
        }
        if best.is_none_or(|b| cost < b.0 - 1e-9) {
            best = Some((cost, chunk));
        }
    }
    let chunk = best.map_or(64, |b| b.1);
    let mut offsets = vec![0i32];
    let mut max_splits = 1;
    for &l in seq_lens {
        let s = l.div_ceil(chunk).max(1);
        max_splits = max_splits.max(s);
        offsets.push(offsets.last().copied().unwrap_or(0) + s as i32);
    }
    SplitPlan { kernel, chunk, offsets, max_splits }
}

/// Buffers of one fast decode launch (one layer).
#[derive(Debug, Clone, Copy)]
pub struct DecodeIo {
    /// `[B, q_len, H, 576]` bf16.
    pub q: View,
    /// One layer's cache, `[pages, page_size, 576]` bf16 (or 656-byte fp8 entries).
    pub cache: View,
    /// `[B, max_pages]` i32.
    pub block_table: View,
    /// `[B]` i32, tokens in the cache including the new ones.
    pub seq_lens: View,
    /// `[B + 1]` i32, the plan's offsets.
    pub split_offsets: View,
    /// `[B, q_len, H, 512]` bf16.
    pub out: View,
    /// `[B, q_len, H]` f32.
    pub lse: View,
    /// `[total splits, q_len * H, 512]` bf16 (only used when the plan splits).
    pub part_o: View,
    pub part_lse: View,
    /// Zeroed i32 words for the split arrivals (`sync_words`), kept between launches (each launch
    /// leaves them zero again); `View::NULL`: the combine always waits for the decode grid's end.
    pub sync: View,
    /// Whether the combine starts on split arrivals: `None` as `arrivals_pay` decides (serving);
    /// `Some` forces the choice (the kernel checks and the benchmark's comparison).
    pub arrivals: Option<bool>,
}

/// The i32 words the split arrivals of a launch may use: two per (sequence, 16-row group).
pub fn sync_words(batch: usize, rows: usize) -> usize {
    2 * batch * rows.div_ceil(16)
}

#[derive(Debug, Clone, Copy)]
pub struct DecodeShape {
    pub batch: usize,
    pub q_len: usize,
    pub heads: usize,
    pub page_size: usize,
    pub max_pages: usize,
    pub cache_pages: usize,
    pub scale: f32,
}

/// Whether the combine should start on split arrivals: the wgmma kernels then count each split
/// in per-16-row-group words once its partials are stored, and the combine (launched early, PDL)
/// merges a group on its last arrival instead of on the decode grid's end.
/// Its CTAs poll from SMs the decode grid leaves free, so this pays only when the grid leaves at
/// least half the SMs free (H200: 16 h 1x4K, 64 CTAs, 8.4 -> 7.5 us; 128 CTAs on 132 SMs lose:
/// 128 h 1x4K 11.5 -> 13.1, 16 h 1x32K 17.5 -> 18.4).
pub fn arrivals_pay(plan: &SplitPlan, rows: usize, batch: usize, num_sms: usize) -> bool {
    let ctas = rows.div_ceil(plan.kernel.rows()) * plan.max_splits * batch;
    plan.kernel.needs_hopper() && 2 * ctas <= num_sms
}

/// Launches the decode kernel (and the combine when any sequence is split).
pub fn mla_decode(k: &Kernels, io: &DecodeIo, s: &DecodeShape, plan: &SplitPlan) -> Result<()> {
    let name = plan.kernel.name();
    ensure(name, s.q_len >= 1 && s.heads >= 1 && s.page_size >= 1, || "q_len, heads and page size must be positive".into())?;
    ensure(name, plan.offsets.len() == s.batch + 1, || format!("plan for {} sequences, batch of {}", plan.offsets.len() - 1, s.batch))?;
    ensure(name, plan.chunk % 64 == 0 && plan.max_splits <= MAX_SPLITS, || format!("bad split plan (chunk {})", plan.chunk))?;
    ensure(name, !plan.kernel.needs_hopper() || k.gpu().is_hopper(), || "this kernel needs sm_90a".into())?;
    let (b, rows) = (s.batch, s.q_len * s.heads);
    let slots = plan.total_splits();
    let split = plan.needs_combine();
    let grid = (rows.div_ceil(plan.kernel.rows()) as u32, plan.max_splits as u32, b as u32);
    let arrivals = io.arrivals.unwrap_or_else(|| arrivals_pay(plan, rows, b, k.gpu().info.multiprocessors as usize));
    let flags = split && arrivals && plan.kernel.needs_hopper() && io.sync.ptr != 0;
    let sync = if flags { io.sync.need(name, "sync", sync_words(b, rows) * 4)? } else { 0 };
    let args = [
        Arg::Ptr(io.q.need(name, "q", b * rows * D * 2)?),
        Arg::Ptr(io.cache.need(name, "cache", s.cache_pages * s.page_size * if plan.kernel.is_fp8() { 656 } else { D * 2 })?),
        Arg::Ptr(io.block_table.need(name, "block table", b * s.max_pages * 4)?),
        Arg::Ptr(io.seq_lens.need(name, "seq_lens", b * 4)?),
        Arg::Ptr(io.split_offsets.need(name, "split offsets", (b + 1) * 4)?),
        Arg::Ptr(io.out.need(name, "out", b * rows * FAST_KV_LORA * 2)?),
        Arg::Ptr(io.lse.need(name, "lse", b * rows * 4)?),
        Arg::Ptr(if split { io.part_o.need(name, "part_o", slots * rows * FAST_KV_LORA * 2)? } else { io.part_o.ptr }),
        Arg::Ptr(if split { io.part_lse.need(name, "part_lse", slots * rows * 4)? } else { io.part_lse.ptr }),
        Arg::I32(s.q_len as i32),
        Arg::I32(s.heads as i32),
        Arg::I32(s.page_size as i32),
        Arg::I32(s.max_pages as i32),
        Arg::I32(plan.chunk as i32),
        Arg::F32(s.scale),
        Arg::Ptr(sync),
    ];
    // Programmatic dependent launch for the wgmma kernels (one CTA per SM) and the combine: they
    // wait (griddepcontrol) before reading what an earlier kernel wrote. The mma kernels run two
    // CTAs per SM, where an early dependent shares their SMs: fp8 1x32K 29.8 -> 45.3 us.
    let threads = plan.kernel.threads();
    if plan.kernel.needs_hopper() {
        k.launch_programmatic(name, grid, threads, plan.kernel.smem() as u32, &args)?;
    } else {
        k.launch(name, grid, threads, plan.kernel.smem() as u32, &args)?;
    }
    if split {
        k.launch_programmatic("mla_decode_combine", (rows as u32, b as u32, combine_slices(plan.max_splits, rows, b, k.gpu().info.multiprocessors as usize)), 256, 0, &[
            Arg::Ptr(io.part_o.ptr),
            Arg::Ptr(io.part_lse.ptr),
            Arg::Ptr(io.split_offsets.ptr),
            Arg::Ptr(io.out.ptr),
            Arg::Ptr(io.lse.ptr),
            Arg::I32(rows as i32),
            Arg::Ptr(sync),
        ])?;
    }
    Ok(())
}

/// Buffers and shape of the generic attention kernel over a ragged set of new tokens.
#[derive(Debug, Clone, Copy)]
pub struct GenericIo {
    /// `[T, H, kv_lora + rope]` bf16 absorbed queries.
    pub q: View,
    pub cache: View,
    /// `[B, max_pages]` i32.
    pub block_tables: View,
    /// `[T]` i32 each: the token's sequence (row of block_tables) and position.
    pub token_seq: View,
    pub token_pos: View,
    /// `[T, H, kv_lora]` bf16.
    pub out: View,
    /// `[T, H]` f32, optional (NULL).
    pub lse: View,
}

#[derive(Debug, Clone, Copy)]
pub struct GenericShape {
    pub tokens: usize,
    pub seqs: usize,
    pub heads: usize,
    pub kv_lora: usize,
    pub rope: usize,
    pub page_size: usize,
    pub max_pages: usize,
    pub cache_pages: usize,
    pub scale: f32,
    pub fp8: bool,
}

pub fn mla_attention_generic(k: &Kernels, io: &GenericIo, s: &GenericShape) -> Result<()> {
    const K: &str = "mla_attention_generic";
    let d = s.kv_lora + s.rope;
    ensure(K, s.kv_lora <= 512 && d <= 1024 && s.page_size >= 1, || format!("latent {}+{} is over the kernel's limits", s.kv_lora, s.rope))?;
    let entry = super::layers::cache_entry_bytes(s.kv_lora, s.rope, s.fp8);
    let lse = if io.lse.ptr == 0 { 0 } else { io.lse.need(K, "lse", s.tokens * s.heads * 4)? };
    k.launch(K, (s.heads as u32, s.tokens as u32, 1), 128, 0, &[
        Arg::Ptr(io.q.need(K, "q", s.tokens * s.heads * d * 2)?),
        Arg::Ptr(io.cache.need(K, "cache", s.cache_pages * s.page_size * entry)?),
        Arg::Ptr(io.block_tables.need(K, "block tables", s.seqs * s.max_pages * 4)?),
        Arg::Ptr(io.token_seq.need(K, "token_seq", s.tokens * 4)?),
        Arg::Ptr(io.token_pos.need(K, "token_pos", s.tokens * 4)?),
        Arg::Ptr(io.out.need(K, "out", s.tokens * s.heads * s.kv_lora * 2)?),
        Arg::Ptr(lse),
        Arg::I32(s.heads as i32),
        Arg::I32(s.kv_lora as i32),
        Arg::I32(s.rope as i32),
        Arg::I32(s.page_size as i32),
        Arg::I32(s.max_pages as i32),
        Arg::F32(s.scale),
        Arg::I32(s.fp8 as i32),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fp8_caches_take_the_wgmma_kernels_on_hopper() {
        assert_eq!(DecodeKernel::choose(1, 128, true, true), DecodeKernel::Fp8WgmmaR64Overlap);
        assert_eq!(DecodeKernel::choose(2, 64, true, true), DecodeKernel::Fp8WgmmaR64Overlap);
        assert_eq!(DecodeKernel::choose(1, 128, false, true), DecodeKernel::Fp8MmaR16);
        assert_eq!(DecodeKernel::choose(1, 16, true, true), DecodeKernel::Fp8WgmmaT16);
        assert_eq!(DecodeKernel::choose(1, 16, false, true), DecodeKernel::Fp8MmaR16S2);
        assert!(DecodeKernel::Fp8F8MmaR64.is_fp8() && DecodeKernel::Fp8F8MmaR64.needs_hopper());
        assert_eq!(DecodeKernel::Fp8F8MmaR64.threads(), 384);
        assert_eq!(DecodeKernel::Fp8F8MmaR64Cp.threads(), 384);
        // every kernel's shared memory fits an H100's 227 KB per block
        assert!(DecodeKernel::Fp8F8MmaR64Cp.smem() <= 232_448);
    }

    #[test]
    fn arrivals_only_where_the_decode_grid_leaves_half_the_sms() {
        // H200 (132 SMs): 16 h 1x4K (64 one-tile CTAs) gains; grids of 128 CTAs lose
        let t = DecodeTarget { num_sms: 132, hopper: true };
        let pays = |lens: &[usize], heads: usize| arrivals_pay(&plan_splits(lens, 1, heads, &t, false), heads, lens.len(), t.num_sms);
        assert!(pays(&[4096], 16));
        assert!(!pays(&[4096], 128));
        assert!(!pays(&[32768], 16));
        assert!(!pays(&[4096; 64], 16));
        // the fp8 cache on Hopper (the 16-row wgmma kernel) starts the combine as bf16 does; the
        // mma kernels elsewhere have no arrivals
        let fp8 = plan_splits(&[4096], 1, 16, &t, true);
        assert!(arrivals_pay(&fp8, 16, 1, t.num_sms));
        let ampere = DecodeTarget { num_sms: 108, hopper: false };
        let fp8 = plan_splits(&[4096], 1, 16, &ampere, true);
        assert!(!arrivals_pay(&fp8, 16, 1, ampere.num_sms));
    }

    #[test]
    fn plan_matches_the_measured_choices() {
        // (132 SMs): the best plans of the H200 sweep.
        let t = DecodeTarget { num_sms: 132, hopper: true };
        let p = plan_splits(&[4096], 1, 16, &t, false);
        assert_eq!((p.kernel, p.chunk, p.max_splits), (DecodeKernel::WgmmaT16, 64, 64));
        // 1 x 32K: 128 splits of 256 (H200 sweep: 20.9 us against 23.9 for 256 splits of 128)
        let p = plan_splits(&[32768], 1, 16, &t, false);
        assert_eq!(p.chunk, 256);
        // without wgmma: the two-CTAs-per-SM mma kernel
        let no_wgmma = DecodeTarget { num_sms: 132, hopper: false };
        let p = plan_splits(&[4096], 1, 16, &no_wgmma, false);
        assert_eq!((p.kernel, p.max_splits), (DecodeKernel::MmaR16S2, 64));
        let p = plan_splits(&[4096; 64], 1, 16, &no_wgmma, false);
        assert_eq!(p.max_splits, 4);
        let p = plan_splits(&[32768], 1, 128, &t, false);
        assert_eq!(p.chunk, 512);
        // 128 heads at 4K: 64 splits of one tile (H200, bf16 partials: 12.4 us against 13.7 for 32 of 128)
        let p = plan_splits(&[4096], 1, 128, &t, false);
        assert_eq!(p.chunk, 64);
        // batch 64 and 128 on one CTA per SM: 2 splits fill the 132 SMs; 128 sequences need none
        let p = plan_splits(&[4096; 64], 1, 16, &t, false);
        assert_eq!(p.max_splits, 2);
        let p = plan_splits(&[32768; 64], 1, 16, &t, false);
        assert_eq!(p.max_splits, 2);
        let p = plan_splits(&[4096; 128], 1, 16, &t, false);
        assert_eq!(p.max_splits, 1);
        let p = plan_splits(&[4096; 64], 1, 128, &t, false);
        assert_eq!((p.kernel, p.max_splits), (DecodeKernel::WgmmaR64, 1));
        assert_eq!(p.offsets.len(), 65);
        assert!(!p.needs_combine());
    }

    /// The heuristic as first written: every candidate scores every sequence (the reference for
    /// the grouped scoring of `plan_splits`).
    fn naive_plan(lens: &[usize], heads: usize, t: &DecodeTarget) -> (usize, Vec<i32>) {
        let kernel = DecodeKernel::choose(1, heads, t.hopper, false);
        let (rt, slots) = (heads.div_ceil(kernel.rows()), t.num_sms * kernel.per_sm());
        let max_len = lens.iter().copied().max().unwrap_or(1).max(1);
        let max_ns = max_len.div_ceil(64).min(4 * slots).min(MAX_SPLITS);
        let mut cands: Vec<usize> = (1..=max_ns).collect();
        if lens.len() > 64 {
            cands = (1..=16.min(max_ns)).collect();
            let mut x = 16.0f64;
            while (x as usize) < max_ns {
                x *= 1.25;
                cands.push((x as usize).min(max_ns));
            }
        }
        let mut best: Option<(f64, usize, Vec<usize>)> = None;
        for ns in cands {
            let chunk = max_len.div_ceil(ns).div_ceil(64) * 64;
            let splits: Vec<usize> = lens.iter().map(|&l| l.div_ceil(chunk).max(1)).collect();
            let ctas = rt * splits.iter().sum::<usize>();
            let tile = if ctas.min(slots) > t.num_sms { 1.75 } else { 1.0 };
            let mut cost = ctas.div_ceil(slots) as f64 * (chunk as f64 / 64.0 * tile + 2.5);
            let multi: usize = splits.iter().filter(|&&s| s > 1).sum();
            if multi > 0 {
                cost += 1.25 + (multi * heads * 512 * 4) as f64 / (64.0 * 1152.0 * t.num_sms as f64);
            }
            if best.as_ref().is_none_or(|b| cost < b.0 - 1e-9) {
                best = Some((cost, chunk, splits));
            }
        }
        let (_, chunk, splits) = best.unwrap_or((0.0, 64, vec![1; lens.len()]));
        let mut offsets = vec![0i32];
        for s in splits {
            offsets.push(offsets.last().copied().unwrap_or(0) + s as i32);
        }
        (chunk, offsets)
    }

    #[test]
    fn grouped_plan_matches_the_per_sequence_scoring() {
        let mut x = 0x9e3779b97f4a7c15u64;
        let mut next = |m: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % m as u64) as usize
        };
        for &t in &[DecodeTarget { num_sms: 132, hopper: true }, DecodeTarget { num_sms: 78, hopper: false }] {
            for trial in 0..200 {
                let b = 1 + next(if trial % 4 == 0 { 200 } else { 40 });
                let lens: Vec<usize> = match trial % 3 {
                    0 => vec![1 + next(40000); b],                  // uniform (graph buckets)
                    1 => (0..b).map(|_| 1 + next(40000)).collect(), // ragged
                    _ => (0..b).map(|_| [1, 64, 65, 4096, 32768][next(5)]).collect(),
                };
                for heads in [16, 128] {
                    let p = plan_splits(&lens, 1, heads, &t, false);
                    let (chunk, offsets) = naive_plan(&lens, heads, &t);
                    assert_eq!((p.chunk, &p.offsets), (chunk, &offsets), "lens {lens:?} heads {heads}");
                    let widest = offsets.windows(2).map(|w| (w[1] - w[0]) as usize).max().unwrap_or(1);
                    assert_eq!(p.max_splits, widest.max(1));
                }
            }
        }
    }

    #[test]
    fn combine_slices_follow_splits_and_grid() {
        // one sequence of 16 rows: 2 groups per slice, each summing every (2 x slices)-th split
        let by_splits = [1, 2, 3, 4, 5, 8, 9, 16, 64, 1024].map(|n| combine_slices(n, 16, 1, 132));
        assert_eq!(by_splits, [1, 1, 2, 2, 4, 4, 8, 8, 8, 8]);
        // more rows: about 4 CTAs per SM (H200 measurements)
        assert_eq!(combine_slices(64, 128, 1, 132), 4);
        assert_eq!(combine_slices(4, 16, 64, 132), 1);
        assert_eq!(combine_slices(4, 128, 64, 132), 1);
    }
}
