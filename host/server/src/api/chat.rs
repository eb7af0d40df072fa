//! `POST /v1/chat/completions`: messages rendered with the checkpoint's chat template.

use super::choice_json::usage;
use super::completions::choices;
use super::error::ApiError;
use super::fields::{check_fields, Endpoint};
use super::logits_fields::read_logits_fields;
use super::logprobs::{chat_logprobs, vllm_prompt_logprobs};
use super::params::{attach_sampler, finish_request, parse_common, Fields, MAX_TOP_LOGPROBS};
use super::run::{generate, Generated};
use super::stream::{ChatPrompt, StreamKind};
use super::AppState;
use crate::chat_template::normalize_messages;
use super::Reply;
use crate::tenants::Tenant;
use serde_json::{json, Value};
use std::sync::Arc;

pub async fn chat_completions(state: Arc<AppState>, tenant: Tenant, body: Value) -> Result<Reply, ApiError> {
    let obj = body.as_object().ok_or_else(|| ApiError::bad_request("the request body must be a JSON object"))?;
    check_fields(obj, Endpoint::Chat)?;
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
    read_logits_fields(&f, &state.model, Endpoint::Chat, &mut common)?;
    let (prompt, last_assistant) = render_prompt(&state, &f, common.add_special_tokens.unwrap_or(false)).await?;
    let max_default = state.max_model_len;
    let req = finish_request(&common, prompt, state.model.config.vocab_size, state.max_model_len, max_default)?;
    let chat = std::sync::Arc::new(ChatPrompt { ids: req.prompt.clone(), echo: last_assistant, tools: tool_format });
    let requests = choices(&req, common.n);
    let id = state.next_id("chatcmpl");
    let results = match generate(&state, &tenant, requests, &common, StreamKind::Chat(chat.clone()), &id).await? {
        Generated::Streaming(reply) => return Ok(reply),
        Generated::Done(results) => results,
    };
    let tok = &state.model.tokenizer;
    // vLLM's chat echo: the reply continues the last message when it is the assistant's.
    let echoed = if common.echo { chat.echo.as_deref().unwrap_or("") } else { "" };
    let choices: Vec<Value> = results
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let logprobs = common.request.logprobs.map(|_| chat_logprobs(tok, &r.tokens, common.tokens_as_ids));
            let (mut message, finish) = super::tool_calls::message(tool_format.as_ref(), &id, i, r, tok);
            if let Some(content) = message["content"].as_str().filter(|_| !echoed.is_empty()) {
                message["content"] = json!(format!("{echoed}{content}"));
            }
            let mut c = json!({"index": i, "message": message, "logprobs": logprobs, "finish_reason": finish});
            if common.return_token_ids {
                c["token_ids"] = json!(r.tokens.iter().map(|t| t.id).collect::<Vec<_>>());
            }
            c
        })
        .collect();
    let mut body = json!({
        "id": id, "object": "chat.completion", "created": state.created, "model": state.served_model_name,
        "choices": choices, "usage": usage(&results, common.n),
    });
    if common.return_token_ids {
        body["prompt_token_ids"] = json!(chat.ids);
    }
    if common.prompt_logprobs_field.is_some() {
        let scored = results.first().and_then(|r| r.prompt_logprobs.as_deref()).unwrap_or(&[]);
        body["prompt_logprobs"] = vllm_prompt_logprobs(tok, &chat.ids, scored, common.tokens_as_ids);
    }
    Ok(Reply::Json(body))
}

/// Renders the messages and encodes the text (by default without adding BOS again: the
/// templates emit it); large conversations render and encode on the blocking pool. Also
/// returns the last message's content when it is the assistant's (what `echo` repeats).
pub async fn render_prompt(state: &Arc<AppState>, f: &Fields<'_>, add_special_tokens: bool) -> Result<(Vec<u32>, Option<String>), ApiError> {
    if state.chat_template.is_none() {
        return Err(ApiError::bad_request("this model has no chat_template; use /v1/completions"));
    }
    let messages = normalize_messages(f.get("messages"))?;
    let bytes: usize = messages.iter().filter_map(|m| m["content"].as_str()).map(str::len).sum();
    state.check_prompt_bytes("messages", bytes)?;
    let continue_final = f.bool_or("continue_final_message", false)?;
    if continue_final && f.bool_or("add_generation_prompt", false)? {
        return Err(ApiError::invalid("continue_final_message", "`continue_final_message` and `add_generation_prompt` cannot both be true"));
    }
    let add_generation_prompt = !continue_final && f.bool_or("add_generation_prompt", true)?;
    let kwargs = match f.get("chat_template_kwargs") {
        None => serde_json::Map::new(),
        Some(Value::Object(o)) => o.clone(),
        Some(_) => return Err(ApiError::invalid("chat_template_kwargs", "`chat_template_kwargs` must be an object")),
    };
    let tools = f.get("tools").cloned();
    let last = messages.last().filter(|m| m["role"] == "assistant").and_then(|m| m["content"].as_str()).map(str::to_string);
    let state = state.clone();
    super::off_workers(bytes, move || {
        let template = state.chat_template.as_ref().ok_or_else(|| ApiError::internal("no chat template"))?;
        let mut text = template.render(&messages, add_generation_prompt, &kwargs, tools.as_ref())?;
        if continue_final {
            let final_message = messages.last().and_then(|m| m["content"].as_str()).unwrap_or("");
            text = crate::chat_template::cut_after_final_message(&text, final_message)?;
        }
        let ids = state.model.tokenizer.encode(&text, add_special_tokens).map_err(|e| ApiError::invalid("messages", e.to_string()))?;
        Ok((ids, last))
    })
    .await
}
