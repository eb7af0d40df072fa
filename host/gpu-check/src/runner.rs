//! The whole GPU check as one call (`mlahost gpu-check`): kernels, end to end, and optionally
//! the decode benchmark.

use super::{bench, e2e, e2e_fp8, e2e_tp, kernels, profile, report, Check};
use mlahost_cuda::{blas::Blas, Gpu, Kernels, Result};
use mlahost_engine::{KvCacheDtype, LoadedModel};
use std::path::PathBuf;

#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    pub ordinal: usize,
    /// Directory with tiny-v2-lite, tiny-v2, tiny-v3-fp8 and their goldens.
    pub fixtures: PathBuf,
    /// Extra checkpoints compared with the CPU engine (e.g. a random 512+64-latent model).
    pub models: Vec<PathBuf>,
    pub bench: bool,
    pub bench_only: bool,
    pub bench_json: Option<PathBuf>,
    /// Also time batch 1 and 64 under fixed (kernel, chunk) split plans.
    pub sweep: bool,
    /// Benchmark only the shapes of this batch size.
    pub bench_batch: Option<usize>,
    /// Time the FP8 block-scaled linears against cuBLAS bf16 on V3's shapes.
    pub bench_fp8: bool,
    /// Time the step's bf16 GEMM kernels beside the ones they would replace: the grouped expert
    /// GEMMs at decode and prefill sizes, the dense linears of a few rows against cuBLAS.
    pub bench_gemm: bool,
    /// Only the end-to-end rows of `models` (no kernel checks, no fixtures).
    pub models_only: bool,
    /// Only what checks FP8 weights: the FP8 kernel checks and the FP8-weight rows (models also
    /// get their bf16 row, the baseline).
    pub fp8_only: bool,
    /// Of the --model checkpoints, only the split layouts against the whole model.
    pub layouts_only: bool,
    /// Of them, only the layouts over NCCL (a node with 8 GPUs).
    pub nccl_only: bool,
    /// Only the kernel checks (no end-to-end rows).
    pub kernels_only: bool,
    /// Only the end-to-end rows (fixtures and --model checkpoints; no kernel checks).
    pub e2e_only: bool,
    pub seed: u64,
}


/// Runs everything, printing tables; returns whether every check passed.
pub fn run(o: &CheckOptions) -> Result<bool> {
    // The ranks emulated in graphs wait on the device for each other, each on its own stream:
    // give every stream a hardware queue of its own (read when the first context is made).
    if std::env::var_os("CUDA_DEVICE_MAX_CONNECTIONS").is_none() {
        std::env::set_var("CUDA_DEVICE_MAX_CONNECTIONS", "32");
    }
    let gpu = Gpu::open(o.ordinal)?;
    println!(
        "device: {} (sm_{}{}, {} SMs, {:.1} GiB), seed {}",
        gpu.info.name,
        gpu.info.compute_capability.0,
        gpu.info.compute_capability.1,
        gpu.info.multiprocessors,
        gpu.info.total_memory as f64 / (1u64 << 30) as f64,
        o.seed
    );
    let started = std::time::Instant::now();
    let k = Kernels::load(&gpu)?;
    println!("kernels ready in {:.2} s", started.elapsed().as_secs_f64());
    let blas = Blas::new(&gpu)?;
    let mut all_ok = true;
    if o.models_only || o.layouts_only {
        let (ok, table) = report("## end to end (given models)", &end_to_end(o)?);
        println!("{table}");
        all_ok &= ok;
    } else if o.fp8_only {
        let mut rng = super::Rng::new(o.seed);
        let mut checks = kernels::fp8_cache_decode(&k, &mut rng);
        checks.extend(super::fp8::run_all(&k, &mut rng));
        let (ok, table) = report("## FP8 kernels (decode over an fp8 cache, linears) vs naive references", &checks);
        println!("{table}");
        let (ok2, table) = report("## end to end (FP8 weights)", &end_to_end(o)?);
        println!("{table}");
        all_ok &= ok && ok2;
    } else if !o.bench_only {
        if !o.e2e_only {
            let checks = kernels::run_all(&k, &blas, o.seed)?;
            let (ok, table) = report("## kernels vs naive references", &checks);
            println!("{table}");
            all_ok &= ok;
        }
        if !o.kernels_only {
            let e2e_checks = end_to_end(o)?;
            let (ok, table) = report("## end to end", &e2e_checks);
            println!("{table}");
            all_ok &= ok;
        }
    }
    if o.bench_fp8 {
        println!("## FP8 linears vs cuBLAS bf16 (V3 shapes)\n{}", super::bench_fp8::run(&k, &blas, o.seed)?);
    }
    if o.bench_gemm {
        println!("## the step's GEMM kernels beside the ones they would replace\n{}", super::bench_gemm::run(&k, &blas, o.seed)?);
    }
    // --bench-only alone means the decode benchmark; beside another benchmark, only that one
    if o.bench || (o.bench_only && !o.bench_fp8 && !o.bench_gemm) {
        let (_, _, table, json) = bench::run(&k, o.seed, true, o.sweep, o.bench_batch)?;
        println!("## decode kernel benchmark\n{table}");
        if let Some(p) = &o.bench_json {
            if let Err(e) = std::fs::write(p, json) {
                eprintln!("could not write {}: {e}", p.display());
            }
        }
    }
    Ok(all_ok)
}

fn end_to_end(o: &CheckOptions) -> Result<Vec<Check>> {
    let mut out = Vec::new();
    let load = |dir: &PathBuf| LoadedModel::load(dir, None);
    // each row is also printed when it is done (stderr), so a run cut off by a time limit keeps them
    let mut one = |name: String, r: Result<Check>| {
        let c = r.unwrap_or_else(|e| Check { name, error: f64::INFINITY, tolerance: 0.0, detail: format!("error: {e}"), informational: false });
        eprintln!("{}", c.row());
        out.push(c)
    };
    let fixtures: &[&str] = if o.models_only { &[] } else { &["tiny-v2-lite", "tiny-v2", "tiny-v3-fp8"] };
    for &name in fixtures {
        let dir = o.fixtures.join(name);
        let model = load(&dir)?;
        if o.fp8_only {
            one(format!("{name} fp8 weights vs cpu"), e2e_fp8::against_cpu(&model, o.ordinal, 64, KvCacheDtype::Bf16, o.seed, 24));
            one(format!("{name} fp8 rounding floor"), e2e_fp8::rounding_floor(&model, 64, o.seed, 24));
            one(format!("{name} fp8 streamed from the file"), e2e_fp8::streamed_equals_uploaded(&model, o.ordinal, o.seed));
            match e2e_fp8::by_depth(&model, o.ordinal, o.seed, 24) {
                Ok(rows) => rows.into_iter().for_each(|c| one(c.name.clone(), Ok(c))),
                Err(e) => one(format!("{name} fp8 weights by depth"), Err(e)),
            }
            continue;
        }
        for (tp, ep) in [(2, false), (4, false), (2, true), (4, true)] {
            one(format!("{name} TP={tp} EP={ep} emulated"), e2e_tp::split_against_whole(&model, o.ordinal, tp, ep, o.seed, 24));
        }
        // data-parallel attention: groups of 1 and 2 ranks, the experts exchanged or per group
        for (tp, dp, ep, slots) in [(1, 2, true, false), (1, 2, true, true), (2, 2, true, false), (1, 2, false, false)] {
            one(format!("{name} DP={dp} TP={tp} EP={ep} emulated"), e2e_tp::split_against_whole_dp(&model, o.ordinal, tp, dp, ep, slots, o.seed, 24));
        }
        if name == "tiny-v2-lite" {
            // the graph paths with collectives inside, on one GPU: TP steps, DP steps in slots
            for (tp, dp, slots) in [(2, 1, false), (1, 2, true)] {
                one(format!("{name} DP={dp} TP={tp} in graphs"), e2e_tp::split_in_graphs(&model, o.ordinal, tp, dp, true, slots, o.seed, 24));
            }
            one(format!("{name} NCCL one rank"), e2e_tp::nccl_single_rank(&model, o.ordinal, o.seed, 24));
            // with two GPUs: data-parallel steps over NCCL, which replay graphs in slots
            if mlahost_cuda::gpu::device_count() >= 2 {
                for slots in [false, true] {
                    one(format!("{name} DP=2 TP=1 EP NCCL slots={slots}"), e2e_tp::split_over_gpus(&model, 1, 2, true, slots, o.seed, 24));
                }
            }
        }
        if o.layouts_only {
            continue;
        }
        let golden: serde_json::Value = std::fs::read_to_string(dir.join("golden.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(serde_json::Value::Null);
        for page in [16, 64] {
            one(format!("{name} goldens"), e2e::against_goldens(&model, &golden, Some(o.ordinal), page));
        }
        one(format!("{name} cpu-bf16 goldens"), e2e::against_goldens(&model, &golden, None, 64));
        let strict = model.weights().is_ok_and(|w| e2e::weights_are_bf16(&w));
        one(format!("{name} device sampling"), e2e::device_sampling_matches_host(&model, o.ordinal, o.seed));
        one(format!("{name} kernel profile"), profile::profile_leaves_the_run_unchanged(&model, o.ordinal, o.seed));
        one(format!("{name} vs cpu"), e2e::against_cpu(&model, o.ordinal, 64, KvCacheDtype::Bf16, o.seed, 24, strict));
        one(format!("{name} fp8 vs cpu"), e2e::against_cpu(&model, o.ordinal, 16, KvCacheDtype::Fp8, o.seed, 24, strict));
        one(format!("{name} fp8 weights vs cpu"), e2e_fp8::against_cpu(&model, o.ordinal, 64, KvCacheDtype::Bf16, o.seed, 24));
    }
    for dir in &o.models {
        let model = load(dir)?;
        if !o.layouts_only {
            one(format!("{} vs cpu", dir.display()), e2e::against_cpu(&model, o.ordinal, 64, KvCacheDtype::Bf16, o.seed, 16, true));
            if !o.fp8_only {
                one(format!("{} fp8 vs cpu", dir.display()), e2e::against_cpu(&model, o.ordinal, 64, KvCacheDtype::Fp8, o.seed, 16, true));
            }
            one(format!("{} fp8 weights vs cpu", dir.display()), e2e_fp8::against_cpu(&model, o.ordinal, 64, KvCacheDtype::Bf16, o.seed, 16));
        }
        if !o.fp8_only && !o.nccl_only {
            // the node's two layouts with their decode steps replayed from graphs, as over NCCL
            one(format!("{} DP=8 slots in graphs", dir.display()), e2e_tp::split_in_graphs(&model, o.ordinal, 1, 8, true, true, o.seed, 16));
            one(format!("{} TP=8 in graphs", dir.display()), e2e_tp::split_in_graphs(&model, o.ordinal, 8, 1, false, false, o.seed, 16));
            // the node's data-parallel layouts: 8 attention groups of 1 rank, 4 of 2, experts over all
            // (with one rank per group, also exchanging the MoE rows in per-rank slots)
            for (tp, dp, slots) in [(1, 8, false), (1, 8, true), (2, 4, false), (1, 2, false)] {
                one(format!("{} DP={dp} TP={tp} EP emulated", dir.display()), e2e_tp::split_against_whole_dp(&model, o.ordinal, tp, dp, true, slots, o.seed, 16));
            }
            // the node's layouts on one GPU: heads, MLPs and experts split 2, 4 and 8 ways
            for (tp, ep) in [(2, false), (4, false), (8, false), (2, true), (4, true), (8, true)] {
                one(format!("{} TP={tp} EP={ep} emulated", dir.display()), e2e_tp::split_against_whole(&model, o.ordinal, tp, ep, o.seed, 16));
            }
        }
        // on a node with 8 GPUs: the same layouts over NCCL, one GPU a rank (issue 23's check)
        if !o.fp8_only && mlahost_cuda::gpu::device_count() >= 8 {
            for (tp, dp, ep, slots) in [(8, 1, false, false), (8, 1, true, false), (1, 8, true, false), (1, 8, true, true), (2, 4, true, false)] {
                one(format!("{} DP={dp} TP={tp} EP={ep} NCCL", dir.display()), e2e_tp::split_over_gpus(&model, tp, dp, ep, slots, o.seed, 16));
            }
            // the node's two layouts against their one-GPU emulation (the same ranks and shards)
            for (tp, dp, ep, slots) in [(8, 1, false, false), (1, 8, true, true)] {
                one(format!("{} DP={dp} TP={tp} NCCL vs emulation", dir.display()), e2e_tp::nccl_against_emulation(&model, tp, dp, ep, slots, o.seed, 16));
            }
        } else if o.nccl_only {
            one(format!("{} over NCCL", dir.display()), Err(mlahost_cuda::CudaError::launch("gpu-check", "--nccl-only needs 8 GPUs")));
        }
    }
    Ok(out)
}
