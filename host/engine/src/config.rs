//! `config.json` of DeepseekV2ForCausalLM / DeepseekV3ForCausalLM checkpoints (Kimi-K2 uses V3).

use crate::{EngineError, Result};
use serde_json::{Map, Value};
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    DeepseekV2,
    DeepseekV3,
}

/// How routed experts are chosen for a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopkMethod {
    /// V2: plain top-k over softmax scores.
    Greedy,
    /// V2: keep the `topk_group` groups with the best single expert, then top-k inside them.
    GroupLimitedGreedy,
    /// V3/K2: sigmoid scores plus `e_score_correction_bias` for the choice, groups scored by
    /// the sum of their two best experts.
    NoauxTc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScoringFunc {
    Softmax,
    Sigmoid,
}

/// Layout of the rotary dims: DeepSeek checkpoints rotate interleaved pairs `(x0,x1),(x2,x3)…`;
/// a V3 config with `rope_interleave: false` rotates `(x_i, x_{i+d/2})` instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeLayout {
    Interleaved,
    Halves,
}

#[derive(Debug, Clone, PartialEq)]
pub struct YarnScaling {
    pub factor: f64,
    pub original_max_position_embeddings: usize,
    pub beta_fast: f64,
    pub beta_slow: f64,
    pub mscale: f64,
    pub mscale_all_dim: f64,
    pub truncate: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MoeConfig {
    pub n_routed_experts: usize,
    pub n_shared_experts: usize,
    pub num_experts_per_tok: usize,
    pub moe_intermediate_size: usize,
    pub first_k_dense_replace: usize,
    pub moe_layer_freq: usize,
    pub topk_method: TopkMethod,
    pub scoring_func: ScoringFunc,
    pub norm_topk_prob: bool,
    pub routed_scaling_factor: f32,
    pub n_group: usize,
    pub topk_group: usize,
}

/// Fp8 block quantization of the weights (`quantization_config.quant_method == "fp8"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fp8Blocks {
    pub block_rows: usize,
    pub block_cols: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub q_lora_rank: Option<usize>,
    pub kv_lora_rank: usize,
    pub qk_rope_head_dim: usize,
    pub qk_nope_head_dim: usize,
    pub v_head_dim: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f64,
    pub rope_layout: RopeLayout,
    pub yarn: Option<YarnScaling>,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    pub moe: Option<MoeConfig>,
    pub fp8: Option<Fp8Blocks>,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

impl ModelConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| EngineError::Io { path: path.into(), source })?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| EngineError::Json { file: path.into(), message: e.to_string() })?;
        Self::from_json(&value)
    }

    pub fn from_json(value: &Value) -> Result<Self> {
        let obj = value.as_object().ok_or_else(|| EngineError::config("<root>", "expected a JSON object"))?;
        let f = Fields(obj);
        let architecture = parse_architecture(&f)?;
        let is_v3 = architecture == Architecture::DeepseekV3;
        let hidden_act = f.opt_str("hidden_act")?.unwrap_or("silu");
        if hidden_act != "silu" {
            return Err(EngineError::config("hidden_act", format!("{hidden_act:?} is not supported (only silu)")));
        }
        if f.opt_bool("attention_bias")?.unwrap_or(false) {
            return Err(EngineError::config("attention_bias", "biases on attention projections are not supported"));
        }
        let rope_params = f.opt_obj("rope_scaling")?.or(f.opt_obj("rope_parameters")?);
        let rope_theta = match f.opt_f64("rope_theta")? {
            Some(t) => t,
            None => rope_params.map(|p| Fields(p).opt_f64("rope_theta")).transpose()?.flatten().unwrap_or(10000.0),
        };
        let max_position_embeddings = f.req_usize("max_position_embeddings")?;
        let cfg = Self {
            architecture,
            vocab_size: f.req_usize("vocab_size")?,
            hidden_size: f.req_usize("hidden_size")?,
            intermediate_size: f.req_usize("intermediate_size")?,
            num_hidden_layers: f.req_usize("num_hidden_layers")?,
            num_attention_heads: f.req_usize("num_attention_heads")?,
            q_lora_rank: f.opt_usize("q_lora_rank")?,
            kv_lora_rank: f.req_usize("kv_lora_rank")?,
            qk_rope_head_dim: f.req_usize("qk_rope_head_dim")?,
            qk_nope_head_dim: f.req_usize("qk_nope_head_dim")?,
            v_head_dim: f.req_usize("v_head_dim")?,
            rms_norm_eps: f.opt_f64("rms_norm_eps")?.unwrap_or(1e-6) as f32,
            rope_theta,
            rope_layout: if is_v3 && !f.opt_bool("rope_interleave")?.unwrap_or(true) {
                RopeLayout::Halves
            } else {
                RopeLayout::Interleaved
            },
            yarn: rope_params.map(|p| parse_yarn(p, max_position_embeddings)).transpose()?.flatten(),
            max_position_embeddings,
            tie_word_embeddings: f.opt_bool("tie_word_embeddings")?.unwrap_or(false),
            moe: parse_moe(&f, is_v3)?,
            fp8: parse_fp8(&f)?,
            bos_token_id: f.opt_u32("bos_token_id")?,
            eos_token_ids: parse_eos(&f)?,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<()> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("kv_lora_rank", self.kv_lora_rank),
            ("qk_nope_head_dim", self.qk_nope_head_dim),
            ("v_head_dim", self.v_head_dim),
        ];
        for (field, v) in positive {
            if v == 0 {
                return Err(EngineError::config(field, "must be positive"));
            }
        }
        if self.qk_rope_head_dim == 0 || self.qk_rope_head_dim % 2 != 0 {
            return Err(EngineError::config("qk_rope_head_dim", "must be a positive even number"));
        }
        if self.q_lora_rank == Some(0) {
            return Err(EngineError::config("q_lora_rank", "must be null or positive"));
        }
        if let Some(m) = &self.moe {
            if m.num_experts_per_tok == 0 || m.num_experts_per_tok > m.n_routed_experts {
                return Err(EngineError::config("num_experts_per_tok", "must be in 1..=n_routed_experts"));
            }
            if m.n_group == 0 || m.n_routed_experts % m.n_group != 0 {
                return Err(EngineError::config("n_group", "must divide n_routed_experts"));
            }
            if m.topk_group == 0 || m.topk_group > m.n_group {
                return Err(EngineError::config("topk_group", "must be in 1..=n_group"));
            }
            let per_group = m.n_routed_experts / m.n_group;
            if m.topk_method == TopkMethod::NoauxTc && per_group < 2 {
                return Err(EngineError::config("n_group", "noaux_tc needs at least 2 experts per group"));
            }
            if m.topk_method != TopkMethod::Greedy && m.topk_group * per_group < m.num_experts_per_tok {
                return Err(EngineError::config("topk_group", "the kept groups hold fewer experts than num_experts_per_tok"));
            }
        }
        Ok(())
    }

    pub fn qk_head_dim(&self) -> usize {
        self.qk_nope_head_dim + self.qk_rope_head_dim
    }

    /// Values cached per token per layer: the normalized latent plus the rotated shared key.
    pub fn latent_dim(&self) -> usize {
        self.kv_lora_rank + self.qk_rope_head_dim
    }

    pub fn is_moe_layer(&self, layer: usize) -> bool {
        self.moe.as_ref().is_some_and(|m| layer >= m.first_k_dense_replace && layer % m.moe_layer_freq == 0)
    }

    /// Softmax scale: 1/sqrt(qk_head_dim), times mscale(factor, mscale_all_dim)^2 under yarn.
    pub fn softmax_scale(&self) -> f32 {
        let base = (self.qk_head_dim() as f64).powf(-0.5);
        let m = match &self.yarn {
            Some(y) if y.mscale_all_dim != 0.0 => yarn_mscale(y.factor, y.mscale_all_dim),
            _ => 1.0,
        };
        (base * m * m) as f32
    }
}

/// YaRN's magnitude correction `0.1 * mscale * ln(factor) + 1` (1 when not scaling up).
pub fn yarn_mscale(factor: f64, mscale: f64) -> f64 {
    if factor <= 1.0 {
        1.0
    } else {
        0.1 * mscale * factor.ln() + 1.0
    }
}

fn parse_architecture(f: &Fields) -> Result<Architecture> {
    let name = match f.0.get("architectures") {
        Some(Value::Array(a)) => match a.first().and_then(Value::as_str) {
            Some(s) => s.to_string(),
            None => return Err(EngineError::config("architectures", "expected a list with one class name")),
        },
        Some(_) => return Err(EngineError::config("architectures", "expected a list of strings")),
        None => match f.opt_str("model_type")? {
            Some("deepseek_v2") => "DeepseekV2ForCausalLM".into(),
            Some("deepseek_v3" | "kimi_k2") => "DeepseekV3ForCausalLM".into(),
            Some(other) => other.to_string(),
            None => return Err(EngineError::config("architectures", "missing (and no model_type)")),
        },
    };
    match name.as_str() {
        "DeepseekV2ForCausalLM" => Ok(Architecture::DeepseekV2),
        "DeepseekV3ForCausalLM" => Ok(Architecture::DeepseekV3),
        _ => Err(EngineError::UnknownArchitecture(name)),
    }
}

fn parse_yarn(p: &Map<String, Value>, max_pos: usize) -> Result<Option<YarnScaling>> {
    let f = Fields(p);
    let kind = f.opt_str("type")?.or(f.opt_str("rope_type")?).unwrap_or("default");
    match kind {
        "default" => return Ok(None),
        "yarn" => {}
        other => return Err(EngineError::config("rope_scaling.type", format!("{other:?} is not supported (yarn or none)"))),
    }
    let original = f
        .opt_usize("original_max_position_embeddings")?
        .ok_or_else(|| EngineError::config("rope_scaling.original_max_position_embeddings", "required for yarn"))?;
    let factor = f.opt_f64("factor")?.unwrap_or(max_pos as f64 / original as f64);
    if !(factor.is_finite() && factor > 0.0) {
        return Err(EngineError::config("rope_scaling.factor", "must be a positive number"));
    }
    Ok(Some(YarnScaling {
        factor,
        original_max_position_embeddings: original,
        beta_fast: f.opt_f64("beta_fast")?.filter(|b| *b != 0.0).unwrap_or(32.0),
        beta_slow: f.opt_f64("beta_slow")?.filter(|b| *b != 0.0).unwrap_or(1.0),
        mscale: f.opt_f64("mscale")?.unwrap_or(0.0),
        mscale_all_dim: f.opt_f64("mscale_all_dim")?.unwrap_or(0.0),
        truncate: f.opt_bool("truncate")?.unwrap_or(true),
    }))
}

fn parse_moe(f: &Fields, is_v3: bool) -> Result<Option<MoeConfig>> {
    let Some(n_routed_experts) = f.opt_usize("n_routed_experts")? else { return Ok(None) };
    let topk_method = match f.opt_str("topk_method")?.unwrap_or(if is_v3 { "noaux_tc" } else { "greedy" }) {
        "greedy" => TopkMethod::Greedy,
        "group_limited_greedy" => TopkMethod::GroupLimitedGreedy,
        "noaux_tc" => TopkMethod::NoauxTc,
        other => return Err(EngineError::config("topk_method", format!("{other:?} is not supported"))),
    };
    let scoring_func = match f.opt_str("scoring_func")?.unwrap_or(if is_v3 { "sigmoid" } else { "softmax" }) {
        "softmax" => ScoringFunc::Softmax,
        "sigmoid" => ScoringFunc::Sigmoid,
        other => return Err(EngineError::config("scoring_func", format!("{other:?} is not supported"))),
    };
    if (topk_method == TopkMethod::NoauxTc) != (scoring_func == ScoringFunc::Sigmoid) {
        return Err(EngineError::config("scoring_func", "noaux_tc goes with sigmoid, greedy routing with softmax"));
    }
    let moe_layer_freq = f.opt_usize("moe_layer_freq")?.unwrap_or(1);
    if moe_layer_freq == 0 {
        return Err(EngineError::config("moe_layer_freq", "must be positive"));
    }
    Ok(Some(MoeConfig {
        n_routed_experts,
        n_shared_experts: f.opt_usize("n_shared_experts")?.unwrap_or(0),
        num_experts_per_tok: f.req_usize("num_experts_per_tok")?,
        moe_intermediate_size: f.req_usize("moe_intermediate_size")?,
        first_k_dense_replace: f.opt_usize("first_k_dense_replace")?.unwrap_or(0),
        moe_layer_freq,
        topk_method,
        scoring_func,
        norm_topk_prob: f.opt_bool("norm_topk_prob")?.unwrap_or(false),
        routed_scaling_factor: f.opt_f64("routed_scaling_factor")?.unwrap_or(1.0) as f32,
        n_group: f.opt_usize("n_group")?.unwrap_or(1),
        topk_group: f.opt_usize("topk_group")?.unwrap_or(1),
    }))
}

fn parse_fp8(f: &Fields) -> Result<Option<Fp8Blocks>> {
    let Some(q) = f.opt_obj("quantization_config")? else { return Ok(None) };
    let q = Fields(q);
    match q.opt_str("quant_method")? {
        Some("fp8") => {}
        other => {
            return Err(EngineError::config("quantization_config.quant_method", format!("{other:?} is not supported (fp8 only)")))
        }
    }
    if let Some(fmt) = q.opt_str("fmt")? {
        if fmt != "e4m3" {
            return Err(EngineError::config("quantization_config.fmt", format!("{fmt:?} is not supported (e4m3 only)")));
        }
    }
    let block = match q.0.get("weight_block_size") {
        Some(Value::Array(a)) if a.len() == 2 => {
            let dim = |v: &Value| v.as_u64().filter(|&x| x > 0).map(|x| x as usize);
            match (dim(&a[0]), dim(&a[1])) {
                (Some(r), Some(c)) => Fp8Blocks { block_rows: r, block_cols: c },
                _ => return Err(EngineError::config("quantization_config.weight_block_size", "expected two positive integers")),
            }
        }
        _ => return Err(EngineError::config("quantization_config.weight_block_size", "expected [rows, cols]")),
    };
    Ok(Some(block))
}

fn parse_eos(f: &Fields) -> Result<Vec<u32>> {
    match f.0.get("eos_token_id") {
        None | Some(Value::Null) => Ok(vec![]),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_u64().and_then(|x| u32::try_from(x).ok()))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| EngineError::config("eos_token_id", "expected token ids")),
        Some(_) => Ok(f.opt_u32("eos_token_id")?.into_iter().collect()),
    }
}

/// Typed access to JSON fields with errors that name the field.
struct Fields<'a>(&'a Map<String, Value>);

impl<'a> Fields<'a> {
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    fn req_usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?.ok_or_else(|| EngineError::config(key, "missing"))
    }

    fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        self.get(key)
            .map(|v| v.as_u64().map(|x| x as usize).ok_or_else(|| EngineError::config(key, format!("expected a non-negative integer, got {v}"))))
            .transpose()
    }

    fn opt_u32(&self, key: &str) -> Result<Option<u32>> {
        self.opt_usize(key)?
            .map(|x| u32::try_from(x).map_err(|_| EngineError::config(key, "out of range")))
            .transpose()
    }

    fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        self.get(key).map(|v| v.as_f64().ok_or_else(|| EngineError::config(key, format!("expected a number, got {v}")))).transpose()
    }

    fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        self.get(key).map(|v| v.as_bool().ok_or_else(|| EngineError::config(key, format!("expected true or false, got {v}")))).transpose()
    }

    fn opt_str(&self, key: &str) -> Result<Option<&'a str>> {
        self.get(key).map(|v| v.as_str().ok_or_else(|| EngineError::config(key, format!("expected a string, got {v}")))).transpose()
    }

    fn opt_obj(&self, key: &str) -> Result<Option<&'a Map<String, Value>>> {
        self.get(key).map(|v| v.as_object().ok_or_else(|| EngineError::config(key, "expected an object"))).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn v2_lite() -> Value {
        serde_json::from_str(include_str!("../../../tests/fixtures/configs/deepseek-v2-lite.json")).unwrap()
    }

    #[test]
    fn parses_v2_lite() {
        let c = ModelConfig::from_json(&v2_lite()).unwrap();
        assert_eq!(c.latent_dim(), 576);
        assert!(!c.is_moe_layer(0) && c.is_moe_layer(1));
        let m = yarn_mscale(40.0, 0.707);
        assert!((c.softmax_scale() as f64 - m * m / 192f64.sqrt()).abs() < 1e-7);
        assert_eq!(c.eos_token_ids, vec![100001]);
    }

    #[test]
    fn errors_name_the_field() {
        let mut v = v2_lite();
        v.as_object_mut().unwrap().remove("kv_lora_rank");
        let e = ModelConfig::from_json(&v).unwrap_err().to_string();
        assert!(e.contains("kv_lora_rank") && e.contains("missing"), "{e}");
        let mut v = v2_lite();
        v["hidden_size"] = json!("big");
        assert!(ModelConfig::from_json(&v).unwrap_err().to_string().contains("hidden_size"));
        let mut v = v2_lite();
        v["architectures"] = json!(["LlamaForCausalLM"]);
        assert!(ModelConfig::from_json(&v).unwrap_err().to_string().contains("LlamaForCausalLM"));
    }
}
