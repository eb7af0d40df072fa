//! Reading the request fields both endpoints share, with 400s that name the field. Unknown
//! fields are ignored.

use super::error::ApiError;
use mlahost_runtime::EngineRequest;
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
pub struct Common {
    pub model: Option<String>,
    pub n: usize,
    pub stream: bool,
    pub include_usage: bool,
    pub return_token_ids: bool,
    pub request: EngineRequest,
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
    let include_usage = match f.get("stream_options") {
        None => false,
        Some(Value::Object(o)) => Fields(o).bool_or("include_usage", false)?,
        Some(_) => return Err(ApiError::invalid("stream_options", "`stream_options` must be an object")),
    };
    let priority = f.int("priority")?.unwrap_or(0).clamp(i32::MIN as i64, i32::MAX as i64) as i32;
    Ok(Common {
        model: f.str("model")?.map(str::to_string),
        n,
        stream: f.bool_or("stream", false)?,
        include_usage,
        return_token_ids: f.bool_or("return_tokens_as_token_ids", false)?,
        max_tokens,
        request: EngineRequest {
            prompt: Vec::new(),
            params,
            max_tokens: 0,
            stop: stop.into(),
            ignore_eos: f.bool_or("ignore_eos", false)?,
            logprobs: None,
            priority,
            salt: 0,
            sampler: None,
            tenant: 0,
            tenant_stats: None,
            arrived: crate::arrival::arrived(),
        },
        cache_salt: f.str("cache_salt")?.map(str::to_string),
    })
}

/// Checks a token-id prompt against the vocabulary and the model length; fixes max_tokens.
pub fn finish_request(
    common: &Common,
    prompt: Vec<u32>,
    vocab: usize,
    max_model_len: usize,
    default_max_tokens: usize,
) -> Result<EngineRequest, ApiError> {
    if prompt.is_empty() {
        return Err(ApiError::invalid("prompt", "the prompt is empty"));
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
    req.max_tokens = max_tokens;
    Ok(req)
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
    common.request.sampler = Some((plugin, config));
    Ok(())
}
