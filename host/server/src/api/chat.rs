//! `POST /v1/chat/completions`: messages rendered with the checkpoint's chat template.

use super::completions::{choices, usage};
use super::error::ApiError;
use super::logprobs::chat_logprobs;
use super::params::{attach_sampler, finish_request, parse_common, Fields, MAX_TOP_LOGPROBS};
use super::run::{generate, Generated};
use super::stream::StreamKind;
use super::AppState;
use crate::chat_template::normalize_messages;
use super::Reply;
use crate::tenants::Tenant;
use serde_json::{json, Value};
use std::sync::Arc;

pub async fn chat_completions(state: Arc<AppState>, tenant: Tenant, body: Value) -> Result<Reply, ApiError> {
    let obj = body.as_object().ok_or_else(|| ApiError::bad_request("the request body must be a JSON object"))?;
    let f = Fields(obj);
    let mut common = parse_common(&f, &["max_completion_tokens", "max_tokens"], &state.limits)?;
    state.check_model(common.model.as_deref())?;
    attach_sampler(&state, &f, &mut common)?;
    super::structured::attach_structured(&state, &f, &mut common)?;
    let tools = super::tools::parse_tools(&f)?;
    let tool_format = super::tool_calls::attach_tools(&state, tools.as_ref(), &mut common)?;
    let top = match f.int("top_logprobs")? {
        None => 0,
        Some(k) if (0..=MAX_TOP_LOGPROBS as i64).contains(&k) => k as usize,
        Some(_) => return Err(ApiError::invalid("top_logprobs", format!("`top_logprobs` must be in 0..={MAX_TOP_LOGPROBS}"))),
    };
    common.request.logprobs = f.bool_or("logprobs", false)?.then_some(top);
    let prompt = render_prompt(&state, &f).await?;
    let max_default = state.max_model_len;
    let req = finish_request(&common, prompt, state.model.config.vocab_size, state.max_model_len, max_default)?;
    let requests = choices(&req, common.n);
    let id = state.next_id("chatcmpl");
    let kind = tool_format.map_or(StreamKind::Chat, StreamKind::ChatTools);
    let results = match generate(&state, &tenant, requests, &common, kind, &id).await? {
        Generated::Streaming(reply) => return Ok(reply),
        Generated::Done(results) => results,
    };
    let tok = &state.model.tokenizer;
    let choices: Vec<Value> = results
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let logprobs = common.request.logprobs.map(|_| chat_logprobs(tok, &r.tokens, common.return_token_ids));
            let (message, finish) = super::tool_calls::message(tool_format.as_ref(), &id, i, r, tok);
            json!({"index": i, "message": message, "logprobs": logprobs, "finish_reason": finish})
        })
        .collect();
    Ok(Reply::Json(json!({
        "id": id, "object": "chat.completion", "created": state.created, "model": state.served_model_name,
        "choices": choices, "usage": usage(&results, common.n),
    })))
}

/// Renders the messages and encodes the text without adding BOS again (the templates emit
/// it); large conversations render and encode on the blocking pool.
pub async fn render_prompt(state: &Arc<AppState>, f: &Fields<'_>) -> Result<Vec<u32>, ApiError> {
    if state.chat_template.is_none() {
        return Err(ApiError::bad_request("this model has no chat_template; use /v1/completions"));
    }
    let messages = normalize_messages(f.get("messages"))?;
    let bytes: usize = messages.iter().filter_map(|m| m["content"].as_str()).map(str::len).sum();
    state.check_prompt_bytes("messages", bytes)?;
    let add_generation_prompt = f.bool_or("add_generation_prompt", true)?;
    let tools = f.get("tools").cloned();
    let state = state.clone();
    super::off_workers(bytes, move || {
        let template = state.chat_template.as_ref().ok_or_else(|| ApiError::internal("no chat template"))?;
        let text = template.render(&messages, add_generation_prompt, tools.as_ref())?;
        state.model.tokenizer.encode(&text, false).map_err(|e| ApiError::invalid("messages", e.to_string()))
    })
    .await
}
