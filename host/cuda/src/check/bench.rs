//! Decode-kernel benchmark on the shapes: time (CUDA-graph replays, median), effective
//! bandwidth over the latent bytes read, TFLOP/s, beside the device-to-device copy bandwidth
//! measured in the same run. Input sets rotate so small shapes are not served from L2.

use super::{bf16s, Rng};
use crate::gpu::DeviceBuffer;
use crate::graph::{copy_bandwidth, Graph, Timer};
use crate::kernels::decode::{self, plan_splits, DecodeIo, DecodeShape, GenericIo, GenericShape};
use crate::kernels::layers::cache_entry_bytes;
use crate::kernels::View;
use crate::module::Kernels;
use crate::Result;
use std::fmt::Write;

#[derive(Debug, Clone)]
pub struct BenchRow {
    pub kernel: String,
    pub heads: usize,
    pub batch: usize,
    pub ctx: usize,
    pub splits: usize,
    pub us: f64,
    pub gbps: f64,
    pub tflops: f64,
}

fn v(b: &DeviceBuffer) -> View {
    View::of(b)
}

/// Times one decode configuration: the tiled kernels, or (`generic`) the CUDA-core kernel, over
/// a bf16 or an fp8 cache.
fn bench_shape(k: &Kernels, rng: &mut Rng, heads: usize, batch: usize, ctx: usize, fp8: bool, generic: bool) -> Result<BenchRow> {
    let gpu = k.gpu();
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
    let lens = vec![ctx; batch];
    let plan = plan_splits(&lens, 1, heads, gpu.info.multiprocessors as usize, gpu.is_hopper(), fp8);
    let q = DeviceBuffer::from_slice(gpu, &bf16s(&rng.vec(batch * heads * d, 1.0)))?;
    let d_table = DeviceBuffer::from_slice(gpu, &table)?;
    let d_lens = DeviceBuffer::from_slice(gpu, &lens.iter().map(|&l| l as i32).collect::<Vec<_>>())?;
    let d_splits = DeviceBuffer::from_slice(gpu, &plan.offsets)?;
    let out = DeviceBuffer::alloc(gpu, batch * heads * 512 * 2)?;
    let lse = DeviceBuffer::alloc(gpu, batch * heads * 4)?;
    let slots = plan.total_splits().max(1);
    let po = DeviceBuffer::alloc(gpu, slots * heads * 512 * 4)?;
    let pl = DeviceBuffer::alloc(gpu, slots * heads * 4)?;
    let tok_seq: Vec<i32> = (0..batch as i32).collect();
    let tok_pos = vec![ctx as i32 - 1; batch];
    let (d_seq, d_pos) = (DeviceBuffer::from_slice(gpu, &tok_seq)?, DeviceBuffer::from_slice(gpu, &tok_pos)?);
    let scale = 1.0 / (192f32).sqrt();
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
                };
                let s = DecodeShape { batch, q_len: 1, heads, page_size: page, max_pages: pages_per_seq, cache_pages: pages, scale };
                decode::mla_decode(k, &io, &s, &plan)
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
    // graph of `reps` launches cycling through the sets
    let reps = (2000.0 / (set_bytes as f64 / 2e6).max(1.0)).clamp(4.0, 200.0) as usize;
    launch(&caches[0])?;
    gpu.synchronize()?;
    let graph = Graph::capture(gpu, || (0..reps).try_for_each(|i| launch(&caches[i % sets])))?;
    let timer = Timer::new(gpu)?;
    graph.launch()?;
    let mut times: Vec<f64> = (0..7).map(|_| timer.time(|| graph.launch()).map(|ms| ms as f64 * 1e3 / reps as f64)).collect::<Result<_>>()?;
    times.sort_by(f64::total_cmp);
    let us = times[times.len() / 2];
    let bytes = (batch * ctx * entry) as f64;
    let flops = (batch * heads * ctx * 2 * (576 + 512)) as f64;
    let kernel = match (generic, fp8) {
        (false, _) => plan.kernel.name().trim_start_matches("mla_decode_").to_string(),
        (true, true) => "generic_fp8".into(),
        (true, false) => "generic_bf16".into(),
    };
    Ok(BenchRow { kernel, heads, batch, ctx, splits: if generic { 1 } else { plan.max_splits }, us, gbps: bytes / us * 1e-3, tflops: flops / us * 1e-6 })
}

/// The shapes (16/128 heads, batch 1/64/128, context 4K/32K, page 64) plus the cache
/// dtype comparison; returns (copy GB/s, rows, a markdown table, JSON lines).
pub fn run(k: &Kernels, seed: u64, with_generic: bool) -> Result<(f64, Vec<BenchRow>, String, String)> {
    let mut rng = Rng::new(seed);
    let copy = copy_bandwidth(k.gpu(), 1 << 30)? / 1e9;
    let mut rows = Vec::new();
    for &heads in &[16usize, 128] {
        for &batch in &[1usize, 64, 128] {
            for &ctx in &[4096usize, 32768] {
                rows.push(bench_shape(k, &mut rng, heads, batch, ctx, false, false)?);
                rows.push(bench_shape(k, &mut rng, heads, batch, ctx, true, false)?);
                if with_generic && heads == 16 && ctx == 4096 && batch == 64 {
                    rows.push(bench_shape(k, &mut rng, heads, batch, ctx, false, true)?);
                }
            }
        }
    }
    let mut table = format!("{} | copy {copy:.0} GB/s\n| kernel | heads | batch | ctx | splits | us | GB/s | % copy | TFLOP/s |\n|---|---|---|---|---|---|---|---|---|\n", k.gpu().info.name);
    let mut json = String::new();
    for r in &rows {
        let _ = writeln!(
            table,
            "| {} | {} | {} | {} | {} | {:.1} | {:.0} | {:.1} | {:.1} |",
            r.kernel, r.heads, r.batch, r.ctx, r.splits, r.us, r.gbps, 100.0 * r.gbps / copy, r.tflops
        );
        let _ = writeln!(
            json,
            "{{\"kernel\":\"{}\",\"heads\":{},\"batch\":{},\"ctx\":{},\"splits\":{},\"us\":{:.3},\"gbps\":{:.1},\"tflops\":{:.2},\"copy_gbps\":{:.1}}}",
            r.kernel, r.heads, r.batch, r.ctx, r.splits, r.us, r.gbps, r.tflops, copy
        );
    }
    Ok((copy, rows, table, json))
}
