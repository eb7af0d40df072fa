//! The small endpoints clients and tools probe beside the OpenAI ones, in vLLM's shapes:
//! /tokenize, /detokenize, /tokenizer_info, /version, /v1/models/{id}, /ping, /load.

use super::chat::render_prompt;
use super::error::ApiError;
use super::params::Fields;
use super::AppState;
use serde_json::{json, Value};
use std::sync::Arc;

/// `POST /tokenize`: `{"prompt": text}` or `{"messages": [...]}` (rendered with the chat
/// template) to token ids.
pub async fn tokenize(state: &Arc<AppState>, body: Value) -> Result<Value, ApiError> {
    let obj = body.as_object().ok_or_else(|| ApiError::bad_request("the request body must be a JSON object"))?;
    let f = Fields(obj);
    state.check_model(f.str("model")?)?;
    let ids = match (f.get("prompt"), f.get("messages")) {
        (Some(_), Some(_)) => return Err(ApiError::invalid("messages", "give `prompt` or `messages`, not both")),
        (None, Some(_)) => render_prompt(state, &f, f.bool_or("add_special_tokens", false)?).await?.0,
        (Some(_), None) => {
            let text = f.str("prompt")?.ok_or_else(|| ApiError::invalid("prompt", "`prompt` must be a string"))?.to_string();
            state.check_prompt_bytes("prompt", text.len())?;
            let add_special = f.bool_or("add_special_tokens", true)?;
            let st = state.clone();
            super::off_workers(text.len(), move || {
                st.model.tokenizer.encode(&text, add_special).map_err(|e| ApiError::invalid("prompt", e.to_string()))
            })
            .await?
        }
        (None, None) => return Err(ApiError::invalid("prompt", "`prompt` (text) or `messages` is required")),
    };
    let strs = if f.bool_or("return_token_strs", false)? {
        let tok = &state.model.tokenizer;
        Some(ids.iter().map(|&id| tok.id_to_token(id).unwrap_or_default()).collect::<Vec<_>>())
    } else {
        None
    };
    Ok(json!({"count": ids.len(), "max_model_len": state.max_model_len, "tokens": ids, "token_strs": strs}))
}

/// `POST /detokenize`: `{"tokens": [ids]}` to text.
pub fn detokenize(state: &AppState, body: Value) -> Result<Value, ApiError> {
    let obj = body.as_object().ok_or_else(|| ApiError::bad_request("the request body must be a JSON object"))?;
    let f = Fields(obj);
    state.check_model(f.str("model")?)?;
    let bad = || ApiError::invalid("tokens", "`tokens` must be a list of token ids");
    let list = f.get("tokens").and_then(Value::as_array).ok_or_else(bad)?;
    if list.len() > state.max_model_len.max(1) * 4 {
        return Err(ApiError::invalid("tokens", "too many tokens"));
    }
    let vocab = state.model.config.vocab_size;
    let ids = list
        .iter()
        .map(|v| v.as_u64().filter(|&id| (id as usize) < vocab).map(|id| id as u32))
        .collect::<Option<Vec<u32>>>()
        .ok_or_else(|| ApiError::invalid("tokens", format!("every token id must be an integer below the vocabulary size {vocab}")))?;
    let text = state.model.tokenizer.decode(&ids, false).map_err(|e| ApiError::invalid("tokens", e.to_string()))?;
    Ok(json!({"prompt": text}))
}

/// `GET /tokenizer_info`: what a client needs to tokenize like the server.
pub fn tokenizer_info(state: &AppState) -> Value {
    let tok = &state.model.tokenizer;
    json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": state.max_model_len,
        "vocab_size": tok.vocab_size(),
        "bos_token": tok.bos_token, "bos_token_id": tok.bos_token_id,
        "eos_token": tok.eos_token, "eos_token_id": tok.eos_token_id,
        "chat_template": tok.chat_template,
    })
}

pub fn version() -> Value {
    json!({"version": env!("CARGO_PKG_VERSION")})
}

/// `GET /v1/models/{id}`: the served model, or a 404 in OpenAI's shape.
pub fn model(state: &AppState, id: &str) -> Result<Value, ApiError> {
    if id != state.served_model_name {
        return Err(ApiError::model_not_found(id));
    }
    Ok(state.models()["data"][0].clone())
}

/// `GET /load`: HTTP requests in flight, not counting this one (vLLM's `server_load`).
pub fn load(in_flight: usize) -> Value {
    json!({"server_load": in_flight.saturating_sub(1)})
}
