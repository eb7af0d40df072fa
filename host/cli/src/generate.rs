//! `mlahost generate`: one prompt through the engine, printed as text or JSON.

use crate::progress::LoadBar;
use anyhow::{bail, Context, Result};
use clap::Args;
use crate::backends::DeviceBackends;
use mlahost_engine::cpu::AttentionMode;
use mlahost_runtime::generate::{generate, FinishReason, GenerateRequest};
use mlahost_engine::sampling::SamplingParams;
use mlahost_cuda::profile::{ranks_table, Phase, ProfileReport};
use mlahost_cuda::quant::WeightQuant;
use mlahost_cuda::Device;
use mlahost_engine::{CacheGeometry, KvCacheDtypeArg, LoadFormat, LoadedModel};
use mlahost_runtime::{BackendFactory, BackendOptions};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

#[derive(Args)]
pub struct GenerateArgs {
    /// Checkpoint directory in the hub's format.
    #[arg(long)]
    model: PathBuf,
    /// Prompt text (BOS is added when tokenizer_config.json asks for it).
    #[arg(long, conflicts_with = "prompt_ids", required_unless_present = "prompt_ids")]
    prompt: Option<String>,
    /// Prompt as comma-separated token ids, used as given.
    #[arg(long, value_delimiter = ',')]
    prompt_ids: Option<Vec<u32>>,
    #[arg(long, default_value_t = 16)]
    max_tokens: usize,
    /// 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// 0 disables the top-k cut.
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    #[arg(long)]
    seed: Option<u64>,
    /// Report the K most likely tokens at each step (with --json).
    #[arg(long, default_value_t = 0)]
    top_logprobs: usize,
    /// Keep generating past end-of-sequence tokens.
    #[arg(long)]
    ignore_eos: bool,
    /// Print one JSON object instead of the text.
    #[arg(long)]
    json: bool,
    /// Tokens per latent-cache page.
    #[arg(long, default_value_t = 64)]
    page_size: usize,
    /// Attention form: auto, absorbed or unabsorbed.
    #[arg(long, default_value = "auto", value_parser = parse_mode)]
    attention: AttentionMode,
    /// Latent-cache element type: auto (f32 on the CPU), f32, bf16 or fp8 (e4m3 with scales).
    #[arg(long, default_value = "auto", value_parser = parse_kv_dtype)]
    kv_cache_dtype: KvCacheDtypeArg,
    /// auto (the directory's safetensors) or dummy (weights generated from config.json).
    #[arg(long, default_value = "auto", value_parser = parse_load_format)]
    load_format: LoadFormat,
    #[command(flatten)]
    parallel: crate::parallel_args::ParallelArgs,
    /// Where the model runs: cpu, or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: Device,
    /// GPU storage of the linear layers: auto (FP8 checkpoints stay FP8, others bf16), bf16, or
    /// fp8 (e4m3 with one f32 scale per 128x128 block, quantized at load).
    #[arg(long, default_value = "auto")]
    quantization: WeightQuant,
    /// Run every step eagerly (no CUDA graphs for decode steps).
    #[arg(long)]
    enforce_eager: bool,
    /// Time every kernel and cuBLAS call on the GPU (steps run eagerly, each followed by a wait)
    /// and print the time per prefill and per decode step by kernel on stderr.
    #[arg(long)]
    profile_kernels: bool,
}

pub fn parse_load_format(s: &str) -> Result<LoadFormat, String> {
    LoadFormat::parse(s).map_err(|e| e.to_string())
}

pub fn parse_kv_dtype(s: &str) -> Result<KvCacheDtypeArg, String> {
    s.parse().map_err(|e: mlahost_engine::EngineError| e.to_string())
}

fn parse_mode(s: &str) -> Result<AttentionMode, String> {
    match s {
        "auto" => Ok(AttentionMode::Auto),
        "absorbed" => Ok(AttentionMode::Absorbed),
        "unabsorbed" => Ok(AttentionMode::Unabsorbed),
        _ => Err(format!("expected auto, absorbed or unabsorbed, got {s:?}")),
    }
}

pub fn run(args: GenerateArgs) -> Result<()> {
    if args.page_size == 0 {
        bail!("--page-size must be at least 1");
    }
    let load_started = Instant::now();
    let bar: Arc<dyn mlahost_engine::model::LoadProgress> = Arc::new(LoadBar::new());
    // The CPU engine holds the whole model; a GPU backend streams it a layer at a time.
    let model = match args.device {
        Device::Cpu => LoadedModel::load_as(&args.model, args.load_format, Some(bar)),
        Device::Cuda(_) => LoadedModel::open(&args.model, args.load_format, Some(bar)),
    }
    .with_context(|| format!("loading {}", args.model.display()))?;
    let prompt = match (&args.prompt, &args.prompt_ids) {
        (Some(text), _) => model.tokenizer.encode(text, true)?,
        (None, Some(ids)) => ids.clone(),
        (None, None) => bail!("give --prompt or --prompt-ids"),
    };
    if prompt.is_empty() {
        bail!("the prompt is empty");
    }
    if let Some(&bad) = prompt.iter().find(|&&t| t as usize >= model.config.vocab_size) {
        bail!("prompt token id {bad} is outside the vocabulary of {}", model.config.vocab_size);
    }
    let total = prompt.len() + args.max_tokens;
    let geometry = CacheGeometry { num_pages: total.div_ceil(args.page_size), page_size: args.page_size };
    let kv_dtype = args.kv_cache_dtype.resolve(args.device == Device::Cpu);
    if args.quantization == WeightQuant::Fp8 && args.device == Device::Cpu {
        bail!("--quantization fp8 stores the GPU's weights in FP8: give --device cuda:N (the CPU engine computes over the checkpoint's weights)");
    }
    if args.profile_kernels && args.device == Device::Cpu {
        bail!("--profile-kernels times GPU kernels: give --device cuda:N");
    }
    let layout = args.parallel.layout();
    let factory = DeviceBackends {
        layout,
        attention: args.attention,
        gpu_memory_utilization: 0.9,
        cuda_graphs: !args.enforce_eager,
        quantization: args.quantization,
        profile: args.profile_kernels,
        step_clock: true,
        ..DeviceBackends::new(args.device)
    };
    let options = BackendOptions {
        replica: 0,
        page_size: args.page_size,
        // Under data-parallel attention each group's cache must hold the whole sequence.
        kv_cache_pages: Some(geometry.num_pages * layout.data_parallel.max(1)),
        kv_cache_memory: None,
        kv_dtype,
        max_batched_tokens: prompt.len(),
        max_seqs: 1,
        planned_weights: None,
    };
    let mut backend = factory.build(&model, &options)?;
    // the checkpoint read (on a GPU, streamed into the backend) and the backend's start-up
    let load_seconds = load_started.elapsed().as_secs_f64();
    let profiled_gpus = std::mem::take(&mut *factory.profiled.lock().unwrap_or_else(|p| p.into_inner()));
    let request = GenerateRequest {
        prompt: prompt.clone(),
        max_tokens: args.max_tokens,
        sampling: SamplingParams { temperature: args.temperature, top_p: args.top_p, top_k: args.top_k, seed: args.seed, ..Default::default() },
        top_logprobs: args.top_logprobs,
        ignore_eos: args.ignore_eos,
    };
    let clocked = factory.clocked.lock().unwrap_or_else(|p| p.into_inner()).take();
    let out = generate(&model, backend.as_mut(), &request)?;
    // the decode steps' device time (one GPU): the rest of their wall time is the host's
    let device_decode = clocked.map(|g| g.step_device_time(Phase::Decode)).transpose()?.flatten();
    // one report per rank (rank 0 first); a single GPU is rank 0
    let rank_reports: Vec<ProfileReport> = profiled_gpus.iter().map(|g| g.profile_report()).collect::<Result<Vec<_>, _>>()?.into_iter().flatten().collect();
    let profile = rank_reports.first().cloned();
    if let Some(p) = &profile {
        eprintln!("{}\n{}", p.table(Phase::Prefill), p.table(Phase::Decode));
        eprintln!("{}\n{}", ranks_table(&rank_reports, Phase::Prefill), ranks_table(&rank_reports, Phase::Decode));
    }
    let by_rank = |phase| {
        rank_reports
            .iter()
            .map(|r| r.by_category(phase).into_iter().map(|(c, us)| (c.as_str().to_string(), json!(us))).collect::<serde_json::Map<_, _>>())
            .collect::<Vec<_>>()
    };
    let categories = (!rank_reports.is_empty()).then(|| json!({"prefill": by_rank(Phase::Prefill), "decode": by_rank(Phase::Decode)}));
    let text = model.tokenizer.decode(&out.token_ids, true)?;
    if !args.json {
        println!("{text}");
        return Ok(());
    }
    let decoded_steps = out.token_ids.len().saturating_sub(1);
    let report = json!({
        "token_ids": out.token_ids,
        "text": text,
        "logprobs": out.logprobs,
        "top_logprobs": out.top_logprobs.iter()
            .map(|step| step.iter().map(|(id, lp)| json!({"id": id, "logprob": lp})).collect::<Vec<_>>())
            .collect::<Vec<_>>(),
        "finish_reason": match out.finish_reason { FinishReason::Length => "length", FinishReason::Stop => "stop" },
        "prompt_token_ids": prompt,
        "kv_cache_dtype": kv_dtype.as_str(),
        "device": args.device.to_string(),
        "stats": {
            "prompt_tokens": prompt.len(),
            "load_s": load_seconds,
            "prefill_s": out.prefill_seconds,
            "decode_s": out.decode_seconds,
            "decode_tokens_per_s": if out.decode_seconds > 0.0 { decoded_steps as f64 / out.decode_seconds } else { 0.0 },
            // device time of the decode forward passes (events around each), and their share of
            // the decode wall time: the rest is host work between and around them
            "device_decode_s": device_decode.map(|(_, s)| s),
            "device_decode_steps": device_decode.map(|(n, _)| n),
            "device_busy_share": device_decode.filter(|_| out.decode_seconds > 0.0).map(|(_, s)| s / out.decode_seconds),
        },
        "kernel_profile": profile.map(|p| {
            let rows = |phase| {
                p.per_forward(phase)
                    .into_iter()
                    .map(|(name, calls, us, max)| json!({"kernel": name, "calls": calls, "us": us, "slowest_call_us": max}))
                    .collect::<Vec<_>>()
            };
            json!({"prefill": rows(Phase::Prefill), "decode": rows(Phase::Decode), "forwards": {
                "prefill": p.forwards.get(&Phase::Prefill).copied().unwrap_or(0),
                "decode": p.forwards.get(&Phase::Decode).copied().unwrap_or(0),
            }})
        }),
        // µs per forward pass by category (attention, MoE, GEMMs, collectives, other), per rank
        "kernel_profile_by_rank": categories,
    });
    println!("{report}");
    Ok(())
}
