//! `mlahost gpu-check`: on a GPU machine with only the driver, NVRTC and cuBLAS (no Rust
//! toolchain), runs the CUDA backend's kernel checks, the end-to-end comparisons against the CPU
//! engine and the transformers goldens, and optionally the decode-kernel benchmark.

use anyhow::{bail, Result};
use clap::Args;
use mlahost_gpu_check::runner::{run as run_checks, CheckOptions};
use std::path::PathBuf;

#[derive(Args)]
pub struct GpuCheckArgs {
    /// GPU ordinal.
    #[arg(long, default_value_t = 0)]
    ordinal: usize,
    /// Directory with the test fixtures (tiny-v2-lite, tiny-v2, tiny-v3-fp8 and their goldens).
    #[arg(long, default_value = "tests/fixtures")]
    fixtures: PathBuf,
    /// Extra checkpoints (e.g. a random DeepSeek-shaped one, 512+64 latent) to compare with the CPU.
    #[arg(long)]
    model: Vec<PathBuf>,
    /// Also run the decode-kernel benchmark.
    #[arg(long)]
    bench: bool,
    /// Write the benchmark rows as JSON lines here.
    #[arg(long)]
    bench_json: Option<PathBuf>,
    /// Seed for the random data (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Skip the kernel and end-to-end checks (benchmark only).
    #[arg(long)]
    bench_only: bool,
    /// Also time batch 1 and 64 under fixed (kernel, chunk) split plans (implies --bench).
    #[arg(long)]
    sweep: bool,
    /// Benchmark only the shapes of this batch size (1, 64 or 128; 1 also times
    /// ThunderMLA's ragged speculative case).
    #[arg(long)]
    bench_batch: Option<usize>,
    /// Time the FP8 block-scaled linears against cuBLAS bf16 on DeepSeek-V3's shapes.
    #[arg(long)]
    bench_fp8: bool,
    /// Time the step's bf16 GEMM kernels beside the ones they would replace: the grouped expert
    /// GEMM at decode sizes (V2-Lite's and V3's experts, against moe_gemm_skinny) and prefill sizes
    /// (against moe_gemm), the dense linears of a few rows (V2-Lite's, against cuBLAS).
    #[arg(long)]
    bench_gemm: bool,
    /// Only the end-to-end rows of the --model checkpoints (no kernel checks, no fixtures).
    #[arg(long)]
    models_only: bool,
    /// Only the FP8-weight checks: the FP8 kernels and the FP8-weight end-to-end rows.
    #[arg(long)]
    fp8_only: bool,
    /// Of the --model checkpoints, only the split layouts (TP, EP, data-parallel attention)
    /// against the whole model on this GPU, without the comparisons with the CPU engine.
    #[arg(long)]
    layouts_only: bool,
    /// Of the --model checkpoints, only the layouts over NCCL, one GPU a rank (on a node with 8
    /// GPUs), against the whole model on GPU 0.
    #[arg(long)]
    nccl_only: bool,
    /// Only the kernel checks against their naive references (no end-to-end rows); with
    /// --bench, the benchmark after them.
    #[arg(long)]
    kernels_only: bool,
    /// Only the end-to-end rows (the fixtures and the --model checkpoints against the CPU engine
    /// and the split layouts), without the kernel checks: e.g. with the MLAHOST_* kernel switches
    /// set, to check the forward pass on the kernels they choose.
    #[arg(long, conflicts_with = "kernels_only")]
    e2e_only: bool,
}

pub fn run(args: GpuCheckArgs) -> Result<()> {
    let o = CheckOptions {
        ordinal: args.ordinal,
        fixtures: args.fixtures,
        models: args.model,
        bench: args.bench || args.sweep,
        bench_only: args.bench_only,
        bench_json: args.bench_json,
        sweep: args.sweep,
        bench_batch: args.bench_batch,
        bench_fp8: args.bench_fp8,
        bench_gemm: args.bench_gemm,
        models_only: args.models_only || args.nccl_only,
        fp8_only: args.fp8_only,
        layouts_only: args.layouts_only || args.nccl_only,
        nccl_only: args.nccl_only,
        kernels_only: args.kernels_only,
        e2e_only: args.e2e_only,
        seed: args.seed.unwrap_or_else(|| mlahost_gpu_check::Rng::fresh().1),
    };
    if !run_checks(&o)? {
        bail!("some GPU checks failed (see the tables above)");
    }
    println!("all GPU checks passed");
    Ok(())
}
