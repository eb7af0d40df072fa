//! `mlahost plan`: what a checkpoint's weights and latent cache take, and how many sequences of
//! a given context fit, from config.json and the safetensors headers only (no weights loaded,
//! no tokenizer). The pool is sized by `mlahost_engine::capacity`, the code `serve` uses.

use crate::plan_parallel::{self, GpuTarget};
use crate::serve::parse_bytes;
use anyhow::{bail, Context, Result};
use clap::Args;
use mlahost_engine::capacity::{self, human, GpuPlanInputs, KvFootprint};
use mlahost_engine::parallel::ParallelLayout;
use mlahost_engine::{KvCacheDtypeArg, ModelConfig};
use serde_json::{json, Value};
use std::path::PathBuf;

#[derive(Args)]
pub struct PlanArgs {
    /// Checkpoint directory (config.json; safetensors files are optional: without them the
    /// weights are counted from the config's shapes).
    #[arg(long)]
    model: PathBuf,
    /// cuda (one full replica per GPU) or cpu (sized like `serve --device cpu`).
    #[arg(long, default_value = "cuda")]
    device: String,
    /// Memory of one GPU (141GB, 80GiB, or bytes).
    #[arg(long, default_value = "80GiB", value_parser = parse_bytes)]
    gpu_memory: u64,
    /// GPUs: full replicas, or instances of --tensor-parallel-size x --data-parallel-size GPUs.
    #[arg(long, default_value_t = 1)]
    gpus: usize,
    #[command(flatten)]
    parallel: crate::parallel_args::ParallelArgs,
    /// Share of each GPU's memory mlahost may use.
    #[arg(long, default_value_t = 0.92)]
    gpu_memory_utilization: f64,
    /// Tokens per sequence (prompt + completion) to plan for.
    #[arg(long, default_value_t = 131072)]
    context: usize,
    /// auto (bf16 on the GPU, f32 on the CPU), f32, bf16 or fp8.
    #[arg(long, default_value = "auto", value_parser = crate::generate::parse_kv_dtype)]
    kv_cache_dtype: KvCacheDtypeArg,
    /// Tokens per latent-cache page (as serve).
    #[arg(long, default_value_t = capacity::DEFAULT_PAGE_SIZE)]
    page_size: usize,
    /// Tokens per forward pass (as serve; sizes the GPU workspace).
    #[arg(long, default_value_t = 2048)]
    max_num_batched_tokens: usize,
    /// Sequences running at once (as serve; sizes the GPU workspace).
    #[arg(long, default_value_t = 256)]
    max_num_seqs: usize,
    /// CPU: latent-cache size, exactly as `serve --kv-cache-memory` (default 1 GiB).
    #[arg(long, value_parser = parse_bytes)]
    kv_cache_memory: Option<u64>,
    /// CPU: latent-cache pages, exactly as `serve --kv-cache-pages`.
    #[arg(long)]
    kv_cache_pages: Option<usize>,
    /// GPU storage of the linear layers, as `generate/serve --quantization`: auto (FP8
    /// checkpoints stay FP8), bf16 or fp8.
    #[arg(long, default_value = "auto")]
    quantization: mlahost_cuda::quant::WeightQuant,
    /// Also one decode step of this many sequences (each with --context tokens cached), for
    /// each layout: the bytes each GPU reads (weights touched, latents) and sends, the step's
    /// roofline.
    #[arg(long)]
    decode_batch: Option<usize>,
    /// With --decode-batch: one GPU's memory bandwidth in GB/s (a measured copy rate, say), for
    /// the roofline's time.
    #[arg(long, requires = "decode_batch")]
    hbm_gbps: Option<f64>,
    /// With --decode-batch: one GPU's link bandwidth per direction in GB/s (NVLink 4: 450).
    #[arg(long, requires = "decode_batch", default_value_t = 450.0)]
    link_gbps: f64,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: PlanArgs) -> Result<()> {
    let report = plan(&args)?;
    if args.json {
        println!("{report}");
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}

fn plan(args: &PlanArgs) -> Result<Value> {
    let cpu = match args.device.as_str() {
        "cpu" => true,
        d if d == "cuda" || d == "gpu" || d.starts_with("cuda:") => false,
        other => bail!("--device must be cuda or cpu, not {other:?}"),
    };
    if args.context == 0 || args.page_size == 0 || args.gpus == 0 || args.decode_batch == Some(0) {
        bail!("--context, --page-size, --gpus and --decode-batch must be at least 1");
    }
    if args.hbm_gbps.is_some_and(|g| !(g > 0.0)) || !(args.link_gbps > 0.0) {
        bail!("--hbm-gbps and --link-gbps must be positive");
    }
    let decode = args.decode_batch.map(|batch| plan_parallel::DecodeRoofline { batch, hbm_gbps: args.hbm_gbps, link_gbps: args.link_gbps });
    if !cpu && (args.kv_cache_memory.is_some() || args.kv_cache_pages.is_some()) {
        bail!("--kv-cache-memory / --kv-cache-pages size the CPU pool (--device cpu); on a GPU the pool is what --gpu-memory leaves");
    }
    let layout = args.parallel.layout();
    if cpu && layout != ParallelLayout::SINGLE {
        bail!("--tensor-parallel-size, --data-parallel-size and --enable-expert-parallel plan GPUs (--device cuda)");
    }
    let config_path = args.model.join("config.json");
    let cfg = ModelConfig::from_file(&config_path).with_context(|| format!("reading {}", config_path.display()))?;
    let weights = capacity::count_weights(&args.model, &cfg)?;
    let dtype = args.kv_cache_dtype.resolve(cpu);
    let fp8 = !cpu && args.quantization.fp8_for(cfg.fp8.is_some());
    let fp = capacity::kv_footprint(&cfg, dtype);
    let page_bytes = capacity::page_bytes(&cfg, dtype, args.page_size);
    let (layers, ctx) = (cfg.num_hidden_layers as u64, args.context as u64);
    let per_seq = |per_layer: usize| per_layer as u64 * layers * ctx;
    let mut parallel = Value::Null;
    let pool = if cpu {
        let pages = capacity::cpu_pool_pages(&cfg, dtype, args.page_size, args.kv_cache_pages, args.kv_cache_memory)?;
        pool_json(Ok(page_bytes * pages as u64), None, None, page_bytes, args, 1)
    } else {
        let scratch = if fp8 { capacity::fp8_scratch_bytes(&cfg, args.max_num_batched_tokens) } else { 0 };
        let workspace = capacity::workspace_bytes(&cfg, args.max_num_batched_tokens, args.max_num_seqs) + scratch;
        let gpu = GpuPlanInputs {
            total_memory: args.gpu_memory,
            utilization: args.gpu_memory_utilization,
            weight_bytes: weights.gpu_bytes(&cfg, fp8),
            workspace_bytes: workspace,
        };
        if args.gpus > 1 || layout != ParallelLayout::SINGLE {
            let target = GpuTarget {
                gpus: args.gpus,
                gpu_memory: args.gpu_memory,
                utilization: args.gpu_memory_utilization,
                context: args.context,
                page_size: args.page_size,
                workspace_bytes: workspace,
                fp8_weights: fp8,
                kv_dtype: dtype,
                decode,
            };
            layout.validate(&cfg, args.gpus)?;
            parallel = json!({
                "layouts": plan_parallel::compared_layouts(&cfg, layout, &target),
                "simple_arithmetic": plan_parallel::simple_arithmetic(&cfg, weights.gpu_bytes(&cfg, fp8), &target),
            });
        }
        pool_json(gpu.kv_budget().map_err(|e| e.to_string()), Some(gpu.usable()), Some(workspace), page_bytes, args, args.gpus)
    };
    Ok(json!({
        "model": args.model.display().to_string(),
        "shape": {
            "layers": cfg.num_hidden_layers, "heads": cfg.num_attention_heads, "hidden": cfg.hidden_size,
            "kv_lora_rank": cfg.kv_lora_rank, "qk_rope_head_dim": cfg.qk_rope_head_dim, "v_head_dim": cfg.v_head_dim,
        },
        "device": if cpu { "cpu" } else { "cuda" },
        "kv_cache_dtype": dtype.as_str(),
        "weights": {
            "parameters": weights.parameters, "bytes_bf16": weights.bf16_bytes(), "source": weights.source.as_str(),
            "gpu_dtype": if fp8 { "fp8" } else { "bf16" }, "gpu_bytes": weights.gpu_bytes(&cfg, fp8),
        },
        "per_token_per_layer": footprint_json(&fp),
        "per_token_all_layers": fp.stored as u64 * layers,
        "per_sequence": {
            "context": args.context,
            "c_kv_bytes": per_seq(fp.c_kv),
            "stored_bytes": per_seq(fp.stored),
            "mha_bytes": per_seq(fp.mha),
            "gqa8_bytes": per_seq(fp.gqa8),
        },
        "pool": pool,
        "parallel": parallel,
        // one GPU holding the whole model (cpu: the same bytes, no roofline time)
        "decode_step": decode.map_or(Value::Null, |d| plan_parallel::decode_step_json(&cfg, &ParallelLayout::SINGLE, fp8, dtype, args.context, &d)),
    }))
}

fn footprint_json(fp: &KvFootprint) -> Value {
    json!({ "c_kv": fp.c_kv, "k_pe": fp.k_pe, "scales": fp.scales, "stored": fp.stored, "mha": fp.mha, "gqa8": fp.gqa8 })
}

fn pool_json(budget: Result<u64, String>, usable: Option<u64>, workspace: Option<u64>, page_bytes: u64, args: &PlanArgs, replicas: usize) -> Value {
    let mut v = json!({
        "usable_bytes": usable, "workspace_bytes": workspace, "page_size": args.page_size, "page_bytes": page_bytes,
        "replicas": replicas,
    });
    match budget {
        Ok(budget) => {
            let pages = capacity::pool_pages(budget, page_bytes);
            let seqs = capacity::sequences_that_fit(pages, args.page_size, args.context);
            v["fits"] = json!(pages > 0);
            v["kv_budget_bytes"] = json!(budget);
            v["pages"] = json!(pages);
            v["tokens"] = json!(pages as u64 * args.page_size as u64);
            v["sequences_per_replica"] = json!(seqs);
            v["sequences"] = json!(seqs * replicas);
        }
        Err(reason) => {
            v["fits"] = json!(false);
            v["reason"] = json!(reason);
        }
    }
    v
}

/// Thousands separators: 65536 -> "65,536".
fn commas(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn render(r: &Value) -> String {
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let (t, s, p) = (&r["per_token_per_layer"], &r["per_sequence"], &r["pool"]);
    let dtype = r["kv_cache_dtype"].as_str().unwrap_or("?");
    let layers = n(&r["shape"]["layers"]);
    let mut o = String::new();
    let mut line = |l: String| {
        o.push_str(&l);
        o.push('\n');
    };
    line(format!("model        {}  ({} layers, {} heads, kv_lora {}, rope {})", r["model"].as_str().unwrap_or(""), layers,
        n(&r["shape"]["heads"]), n(&r["shape"]["kv_lora_rank"]), n(&r["shape"]["qk_rope_head_dim"])));
    line(format!("weights      {} parameters -> {} in bf16 (from {})", commas(n(&r["weights"]["parameters"])),
        human(n(&r["weights"]["bytes_bf16"])), r["weights"]["source"].as_str().unwrap_or("")));
    if r["weights"]["gpu_dtype"] == "fp8" {
        line(format!("             on the GPU {} with the linears in FP8 (e4m3, one f32 scale per 128x128 block)", human(n(&r["weights"]["gpu_bytes"]))));
    }
    line(format!("\nKV cache per token per layer ({dtype}):"));
    line(format!("  MLA c_kv                {:>9} B", commas(n(&t["c_kv"]))));
    line(format!("  MLA k_pe                {:>9} B", commas(n(&t["k_pe"]))));
    if n(&t["scales"]) > 0 {
        line(format!("  MLA fp8 scales          {:>9} B   (one f32 per 128 channels)", commas(n(&t["scales"]))));
    }
    line(format!("  MLA stored (all above)  {:>9} B", commas(n(&t["stored"]))));
    line(format!("  MHA, same shape         {:>9} B   (K and V, all heads x {})", commas(n(&t["mha"])), n(&r["shape"]["v_head_dim"])));
    line(format!("  GQA-8, same shape       {:>9} B", commas(n(&t["gqa8"]))));
    line(format!("\nOne sequence of {} tokens over {layers} layers:", commas(n(&s["context"]))));
    for (name, key) in [("MLA c_kv", "c_kv_bytes"), ("MLA stored", "stored_bytes"), ("MHA", "mha_bytes"), ("GQA-8", "gqa8_bytes")] {
        line(format!("  {name:<12} {}", human(n(&s[key]))));
    }
    line(format!("\nPool ({}, page {} tokens = {}):", r["device"].as_str().unwrap_or(""), n(&p["page_size"]), human(n(&p["page_bytes"]))));
    if let Some(u) = p["usable_bytes"].as_u64() {
        line(format!("  usable GPU memory       {}", human(u)));
        line(format!("  workspace (estimate)    {}", human(n(&p["workspace_bytes"]))));
    }
    match p["reason"].as_str() {
        Some(reason) => {
            line(format!("  DOES NOT FIT: {reason}"));
            line("  (one full replica per GPU; --tensor-parallel-size / --data-parallel-size spread one instance over several)".into());
        }
        None => {
            line(format!("  KV budget               {}", human(n(&p["kv_budget_bytes"]))));
            line(format!("  pages                   {}", commas(n(&p["pages"]))));
            line(format!("  tokens                  {}", commas(n(&p["tokens"]))));
            line(format!("  sequences of {:<10} {} per replica", commas(n(&s["context"])), commas(n(&p["sequences_per_replica"]))));
            if r["device"] == "cuda" {
                line(format!("  replicas                {} (one full replica per GPU: MLA scales data parallel)", n(&p["replicas"])));
                line(format!("  sequences in all        {}", commas(n(&p["sequences"]))));
            }
        }
    }
    if r["parallel"].is_null() && !r["decode_step"].is_null() {
        line(String::new());
        line(plan_parallel::render_decode_step("one GPU", &r["decode_step"]));
    }
    if let Some(layouts) = r["parallel"]["layouts"].as_array() {
        for l in plan_parallel::render(layouts, &r["parallel"]["simple_arithmetic"], n(&p["replicas"]) as usize, n(&s["context"]) as usize) {
            line(l);
        }
    }
    o
}

#[cfg(test)]
mod tests {
    #[test]
    fn commas() {
        assert_eq!(super::commas(65536), "65,536");
        assert_eq!(super::commas(999), "999");
        assert_eq!(super::commas(1_000_000), "1,000,000");
    }
}
