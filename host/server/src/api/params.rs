//! Reading the request fields both endpoints share, with 400s that name the field (which
//! fields are honoured, refused or ignored: `fields.rs`).

use super::error::ApiError;
use mlahost_runtime::{EngineRequest, SamplerChoice, TextOptions};
use crate::limits::RequestLimits;
use mlahost_engine::sampling::SamplingParams;
use serde_json::{Map, Value};

pub struct Fields<'a>(pub &'a Map<String, Value>);

impl<'a> Fields<'a> {
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }

    pub fn f32_or(&self, key: &str, default: f32) -> Result<f32, ApiError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite())
                .map(|x| x as f32)
                .ok_or_else(|| ApiError::invalid(key, format!("`{key}` must be a number"))),
        }
    }

    pub fn int(&self, key: &str) -> Result<Option<i64>, ApiError> {
        self.get(key).map(|v| v.as_i64().ok_or_else(|| ApiError::invalid(key, format!("`{key}` must be an integer")))).transpose()
    }

    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool, ApiError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| ApiError::invalid(key, format!("`{key}` must be true or false"))),
        }
    }

    pub fn str(&self, key: &str) -> Result<Option<&'a str>, ApiError> {
        self.get(key).map(|v| v.as_str().ok_or_else(|| ApiError::invalid(key, format!("`{key}` must be a string")))).transpose()
    }
}

/// What both endpoints agree on, before the prompt is known.
#[derive(Clone)]
pub struct Common {
    pub model: Option<String>,
    pub n: usize,
    pub stream: bool,
    pub include_usage: bool,
    /// `stream_options.continuous_usage_stats`: usage on every chunk.
    pub continuous_usage_stats: bool,
    /// vLLM's `return_tokens_as_token_ids`: tokens shown as `token_id:N`.
    pub tokens_as_ids: bool,
    /// vLLM's `return_token_ids`: prompt and generated token ids in the response.
    pub return_token_ids: bool,
    /// Prompt (completions) or last assistant message (chat) before the generated text.
    pub echo: bool,
    /// Top alternatives per prompt position in vLLM's `prompt_logprobs` field (None: not asked).
    pub prompt_logprobs_field: Option<usize>,
    /// Keep only the last this-many prompt tokens (`truncate_prompt_tokens`; -1: the model length).
    pub truncate_prompt_tokens: Option<usize>,
    /// Tokenize text with the tokenizer's special tokens (BOS); None: the endpoint's default.
    pub add_special_tokens: Option<bool>,
    pub request: EngineRequest,
    /// How the choices' tokens become text (stop strings, special tokens).
    pub text: TextOptions,
    /// max_tokens as given (None: fill up to the model length, capped by the default).
    pub max_tokens: Option<usize>,
    /// The request's `cache_salt`, combined with the tenant's.
    pub cache_salt: Option<String>,
}

pub const MAX_TOP_LOGPROBS: usize = 20;

pub fn parse_common(f: &Fields, max_tokens_keys: &[&str], limits: &RequestLimits) -> Result<Common, ApiError> {
    let top_k = match f.int("top_k")? {
        None | Some(-1) | Some(0) => 0,
        Some(k) if k > 0 => k as usize,
        Some(_) => return Err(ApiError::invalid("top_k", "`top_k` must be -1 (disabled) or positive")),
    };
    let seed = f.int("seed")?.map(|s| s as u64);
    let temperature = match f.f32_or("temperature", 1.0)? {
        // Below the floor it is greedy (see `SamplingParams::is_greedy`); say so to every path.
        t if t > 0.0 && t < mlahost_engine::sampling::MIN_TEMPERATURE => 0.0,
        t => t,
    };
    let params = SamplingParams {
        temperature,
        top_p: f.f32_or("top_p", 1.0)?,
        top_k,
        min_p: f.f32_or("min_p", 0.0)?,
        seed,
        presence_penalty: f.f32_or("presence_penalty", 0.0)?,
        frequency_penalty: f.f32_or("frequency_penalty", 0.0)?,
        repetition_penalty: f.f32_or("repetition_penalty", 1.0)?,
        // The logits processors are read with the tokenizer at hand (`logits_fields`).
        logit_bias: Vec::new(),
        allowed_token_ids: None,
        bad_words: Vec::new(),
        min_tokens: 0,
        min_tokens_banned: Vec::new(),
    };
    if let Err(message) = params.validate() {
        let param = message.split_whitespace().next().unwrap_or("").to_string();
        return Err(ApiError::invalid(&param, message));
    }
    let mut max_tokens = None;
    for key in max_tokens_keys {
        if let Some(m) = f.int(key)? {
            if m < 0 {
                return Err(ApiError::invalid(key, format!("`{key}` must be >= 0")));
            }
            max_tokens = Some(m as usize);
            break;
        }
    }
    let n = match f.int("n")? {
        None => 1,
        Some(n) if n >= 1 => usize::try_from(n).unwrap_or(usize::MAX),
        Some(_) => return Err(ApiError::invalid("n", "`n` must be at least 1")),
    };
    limits.check_n(n)?;
    let stop = match f.get("stop") {
        None => vec![],
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) if a.len() > limits.max_stop_strings => {
            return Err(crate::limits::over("stop", "the number of stop strings", limits.max_stop_strings, "--max-stop-strings"))
        }
        Some(Value::Array(a)) => a
            .iter()
            .map(|s| s.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| ApiError::invalid("stop", "`stop` must be a string or a list of strings"))?,
        Some(_) => return Err(ApiError::invalid("stop", "`stop` must be a string or a list of strings")),
    };
    if stop.iter().any(String::is_empty) {
        return Err(ApiError::invalid("stop", "stop strings must not be empty"));
    }
    limits.check_stops(&stop)?;
    let (include_usage, continuous_usage_stats) = match f.get("stream_options") {
        None => (false, false),
        Some(Value::Object(o)) => (Fields(o).bool_or("include_usage", false)?, Fields(o).bool_or("continuous_usage_stats", false)?),
        Some(_) => return Err(ApiError::invalid("stream_options", "`stream_options` must be an object")),
    };
    let prompt_logprobs_field = match f.int("prompt_logprobs")? {
        None => None,
        Some(k) if (0..=MAX_TOP_LOGPROBS as i64).contains(&k) => Some(k as usize),
        Some(_) => return Err(ApiError::invalid("prompt_logprobs", format!("`prompt_logprobs` must be in 0..={MAX_TOP_LOGPROBS}"))),
    };
    let truncate_prompt_tokens = match f.int("truncate_prompt_tokens")? {
        None => None,
        Some(-1) => Some(usize::MAX),
        Some(k) if k >= 1 => Some(usize::try_from(k).unwrap_or(usize::MAX)),
        Some(_) => return Err(ApiError::invalid("truncate_prompt_tokens", "`truncate_prompt_tokens` must be -1 or at least 1")),
    };
    let priority = f.int("priority")?.unwrap_or(0).clamp(i32::MIN as i64, i32::MAX as i64) as i32;
    Ok(Common {
        model: f.str("model")?.map(str::to_string),
        n,
        stream: f.bool_or("stream", false)?,
        include_usage,
        continuous_usage_stats,
        tokens_as_ids: f.bool_or("return_tokens_as_token_ids", false)?,
        return_token_ids: f.bool_or("return_token_ids", false)?,
        echo: f.bool_or("echo", false)?,
        prompt_logprobs_field,
        truncate_prompt_tokens,
        add_special_tokens: f.get("add_special_tokens").map(|_| f.bool_or("add_special_tokens", true)).transpose()?,
        max_tokens,
        request: EngineRequest {
            prompt: Vec::new(),
            params,
            max_tokens: 0,
            stop_token_ids: Vec::new().into(),
            ignore_eos: f.bool_or("ignore_eos", false)?,
            logprobs: None,
            prompt_logprobs: None,
            priority,
            salt: 0,
            prompt_hashes: None,
            sampler: None,
            tenant: 0,
            arrived: crate::arrival::arrived(),
        },
        text: TextOptions {
            stop: stop.into(),
            include_stop_str_in_output: f.bool_or("include_stop_str_in_output", false)?,
            skip_special_tokens: f.bool_or("skip_special_tokens", true)?,
        },
        cache_salt: f.str("cache_salt")?.map(str::to_string),
    })
}

/// Checks a token-id prompt against the vocabulary and the model length; fixes max_tokens.
pub fn finish_request(
    common: &Common,
    mut prompt: Vec<u32>,
    vocab: usize,
    max_model_len: usize,
    default_max_tokens: usize,
) -> Result<EngineRequest, ApiError> {
    if prompt.is_empty() {
        return Err(ApiError::invalid("prompt", "the prompt is empty"));
    }
    if let Some(keep) = common.truncate_prompt_tokens {
        // vLLM's: the last `keep` tokens (-1: as many as the model takes with one to generate).
        let keep = if keep == usize::MAX { max_model_len - 1 } else { keep };
        if keep >= max_model_len {
            return Err(ApiError::invalid(
                "truncate_prompt_tokens",
                format!("`truncate_prompt_tokens` ({keep}) must be below the model's maximum length of {max_model_len}"),
            ));
        }
        prompt.drain(..prompt.len().saturating_sub(keep));
    }
    if let Some(&bad) = prompt.iter().find(|&&t| t as usize >= vocab) {
        return Err(ApiError::invalid("prompt", format!("token id {bad} is outside the vocabulary (size {vocab})")));
    }
    if prompt.len() >= max_model_len {
        return Err(ApiError::invalid(
            "prompt",
            format!("the prompt has {} tokens; the model's maximum length is {max_model_len}", prompt.len()),
        ));
    }
    let max_tokens = common.max_tokens.unwrap_or(default_max_tokens.min(max_model_len - prompt.len()));
    if prompt.len() + max_tokens > max_model_len {
        return Err(ApiError::invalid(
            "max_tokens",
            format!(
                "prompt ({} tokens) + max_tokens ({max_tokens}) is over the model's maximum length of {max_model_len}",
                prompt.len()
            ),
        ));
    }
    let mut req = common.request.clone();
    req.prompt = prompt;
    // Scoring a prompt (max_tokens 0 with echo or prompt logprobs) still runs it: one token is
    // generated and dropped from the response, as vLLM does.
    req.max_tokens = if common.scores_only() { 1 } else { max_tokens };
    Ok(req)
}

impl Common {
    /// max_tokens 0 with echo or prompt logprobs: the prompt is scored, nothing generated.
    pub fn scores_only(&self) -> bool {
        self.max_tokens == Some(0) && (self.echo || self.request.prompt_logprobs.is_some())
    }
}

/// The request's `sampler` (a loaded sampler plugin's name) and its `sampler_config`.
pub fn attach_sampler(state: &super::AppState, f: &Fields, common: &mut Common) -> Result<(), ApiError> {
    let Some(name) = f.str("sampler")? else { return Ok(()) };
    let plugin = state
        .plugins
        .sampler(name)
        .ok_or_else(|| ApiError::invalid("sampler", format!("no sampler plugin named `{name}` is loaded")))?;
    let config = match f.get("sampler_config") {
        None => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    };
    common.request.sampler = Some(SamplerChoice { name: plugin.spec.name.clone(), config });
    Ok(())
}
