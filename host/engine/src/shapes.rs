//! The model's parameters matrix by matrix, with how tensor and expert parallelism split each:
//! the one list that the FP8 weight count and the per-GPU arithmetic of several GPUs read.

use crate::config::{ModelConfig, TopkMethod};

/// How a linear layer is split over tensor-parallel ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// Every rank holds all of it (the low-rank down-projections q_a and kv_a, as vLLM does).
    Replicated,
    /// Column-parallel: output rows split (q / q_b, kv_b, gate and up).
    OutputTp,
    /// Row-parallel: input columns split, outputs all-reduced (o_proj, down).
    InputTp,
    /// A routed expert's matrix: whole experts spread under expert parallelism, else sliced like
    /// the dense MLP (`input`: the down projection, split by columns).
    Experts { input: bool },
}

/// `count` matrices of `rows x cols` (out x in), as the checkpoint stores them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Linear {
    pub name: &'static str,
    pub rows: u64,
    pub cols: u64,
    pub count: u64,
    pub split: Split,
    /// Stored in block-scaled FP8 when the weights are (kv_b stays bf16: it is split per head
    /// for the absorbed attention; a matrix whose input width is not a multiple of 16 too).
    pub fp8: bool,
}

pub fn moe_layer_count(cfg: &ModelConfig) -> u64 {
    (0..cfg.num_hidden_layers).filter(|&l| cfg.is_moe_layer(l)).count() as u64
}

/// Every linear layer the engine loads (no MTP layers, no embeddings or router gates).
pub fn linears(cfg: &ModelConfig) -> Vec<Linear> {
    let (h, heads) = (cfg.hidden_size as u64, cfg.num_attention_heads as u64);
    let (qk, nope, v) = (cfg.qk_head_dim() as u64, cfg.qk_nope_head_dim as u64, cfg.v_head_dim as u64);
    let (r, d) = (cfg.kv_lora_rank as u64, cfg.latent_dim() as u64);
    let layers = cfg.num_hidden_layers as u64;
    let moe_layers = moe_layer_count(cfg);
    let lin = |name, rows: u64, cols: u64, count, split, fp8: bool| Linear { name, rows, cols, count, split, fp8: fp8 && cols % 16 == 0 };
    let mut out = Vec::new();
    match cfg.q_lora_rank {
        Some(ql) => {
            let ql = ql as u64;
            out.push(lin("q_a_proj", ql, h, layers, Split::Replicated, true));
            out.push(lin("q_b_proj", heads * qk, ql, layers, Split::OutputTp, true));
        }
        None => out.push(lin("q_proj", heads * qk, h, layers, Split::OutputTp, true)),
    }
    out.push(lin("kv_a_proj_with_mqa", d, h, layers, Split::Replicated, true));
    out.push(lin("kv_b_proj", heads * (nope + v), r, layers, Split::OutputTp, false));
    out.push(lin("o_proj", h, heads * v, layers, Split::InputTp, true));
    let inter = cfg.intermediate_size as u64;
    out.push(lin("mlp.gate_up", 2 * inter, h, layers - moe_layers, Split::OutputTp, true));
    out.push(lin("mlp.down_proj", h, inter, layers - moe_layers, Split::InputTp, true));
    if let Some(m) = &cfg.moe {
        let mi = m.moe_intermediate_size as u64;
        // the routed experts are FP8 together or not at all (one grouped GEMM kind per layer)
        let experts_fp8 = h % 16 == 0 && mi % 16 == 0;
        let e = m.n_routed_experts as u64 * moe_layers;
        out.push(lin("experts.gate_up", 2 * mi, h, e, Split::Experts { input: false }, experts_fp8));
        out.push(lin("experts.down_proj", h, mi, e, Split::Experts { input: true }, experts_fp8));
        let si = mi * m.n_shared_experts as u64;
        if si > 0 {
            out.push(lin("shared_experts.gate_up", 2 * si, h, moe_layers, Split::OutputTp, true));
            out.push(lin("shared_experts.down_proj", h, si, moe_layers, Split::InputTp, true));
        }
    }
    out.retain(|l| l.count > 0 && l.rows > 0 && l.cols > 0);
    out
}

/// Bytes of one `rows x cols` matrix: e4m3 codes plus one f32 scale per 128x128 block (ceil-div
/// at the edges), or bf16.
pub fn linear_bytes(rows: u64, cols: u64, fp8: bool) -> u64 {
    if fp8 {
        rows * cols + rows.div_ceil(128) * cols.div_ceil(128) * 4
    } else {
        rows * cols * 2
    }
}

/// Parameters every rank holds whole, besides the linears and the embeddings: the norms, the
/// routers' gates and correction biases.
pub fn small_parameters(cfg: &ModelConfig) -> u64 {
    let h = cfg.hidden_size as u64;
    let per_layer = 2 * h + cfg.kv_lora_rank as u64 + cfg.q_lora_rank.unwrap_or(0) as u64;
    let routers = cfg.moe.as_ref().map_or(0, |m| {
        let e = m.n_routed_experts as u64;
        let bias = if m.topk_method == TopkMethod::NoauxTc { e } else { 0 };
        (e * h + bias) * moe_layer_count(cfg)
    });
    per_layer * cfg.num_hidden_layers as u64 + routers + h
}

/// The embedding table and the output head (one table when tied).
pub fn embedding_parameters(cfg: &ModelConfig) -> u64 {
    cfg.vocab_size as u64 * cfg.hidden_size as u64 * if cfg.tie_word_embeddings { 1 } else { 2 }
}
