//! `mlahost plan` over several GPUs: the per-GPU weights, pool and concurrent sequences of the
//! layout asked for (`--tensor-parallel-size`, `--data-parallel-size`, `--enable-expert-parallel`)
//! beside plain tensor parallelism and data-parallel attention with expert parallelism on the
//! same GPUs, and the back-of-envelope figure that counts only weights / N and c_kv.

use mlahost_engine::capacity::{self, human, GpuPlanInputs};
use mlahost_engine::parallel::ParallelLayout;
use mlahost_engine::{KvCacheDtype, ModelConfig};
use serde_json::{json, Value};

/// What `plan` needs of its arguments for one GPU's memory split.
pub struct GpuTarget {
    pub gpus: usize,
    pub gpu_memory: u64,
    pub utilization: f64,
    pub context: usize,
    pub page_size: usize,
    pub workspace_bytes: u64,
    pub fp8_weights: bool,
    pub kv_dtype: KvCacheDtype,
    pub decode: Option<DecodeRoofline>,
}

/// `--decode-batch` and the bandwidths of its roofline.
#[derive(Debug, Clone, Copy)]
pub struct DecodeRoofline {
    pub batch: usize,
    pub hbm_gbps: Option<f64>,
    pub link_gbps: f64,
}

/// One GPU's bytes in a decode step of the layout, and with a memory bandwidth the roofline.
pub fn decode_step_json(cfg: &ModelConfig, layout: &ParallelLayout, fp8: bool, kv: KvCacheDtype, context: usize, d: &DecodeRoofline) -> Value {
    let step = layout.decode_step_bytes(cfg, fp8, kv, d.batch, context);
    let mut v = json!({
        "batch": step.batch, "context": step.context,
        "weight_bytes_per_gpu": step.weights.round(), "kv_bytes_per_gpu": step.kv.round(), "wire_bytes_per_gpu": step.wire.round(),
        "experts_touched_per_moe_layer": step.experts_touched, "experts_held": step.experts_held,
    });
    if let Some(hbm) = d.hbm_gbps {
        let s = step.seconds(hbm * 1e9, d.link_gbps * 1e9);
        v["hbm_gbps"] = json!(hbm);
        v["link_gbps"] = json!(d.link_gbps);
        v["roofline_ms"] = json!(s * 1e3);
        v["roofline_output_tok_s"] = json!(step.batch as f64 / s);
    }
    v
}

/// One line: what a GPU reads and sends per decode step, and the roofline where known.
pub fn render_decode_step(name: &str, d: &Value) -> String {
    let n = |k: &str| d[k].as_f64().unwrap_or(0.0) as u64;
    let mut line = format!(
        "  {name:<18} decode step of {} x {} tokens: reads {} of weights ({:.1} of {} experts a MoE layer) + {} of latents, sends {}",
        n("batch"),
        n("context"),
        human(n("weight_bytes_per_gpu")),
        d["experts_touched_per_moe_layer"].as_f64().unwrap_or(0.0),
        n("experts_held"),
        human(n("kv_bytes_per_gpu")),
        human(n("wire_bytes_per_gpu"))
    );
    if let (Some(ms), Some(tps)) = (d["roofline_ms"].as_f64(), d["roofline_output_tok_s"].as_f64()) {
        line += &format!("; roofline {ms:.2} ms a step, {tps:.0} output tok/s");
    }
    line
}

/// One layout on `t.gpus` GPUs as JSON: per-GPU bytes, the pool, sequences, collective bytes.
pub fn layout_json(cfg: &ModelConfig, layout: &ParallelLayout, t: &GpuTarget) -> Value {
    let mut v = json!({
        "layout": layout.describe(),
        "tensor_parallel": layout.tensor_parallel,
        "data_parallel": layout.data_parallel,
        "expert_parallel": layout.expert_parallel,
        "gpus_per_instance": layout.world(),
    });
    if let Err(e) = layout.validate(cfg, t.gpus) {
        v["fits"] = json!(false);
        v["reason"] = json!(e.to_string());
        return v;
    }
    let weights = layout.weight_bytes_per_gpu(cfg, t.fp8_weights);
    let instances = t.gpus / layout.world();
    let volume = layout.collective_bytes_per_token(cfg);
    v["instances"] = json!(instances);
    v["weight_bytes_per_gpu"] = json!(weights);
    v["workspace_bytes_per_gpu"] = json!(t.workspace_bytes);
    v["collective_bytes_per_token"] = json!({
        "all_reduce": volume.all_reduce, "all_gather": volume.all_gather, "reduce_scatter": volume.reduce_scatter
    });
    let gpu = GpuPlanInputs { total_memory: t.gpu_memory, utilization: t.utilization, weight_bytes: weights, workspace_bytes: t.workspace_bytes };
    match gpu.kv_budget() {
        Ok(budget) => {
            let page_bytes = capacity::page_bytes(cfg, t.kv_dtype, t.page_size);
            let pages = capacity::pool_pages(budget, page_bytes);
            let per_gpu = capacity::sequences_that_fit(pages, t.page_size, t.context);
            v["fits"] = json!(pages > 0);
            v["kv_budget_bytes_per_gpu"] = json!(budget);
            v["pages_per_gpu"] = json!(pages);
            v["sequences_per_instance"] = json!(layout.sequences(per_gpu));
            v["sequences"] = json!(layout.sequences(per_gpu) * instances);
        }
        Err(e) => {
            v["fits"] = json!(false);
            v["reason"] = json!(e.to_string());
        }
    }
    if let Some(d) = &t.decode {
        v["decode_step"] = decode_step_json(cfg, layout, t.fp8_weights, t.kv_dtype, t.context, d);
    }
    v
}

/// The layouts compared on `t.gpus` GPUs: the one asked for, plain TP over all of them, and
/// DP attention with EP over all of them (each once).
pub fn compared_layouts(cfg: &ModelConfig, asked: ParallelLayout, t: &GpuTarget) -> Vec<Value> {
    let mut layouts = vec![asked];
    for l in [
        ParallelLayout { tensor_parallel: t.gpus, data_parallel: 1, expert_parallel: false },
        ParallelLayout { tensor_parallel: 1, data_parallel: t.gpus, expert_parallel: cfg.moe.is_some() },
    ] {
        if !layouts.contains(&l) {
            layouts.push(l);
        }
    }
    layouts.iter().map(|l| layout_json(cfg, l, t)).collect()
}

/// The figure people quote for plain TP: (GPU memory - all weights / N) / c_kv of one sequence,
/// which leaves out k_pe, the workspace and the utilization margin.
pub fn simple_arithmetic(cfg: &ModelConfig, all_weight_bytes: u64, t: &GpuTarget) -> Value {
    let weights_per_gpu = all_weight_bytes / t.gpus as u64;
    let c_kv_per_seq = (cfg.kv_lora_rank * t.kv_dtype.c_kv_elem_bytes()) as u64 * cfg.num_hidden_layers as u64 * t.context as u64;
    let users = t.gpu_memory.saturating_sub(weights_per_gpu) as f64 / c_kv_per_seq.max(1) as f64;
    json!({ "weights_per_gpu": weights_per_gpu, "c_kv_per_sequence": c_kv_per_seq, "users": users })
}

/// The comparison as text lines.
pub fn render(layouts: &[Value], simple: &Value, gpus: usize, context: usize) -> Vec<String> {
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let mut out = vec![format!("\nLayouts over {gpus} GPUs, sequences of {context} tokens (weights from the config's shapes; workspace: the whole model's, an upper bound):")];
    out.push(format!("  {:<18} {:>22} {:>22} {:>10}  collectives per token (decode)", "layout", "weights / GPU", "KV budget / GPU", "sequences"));
    for l in layouts {
        let name = l["layout"].as_str().unwrap_or("?");
        match l["reason"].as_str() {
            Some(reason) => out.push(format!("  {name:<18} cannot: {reason}")),
            None => {
                let c = &l["collective_bytes_per_token"];
                let mut coll = Vec::new();
                for (key, label) in [("all_reduce", "all-reduce"), ("all_gather", "all-gather"), ("reduce_scatter", "reduce-scatter")] {
                    if n(&c[key]) > 0 {
                        coll.push(format!("{} {label}", human(n(&c[key]))));
                    }
                }
                out.push(format!(
                    "  {name:<18} {:>22} {:>22} {:>10}  {}",
                    human(n(&l["weight_bytes_per_gpu"])),
                    human(n(&l["kv_budget_bytes_per_gpu"])),
                    n(&l["sequences"]),
                    if coll.is_empty() { "none".to_string() } else { coll.join(" + ") }
                ));
                if !l["decode_step"].is_null() {
                    out.push(render_decode_step("", &l["decode_step"]));
                }
            }
        }
    }
    out.push(format!(
        "  simple arithmetic for plain TP: (GPU memory - {} of weights per GPU) / {} of c_kv per sequence = {:.1} sequences;",
        human(n(&simple["weights_per_gpu"])),
        human(n(&simple["c_kv_per_sequence"])),
        simple["users"].as_f64().unwrap_or(0.0)
    ));
    out.push("  the table also counts k_pe (and fp8 scales), the workspace and --gpu-memory-utilization, and under TP every".into());
    out.push("  GPU of an instance stores the same latents: data-parallel attention stores each sequence's latents once.".into());
    out
}
