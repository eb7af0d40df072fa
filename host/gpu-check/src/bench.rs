//! Decode-kernel benchmark on the issue's shapes: time (CUDA-graph replays, median), effective
//! bandwidth over the latent bytes read, TFLOP/s, beside the device-to-device copy bandwidth
//! measured in the same run. Input sets rotate so small shapes are not served from L2.

use super::{bf16s, v, Rng};
use mlahost_cuda::gpu::{DeviceBuffer, Gpu};
use mlahost_cuda::graph::{copy_bandwidth, Graph, Timer};
use mlahost_cuda::kernels::decode::{self, plan_splits, DecodeIo, DecodeKernel, DecodeShape, DecodeTarget, GenericIo, GenericShape, SplitPlan};
use mlahost_cuda::kernels::layers::cache_entry_bytes;
use mlahost_cuda::kernels::View;
use mlahost_cuda::module::Kernels;
use mlahost_cuda::Result;
use std::fmt::Write;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct BenchRow {
    pub kernel: String,
    pub heads: usize,
    pub batch: usize,
    pub ctx: usize,
    pub splits: usize,
    pub chunk: usize,
    pub us: f64,
    pub gbps: f64,
    pub tflops: f64,
    /// Where an FP8-math decode kernel's time goes, when the kernels carry the trace
    /// (`trace::f8_phases`).
    pub phases: Option<String>,
}


/// A decode launch to time: `heads` query heads, `q_len` queries per sequence, one cached length
/// per sequence (ragged allowed).
pub struct DecodeCase {
    pub heads: usize,
    pub q_len: usize,
    pub lens: Vec<usize>,
}

impl DecodeCase {
    fn uniform(heads: usize, batch: usize, ctx: usize) -> Self {
        Self { heads, q_len: 1, lens: vec![ctx; batch] }
    }

    /// ThunderMLA's published speculative case (issue 28): 16 heads, 4 sequences of 4,641 /
    /// 45,118 / 1,730 / 1,696 cached tokens, 4 query tokens each (FlashMLA 52 µs, ThunderMLA 41 µs
    /// on an H100 SXM).
    pub fn thunder() -> Self {
        Self { heads: 16, q_len: 4, lens: vec![4641, 45118, 1730, 1696] }
    }
}

/// Times one decode case: the tiled kernels, or (`generic`) the CUDA-core kernel, over a bf16
/// or an fp8 cache; one row per plan (`None`: the heuristic's; (kernel, chunk): a fixed one),
/// all over the same inputs. `arrivals`: whether the combine starts on its rows' last split
/// instead of on the decode grid's end (`None`: as the engine decides, `decode::arrivals_pay`).
/// Rows name the batch and the longest context; bytes and FLOPs count every sequence's own.
#[allow(clippy::too_many_arguments)]
fn bench_case(
    k: &Kernels,
    rng: &mut Rng,
    target: &DecodeTarget,
    case: &DecodeCase,
    fp8: bool,
    generic: bool,
    plans: &[Option<(DecodeKernel, usize)>],
    arrivals: Option<bool>,
) -> Result<Vec<BenchRow>> {
    let gpu = k.gpu();
    let DecodeCase { heads, q_len, ref lens } = *case;
    let (batch, ctx) = (lens.len(), lens.iter().copied().max().unwrap_or(1).max(1));
    let (page, d) = (64usize, 576usize);
    let entry = cache_entry_bytes(512, 64, fp8);
    let pages_per_seq = ctx.div_ceil(page);
    let set_bytes = batch * pages_per_seq * page * entry;
    let sets = (256usize << 20).div_ceil(set_bytes).clamp(1, 32);
    let pages = batch * pages_per_seq;
    // one cache per set, random finite values (bf16 of small magnitude: as fp8 bytes these are
    // finite codes and finite scales too)
    let fill: Vec<u16> = bf16s(&rng.vec(pages * page * entry / 2, 0.5));
    let caches: Vec<DeviceBuffer> = (0..sets).map(|_| DeviceBuffer::from_slice(gpu, &fill)).collect::<Result<_>>()?;
    let mut table: Vec<i32> = (0..pages as i32).collect();
    rng.shuffle(&mut table);
    let plans: Vec<SplitPlan> = plans
        .iter()
        .map(|fixed| match *fixed {
            None => plan_splits(lens, q_len, heads, target, fp8),
            Some((kernel, chunk)) => SplitPlan::with_chunk(kernel, chunk, ctx.div_ceil(chunk), lens),
        })
        .collect();
    let rows_per_seq = q_len * heads;
    let q = DeviceBuffer::from_slice(gpu, &bf16s(&rng.vec(batch * rows_per_seq * d, 1.0)))?;
    let d_table = DeviceBuffer::from_slice(gpu, &table)?;
    let d_lens = DeviceBuffer::from_slice(gpu, &lens.iter().map(|&l| l as i32).collect::<Vec<_>>())?;
    let out = DeviceBuffer::alloc(gpu, batch * rows_per_seq * 512 * 2)?;
    let lse = DeviceBuffer::alloc(gpu, batch * rows_per_seq * 4)?;
    let slots = plans.iter().map(SplitPlan::total_splits).max().unwrap_or(1).max(1);
    let po = DeviceBuffer::alloc(gpu, slots * rows_per_seq * 512 * 2)?;
    let pl = DeviceBuffer::alloc(gpu, slots * rows_per_seq * 4)?;
    // the generic kernel: one query token per sequence, at its last position
    let tok_seq: Vec<i32> = (0..batch as i32).collect();
    let tok_pos: Vec<i32> = lens.iter().map(|&l| l as i32 - 1).collect();
    let (d_seq, d_pos) = (DeviceBuffer::from_slice(gpu, &tok_seq)?, DeviceBuffer::from_slice(gpu, &tok_pos)?);
    let sync = DeviceBuffer::from_slice(gpu, &vec![0i32; decode::sync_words(batch, rows_per_seq)])?;
    let scale = 1.0 / (192f32).sqrt();
    let mut rows = Vec::new();
    for plan in &plans {
        let d_splits = DeviceBuffer::from_slice(gpu, &plan.offsets)?;
        let launch = |cache: &DeviceBuffer| -> Result<()> {
            match generic {
                false => {
                    let io = DecodeIo {
                        q: v(&q),
                        cache: v(cache),
                        block_table: v(&d_table),
                        seq_lens: v(&d_lens),
                        split_offsets: v(&d_splits),
                        out: v(&out),
                        lse: v(&lse),
                        part_o: v(&po),
                        part_lse: v(&pl),
                        sync: v(&sync),
                        arrivals,
                    };
                    let s = DecodeShape { batch, q_len, heads, page_size: page, max_pages: pages_per_seq, cache_pages: pages, scale };
                    decode::mla_decode(k, &io, &s, plan)
                }
                true => {
                    let io = GenericIo {
                        q: v(&q),
                        cache: v(cache),
                        block_tables: v(&d_table),
                        token_seq: v(&d_seq),
                        token_pos: v(&d_pos),
                        out: v(&out),
                        lse: View::NULL,
                    };
                    let s = GenericShape {
                        tokens: batch,
                        seqs: batch,
                        heads,
                        kv_lora: 512,
                        rope: 64,
                        page_size: page,
                        max_pages: pages_per_seq,
                        cache_pages: pages,
                        scale,
                        fp8,
                    };
                    decode::mla_attention_generic(k, &io, &s)
                }
            }
        };
        let us = median_us(gpu, set_bytes, &caches, &launch)?;
        let name = plan.kernel.name();
        // (the ping-pong kernels write no phase trace)
        let phases = match (generic, name.contains("f8mma") && !name.ends_with("_pp"), name.contains("wgmma_r64")) {
            (false, true, _) => super::trace::f8_phases(k, &|| launch(&caches[0]))?,
            (false, _, true) => super::trace::r64_phases(k, plan.chunk.min(ctx).div_ceil(64), &|| launch(&caches[0]))?,
            _ => None,
        };
        let tokens: usize = lens.iter().sum();
        let bytes = (tokens * entry) as f64;
        let flops = (rows_per_seq * tokens * 2 * (576 + 512)) as f64;
        let kernel = match (generic, fp8) {
            (false, _) => plan.kernel.name().trim_start_matches("mla_decode_").to_string(),
            (true, true) => "generic_fp8".into(),
            (true, false) => "generic_bf16".into(),
        };
        let (splits, chunk) = if generic { (1, ctx) } else { (plan.max_splits, plan.chunk) };
        rows.push(BenchRow { kernel, heads, batch, ctx, splits, chunk, us, gbps: bytes / us * 1e-3, tflops: flops / us * 1e-6, phases });
    }
    Ok(rows)
}

/// Median time of one launch in µs: a CUDA graph of many launches cycling through the input sets
/// (`caches`, so that small shapes are not served from L2), replayed 7 times.
fn median_us(gpu: &Arc<Gpu>, set_bytes: usize, caches: &[DeviceBuffer], launch: &dyn Fn(&DeviceBuffer) -> Result<()>) -> Result<f64> {
    let reps = (2000.0 / (set_bytes as f64 / 2e6).max(1.0)).clamp(4.0, 200.0) as usize;
    launch(&caches[0])?;
    gpu.synchronize()?;
    let graph = Graph::capture(gpu, || (0..reps).try_for_each(|i| launch(&caches[i % caches.len()])))?;
    let timer = Timer::new(gpu)?;
    graph.launch()?;
    let mut times: Vec<f64> = (0..7).map(|_| timer.time(|| graph.launch()).map(|ms| ms as f64 * 1e3 / reps as f64)).collect::<Result<_>>()?;
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// The issue's shapes (16/128 heads, batch 1/64/128, context 4K/32K, page 64) plus the cache
/// dtype comparison; with `sweep`, batch 1 and 64 under fixed (kernel, chunk) plans as well; with
/// `only_batch`, the shapes of that batch size alone. Returns (copy GB/s, rows, a markdown table,
/// JSON lines of the main rows).
pub fn run(k: &Kernels, seed: u64, with_generic: bool, sweep: bool, only_batch: Option<usize>) -> Result<(f64, Vec<BenchRow>, String, String)> {
    let shapes = || issue_shapes().filter(move |&(_, b, _)| only_batch.is_none_or(|o| o == b));
    let mut rng = Rng::new(seed);
    let target = DecodeTarget::of(k.gpu());
    let copy = copy_bandwidth(k.gpu(), 1 << 30)? / 1e9;
    let mut rows = Vec::new();
    for (heads, batch, ctx) in shapes() {
        // bf16 cache: the heuristic's kernel, and at 128 heads on Hopper the ping-pong kernel at its chunk
        let mut bf16_plans = vec![None];
        if target.hopper && heads == 128 {
            bf16_plans.push(Some((DecodeKernel::WgmmaPingPong, plan_splits(&vec![ctx; batch], 1, heads, &target, false).chunk)));
        }
        rows.extend(bench_case(k, &mut rng, &target, &DecodeCase::uniform(heads, batch, ctx), false, false, &bf16_plans, None)?);
        // fp8 cache: the heuristic's kernel, and on Hopper the variants not chosen (16 rows: the mma
        // kernel; 64 rows: expanding between tiles, and the FP8-math kernels) at the bf16 kernel's chunk
        let mut fp8_plans = vec![None];
        if target.hopper {
            let chunk = plan_splits(&vec![ctx; batch], 1, heads, &target, false).chunk;
            if heads == 16 {
                fp8_plans.push(Some((DecodeKernel::Fp8MmaR16S2, chunk)));
            } else {
                fp8_plans.push(Some((DecodeKernel::Fp8WgmmaR64, chunk)));
                fp8_plans.push(Some((DecodeKernel::Fp8WgmmaPingPong, chunk)));
                fp8_plans.push(Some((DecodeKernel::Fp8F8MmaR64, chunk)));
                fp8_plans.push(Some((DecodeKernel::Fp8F8MmaR64Cp, chunk)));
                fp8_plans.push(Some((DecodeKernel::Fp8F8MmaPingPong, chunk)));
                // one scale per token: what the FP8 math would cost if the writers stored so
                fp8_plans.push(Some((DecodeKernel::Fp8F8MmaR64One, chunk)));
            }
        }
        rows.extend(bench_case(k, &mut rng, &target, &DecodeCase::uniform(heads, batch, ctx), true, false, &fp8_plans, None)?);
        if with_generic && heads == 16 && ctx == 4096 && batch == 64 {
            rows.extend(bench_case(k, &mut rng, &target, &DecodeCase::uniform(heads, batch, ctx), false, true, &[None], None)?);
        }
    }
    let mut table = format!("{} | copy {copy:.0} GB/s\n", k.gpu().info.name);
    table += &rows_table(&rows, copy);
    let traced: Vec<String> = rows.iter().filter_map(|r| r.phases.as_ref().map(|p| format!("- {} {}h batch {} ctx {}: {p}", r.kernel, r.heads, r.batch, r.ctx))).collect();
    if !traced.is_empty() {
        table += "\n### where the 64-row kernels' time goes (one CTA; a -DMLA_F8_TRACE / -DR64_PROF build, whose timings above include the trace)\n";
        table += &traced.join("\n");
        table += "\n";
    }
    if only_batch.is_none_or(|b| b == 1) {
        // issue 28's ragged speculative case (batch = sequences, ctx = the longest), a latency
        // case: timed with the batch-1 rows too
        // (beside the heuristic's plan, on Hopper, the ping-pong kernel at the same chunk)
        let case = DecodeCase::thunder();
        let mut plans = vec![None];
        if target.hopper {
            let plan = plan_splits(&case.lens, case.q_len, case.heads, &target, false);
            plans.push(Some((DecodeKernel::WgmmaPingPong, plan.chunk)));
        }
        let thunder = bench_case(k, &mut rng, &target, &case, false, false, &plans, None)?;
        table += "\n### ThunderMLA's case: 16 heads, 4 query tokens over 4,641 / 45,118 / 1,730 / 1,696 cached (FlashMLA 52 us, ThunderMLA 41 us on an H100 SXM)\n";
        table += &rows_table(&thunder, copy);
    }
    if k.programmatic() {
        // what programmatic dependent launch gains: the bf16 shapes again with plain launches
        k.set_programmatic(false);
        let timed: Vec<Result<Vec<BenchRow>>> =
            shapes().map(|(heads, batch, ctx)| bench_case(k, &mut rng, &target, &DecodeCase::uniform(heads, batch, ctx), false, false, &[None], None)).collect();
        k.set_programmatic(true); // back on before any error returns
        let mut plain = timed.into_iter().collect::<Result<Vec<_>>>()?.concat();
        plain.iter_mut().for_each(|r| r.kernel += " (no PDL)");
        table += "\n### the same bf16 shapes without programmatic dependent launch\n";
        table += &rows_table(&plain, copy);
    }
    // what the split arrivals gain or lose: batch 1 with the other choice than the engine's
    let sms = k.gpu().info.multiprocessors as usize;
    let mut other = Vec::new();
    for (heads, batch, ctx) in shapes().filter(|&(_, batch, _)| batch == 1) {
        let plan = plan_splits(&vec![ctx; batch], 1, heads, &target, false);
        let chosen = decode::arrivals_pay(&plan, heads, batch, sms);
        let mut r = bench_case(k, &mut rng, &target, &DecodeCase::uniform(heads, batch, ctx), false, false, &[None], Some(!chosen))?;
        r.iter_mut().for_each(|r| r.kernel += if chosen { " (combine after the grid)" } else { " (on arrivals)" });
        other.extend(r);
    }
    table += "\n### the bf16 batch-1 shapes with the other start of the combine (after the decode grid / on split arrivals)\n";
    table += &rows_table(&other, copy);
    let mut json = String::new();
    for r in &rows {
        let _ = writeln!(
            json,
            "{{\"kernel\":\"{}\",\"heads\":{},\"batch\":{},\"ctx\":{},\"splits\":{},\"chunk\":{},\"us\":{:.3},\"gbps\":{:.1},\"tflops\":{:.2},\"copy_gbps\":{:.1}}}",
            r.kernel, r.heads, r.batch, r.ctx, r.splits, r.chunk, r.us, r.gbps, r.tflops, copy
        );
    }
    if sweep {
        let mut swept = Vec::new();
        let mut variants = vec![(16usize, DecodeKernel::MmaR16S2), (16, DecodeKernel::MmaR16), (128, DecodeKernel::choose(1, 128, target.hopper, false))];
        if target.hopper {
            variants.push((16, DecodeKernel::WgmmaT16));
        }
        for (heads, kernel) in variants {
            for (batch, ctx) in [(1usize, 4096usize), (1, 32768), (64, 4096), (64, 32768)] {
                if (batch == 64 && kernel == DecodeKernel::MmaR16) || only_batch.is_some_and(|o| o != batch) {
                    continue;
                }
                let mut plans = vec![None];
                for chunk in [64usize, 128, 256, 512, 1024, 4096] {
                    let splits = ctx.div_ceil(chunk);
                    // batch 64 fills the GPU with few splits
                    if splits <= 1024 && (batch == 1 || splits <= 8) {
                        plans.push(Some((kernel, chunk)));
                    }
                }
                swept.extend(bench_case(k, &mut rng, &target, &DecodeCase::uniform(heads, batch, ctx), false, false, &plans, None)?);
            }
        }
        table += "\n### batch 1 and 64 under fixed plans (first row of each shape: the heuristic's)\n";
        table += &rows_table(&swept, copy);
        rows.extend(swept);
    }
    Ok((copy, rows, table, json))
}

/// The issue's (heads, batch, context) shapes, in table order.
fn issue_shapes() -> impl Iterator<Item = (usize, usize, usize)> {
    [16usize, 128].into_iter().flat_map(|h| [1usize, 64, 128].into_iter().flat_map(move |b| [4096usize, 32768].map(|c| (h, b, c))))
}

fn rows_table(rows: &[BenchRow], copy: f64) -> String {
    let mut t = String::from("| kernel | heads | batch | ctx | chunk | splits | us | GB/s | % copy | TFLOP/s |\n|---|---|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} | {:.1} | {:.0} | {:.1} | {:.1} |",
            r.kernel, r.heads, r.batch, r.ctx, r.chunk, r.splits, r.us, r.gbps, 100.0 * r.gbps / copy, r.tflops
        );
    }
    t
}

#[cfg(test)]
mod tests {
    #[test]
    fn issue_shapes_in_table_order() {
        let shapes: Vec<_> = super::issue_shapes().collect();
        assert_eq!(shapes.len(), 12);
        assert_eq!(&shapes[..3], &[(16, 1, 4096), (16, 1, 32768), (16, 64, 4096)]);
        assert_eq!(shapes[11], (128, 128, 32768));
    }
}
