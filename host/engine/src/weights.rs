//! The model's parameters, loaded by their hub names and checked against the config's shapes.

use crate::checkpoint::Checkpoint;
use crate::config::{Fp8Blocks, ModelConfig};
use crate::tensor::Matrix;
use crate::Result;
use rayon::prelude::*;

/// Where the weights come from, tensor by tensor, by their hub names: a checkpoint's files, or
/// generated values (`--load-format dummy`).
pub trait TensorSource: Sync {
    fn contains(&self, name: &str) -> bool;
    /// A vector (or any-shape tensor) of floats.
    fn load_f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>>;
    /// A linear layer's `[rows, cols]` weight (FP8 ones dequantized with their block scales).
    fn load_matrix(&self, name: &str, rows: usize, cols: usize, fp8: Option<Fp8Blocks>) -> Result<Matrix>;
}

impl TensorSource for Checkpoint {
    fn contains(&self, name: &str) -> bool {
        Checkpoint::contains(self, name)
    }

    fn load_f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        Checkpoint::load_f32(self, name, shape)
    }

    fn load_matrix(&self, name: &str, rows: usize, cols: usize, fp8: Option<Fp8Blocks>) -> Result<Matrix> {
        Checkpoint::load_matrix(self, name, rows, cols, fp8)
    }
}

pub enum QueryProj {
    /// `q_proj` (V2-Lite): hidden -> heads * qk_head_dim.
    Direct(Matrix),
    /// `q_b_proj(rmsnorm(q_a_proj(x)))` (V2, V3).
    LowRank { a: Matrix, norm: Vec<f32>, b: Matrix },
}

pub struct AttentionWeights {
    pub q: QueryProj,
    /// `[kv_lora + rope, hidden]`: the raw latent and the shared key before rope.
    pub kv_a: Matrix,
    pub kv_a_norm: Vec<f32>,
    /// `[heads * (nope + v), kv_lora]`: per head W_UK rows then W_UV rows.
    pub kv_b: Matrix,
    pub o: Matrix,
}

/// A SiLU-gated MLP with gate and up stacked into one `[2 * inter, hidden]` matrix.
pub struct Mlp {
    pub gate_up: Matrix,
    pub down: Matrix,
}

pub struct Moe {
    /// Router `[experts, hidden]`, in f32 as transformers keeps it.
    pub router: Matrix,
    pub score_bias: Option<Vec<f32>>,
    /// Experts `first_expert..first_expert + experts.len()`: all of them, unless expert
    /// parallelism spread them over several ranks (`shard`).
    pub first_expert: usize,
    pub experts: Vec<Mlp>,
    pub shared: Option<Mlp>,
}

pub enum FeedForward {
    Dense(Mlp),
    Moe(Moe),
}

pub struct LayerWeights {
    pub input_norm: Vec<f32>,
    pub post_attention_norm: Vec<f32>,
    pub attn: AttentionWeights,
    pub ffn: FeedForward,
}

/// The parameters outside the layers: the embedding, the final norm and the lm_head.
pub struct ModelEnds {
    pub embed: Matrix,
    pub norm: Vec<f32>,
    pub lm_head: Matrix,
}

impl ModelEnds {
    pub fn load(src: &dyn TensorSource, cfg: &ModelConfig) -> Result<Self> {
        let h = cfg.hidden_size;
        let embed = src.load_matrix("model.embed_tokens.weight", cfg.vocab_size, h, None)?;
        let norm = src.load_f32("model.norm.weight", &[h])?;
        let lm_head = if src.contains("lm_head.weight") || !cfg.tie_word_embeddings {
            src.load_matrix("lm_head.weight", cfg.vocab_size, h, None)?
        } else {
            embed.clone()
        };
        Ok(Self { embed, norm, lm_head })
    }
}

pub struct ModelWeights {
    pub embed: Matrix,
    pub layers: Vec<LayerWeights>,
    pub norm: Vec<f32>,
    pub lm_head: Matrix,
}

impl ModelWeights {
    pub fn load(src: &dyn TensorSource, cfg: &ModelConfig) -> Result<Self> {
        let ModelEnds { embed, norm, lm_head } = ModelEnds::load(src, cfg)?;
        let layers = (0..cfg.num_hidden_layers).map(|i| load_layer(src, cfg, i)).collect::<Result<Vec<_>>>()?;
        Ok(Self { embed, layers, norm, lm_head })
    }

    /// Layer `i` alone, for loaders that move each layer on as they read it.
    pub fn load_layer(src: &dyn TensorSource, cfg: &ModelConfig, i: usize) -> Result<LayerWeights> {
        load_layer(src, cfg, i)
    }

    pub fn bytes(&self) -> usize {
        let mlp = |m: &Mlp| m.gate_up.bytes() + m.down.bytes();
        let layer = |l: &LayerWeights| {
            let q = match &l.attn.q {
                QueryProj::Direct(m) => m.bytes(),
                QueryProj::LowRank { a, b, .. } => a.bytes() + b.bytes(),
            };
            let ffn = match &l.ffn {
                FeedForward::Dense(m) => mlp(m),
                FeedForward::Moe(m) => m.experts.iter().map(mlp).sum::<usize>() + m.shared.as_ref().map_or(0, mlp) + m.router.bytes(),
            };
            q + l.attn.kv_a.bytes() + l.attn.kv_b.bytes() + l.attn.o.bytes() + ffn
        };
        self.embed.bytes() + self.lm_head.bytes() + self.layers.iter().map(layer).sum::<usize>()
    }
}

fn load_layer(src: &dyn TensorSource, cfg: &ModelConfig, i: usize) -> Result<LayerWeights> {
    let p = format!("model.layers.{i}");
    let h = cfg.hidden_size;
    let ffn = if cfg.is_moe_layer(i) {
        FeedForward::Moe(load_moe(src, cfg, &format!("{p}.mlp"))?)
    } else {
        FeedForward::Dense(load_mlp(src, cfg, &format!("{p}.mlp"), cfg.intermediate_size)?)
    };
    Ok(LayerWeights {
        input_norm: src.load_f32(&format!("{p}.input_layernorm.weight"), &[h])?,
        post_attention_norm: src.load_f32(&format!("{p}.post_attention_layernorm.weight"), &[h])?,
        attn: load_attention(src, cfg, &format!("{p}.self_attn"))?,
        ffn,
    })
}

fn load_attention(src: &dyn TensorSource, cfg: &ModelConfig, p: &str) -> Result<AttentionWeights> {
    let (h, heads, fp8) = (cfg.hidden_size, cfg.num_attention_heads, cfg.fp8);
    let q_out = heads * cfg.qk_head_dim();
    let q = match cfg.q_lora_rank {
        None => QueryProj::Direct(src.load_matrix(&format!("{p}.q_proj.weight"), q_out, h, fp8)?),
        Some(r) => QueryProj::LowRank {
            a: src.load_matrix(&format!("{p}.q_a_proj.weight"), r, h, fp8)?,
            norm: src.load_f32(&format!("{p}.q_a_layernorm.weight"), &[r])?,
            b: src.load_matrix(&format!("{p}.q_b_proj.weight"), q_out, r, fp8)?,
        },
    };
    Ok(AttentionWeights {
        q,
        kv_a: src.load_matrix(&format!("{p}.kv_a_proj_with_mqa.weight"), cfg.latent_dim(), h, fp8)?,
        kv_a_norm: src.load_f32(&format!("{p}.kv_a_layernorm.weight"), &[cfg.kv_lora_rank])?,
        kv_b: src.load_matrix(
            &format!("{p}.kv_b_proj.weight"),
            heads * (cfg.qk_nope_head_dim + cfg.v_head_dim),
            cfg.kv_lora_rank,
            fp8,
        )?,
        o: src.load_matrix(&format!("{p}.o_proj.weight"), h, heads * cfg.v_head_dim, fp8)?,
    })
}

fn load_mlp(src: &dyn TensorSource, cfg: &ModelConfig, p: &str, inter: usize) -> Result<Mlp> {
    let h = cfg.hidden_size;
    let gate = src.load_matrix(&format!("{p}.gate_proj.weight"), inter, h, cfg.fp8)?;
    let up = src.load_matrix(&format!("{p}.up_proj.weight"), inter, h, cfg.fp8)?;
    Ok(Mlp { gate_up: gate.stacked_over(up), down: src.load_matrix(&format!("{p}.down_proj.weight"), h, inter, cfg.fp8)? })
}

fn load_moe(src: &dyn TensorSource, cfg: &ModelConfig, p: &str) -> Result<Moe> {
    let m = cfg.moe.as_ref().ok_or_else(|| crate::EngineError::config("n_routed_experts", "an MoE layer needs the MoE fields"))?;
    let e = m.n_routed_experts;
    let router = Matrix::from_f32(e, cfg.hidden_size, src.load_f32(&format!("{p}.gate.weight"), &[e, cfg.hidden_size])?);
    let bias_name = format!("{p}.gate.e_score_correction_bias");
    let score_bias = match m.topk_method {
        crate::config::TopkMethod::NoauxTc => Some(src.load_f32(&bias_name, &[e])?),
        _ => None,
    };
    let experts = (0..e)
        .into_par_iter()
        .map(|j| load_mlp(src, cfg, &format!("{p}.experts.{j}"), m.moe_intermediate_size))
        .collect::<Result<Vec<_>>>()?;
    let shared = match m.n_shared_experts {
        0 => None,
        n => Some(load_mlp(src, cfg, &format!("{p}.shared_experts"), m.moe_intermediate_size * n)?),
    };
    Ok(Moe { router, score_bias, first_expert: 0, experts, shared })
}
