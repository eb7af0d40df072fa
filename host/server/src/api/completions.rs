//! `POST /v1/completions`: a prompt as text, token ids, or a batch of either.

use super::error::ApiError;
use super::fields::{check_fields, Endpoint};
use super::logits_fields::read_logits_fields;
use super::logprobs::{completion_logprobs, concat_logprobs};
use super::params::{attach_sampler, finish_request, parse_common, Fields, MAX_TOP_LOGPROBS};
use super::choice_json::{prompt_part, usage};
use super::run::{generate, Generated};
use super::stream::StreamKind;
use super::AppState;
use mlahost_runtime::EngineRequest;
use super::Reply;
use crate::tenants::Tenant;
use serde_json::{json, Value};
use std::sync::Arc;

const DEFAULT_MAX_TOKENS: usize = 16;

pub async fn completions(state: Arc<AppState>, tenant: Tenant, body: Value) -> Result<Reply, ApiError> {
    let obj = body.as_object().ok_or_else(|| ApiError::bad_request("the request body must be a JSON object"))?;
    check_fields(obj, Endpoint::Completions)?;
    let f = Fields(obj);
    let mut common = parse_common(&f, &["max_tokens"], &state.limits)?;
    state.check_model(common.model.as_deref())?;
    attach_sampler(&state, &f, &mut common)?;
    super::structured::attach_structured(&state, &f, &mut common)?;
    common.request.logprobs = match f.int("logprobs")? {
        None => None,
        Some(k) if (0..=MAX_TOP_LOGPROBS as i64).contains(&k) => Some(k as usize),
        Some(_) => return Err(ApiError::invalid("logprobs", format!("`logprobs` must be in 0..={MAX_TOP_LOGPROBS}"))),
    };
    read_logits_fields(&f, &state.model, Endpoint::Completions, &mut common)?;
    let prompts = parse_prompts(&state, f.get("prompt"))?;
    state.limits.check_prompts(prompts.len(), common.n)?;
    let texts: Vec<Option<String>> = prompts.iter().map(|p| if let Prompt::Text(t) = p { Some(t.clone()) } else { None }).collect();
    let prompts = tokenize(&state, prompts, common.add_special_tokens.unwrap_or(true)).await?;
    let mut requests = Vec::new();
    let mut echoed = Vec::new();
    for (p, text) in prompts.into_iter().zip(texts) {
        let given = p.len();
        let req = finish_request(&common, p, state.model.config.vocab_size, state.max_model_len, DEFAULT_MAX_TOKENS)?;
        // The echoed prompt: the text as given, or the token ids (or what truncation left)
        // decoded as the echoed tokens are, special tokens included.
        let text = match text {
            Some(t) if req.prompt.len() == given => t,
            _ => state.model.tokenizer.decode(&req.prompt, false).unwrap_or_default(),
        };
        echoed.push((req.prompt.clone(), text));
        requests.extend(choices(&req, common.n));
    }
    let echoed = Arc::new(echoed);
    let id = state.next_id("cmpl");
    let kind = StreamKind::Completion(echoed.clone());
    let results = match generate(&state, &tenant, requests, &common, kind, &id).await? {
        Generated::Streaming(reply) => return Ok(reply),
        Generated::Done(results) => results,
    };
    let choices: Vec<Value> = results
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let (prompt, text) = &echoed[i / common.n.max(1)];
            let mut c = prompt_part(&state, &common, prompt, text, r);
            let offset = c["text"].as_str().map_or(0, str::len);
            let generated = common.request.logprobs.map(|_| completion_logprobs(&state.model.tokenizer, &r.tokens, common.tokens_as_ids, offset));
            c["logprobs"] = match (c["logprobs"].take(), generated) {
                (Value::Null, g) => json!(g),
                (echo, Some(g)) => concat_logprobs(echo, &g),
                (echo, None) => echo,
            };
            c["text"] = json!(format!("{}{}", c["text"].as_str().unwrap_or(""), r.text));
            if common.return_token_ids {
                c["token_ids"] = json!(r.tokens.iter().map(|t| t.id).collect::<Vec<_>>());
            }
            c["index"] = json!(i);
            c["finish_reason"] = json!(r.finish.map(|f| f.as_str()));
            c
        })
        .collect();
    Ok(Reply::Json(json!({
        "id": id, "object": "text_completion", "created": state.created, "model": state.served_model_name,
        "choices": choices, "usage": usage(&results, common.n),
    })))
}

/// `n` copies of a request; with a seed, choice j samples with seed + j so they differ.
pub fn choices(req: &EngineRequest, n: usize) -> Vec<EngineRequest> {
    (0..n)
        .map(|j| {
            let mut r = req.clone();
            r.params.seed = r.params.seed.map(|s| s.wrapping_add(j as u64));
            r
        })
        .collect()
}

/// One prompt as the request gave it: text (tokenized later, off the async workers) or ids.
enum Prompt {
    Text(String),
    Ids(Vec<u32>),
}

/// Reads `prompt` without tokenizing; text longer than the model can hold in any
/// tokenization is refused here, before any tokenizer work.
fn parse_prompts(state: &AppState, v: Option<&Value>) -> Result<Vec<Prompt>, ApiError> {
    let text = |s: &str| -> Result<Prompt, ApiError> {
        if s.is_empty() {
            return Err(ApiError::invalid("prompt", "the prompt is empty"));
        }
        state.check_prompt_bytes("prompt", s.len())?;
        Ok(Prompt::Text(s.to_string()))
    };
    let ids = |a: &[Value]| -> Result<Prompt, ApiError> {
        a.iter()
            .map(|x| x.as_u64().and_then(|t| u32::try_from(t).ok()))
            .collect::<Option<Vec<_>>>()
            .map(Prompt::Ids)
            .ok_or_else(|| ApiError::invalid("prompt", "token ids must be non-negative integers"))
    };
    let too_many = |n: usize| n > state.limits.max_prompts;
    match v {
        None => Err(ApiError::invalid("prompt", "`prompt` is required")),
        Some(Value::String(s)) => Ok(vec![text(s)?]),
        Some(Value::Array(a)) if a.is_empty() => Err(ApiError::invalid("prompt", "the prompt is empty")),
        Some(Value::Array(a)) => match &a[0] {
            Value::String(_) | Value::Array(_) if too_many(a.len()) => {
                Err(crate::limits::over("prompt", "the number of prompts", state.limits.max_prompts, "--max-prompts-per-request"))
            }
            Value::String(_) => a
                .iter()
                .map(|p| p.as_str().ok_or_else(|| ApiError::invalid("prompt", "mixed prompt list")).and_then(text))
                .collect(),
            Value::Array(_) => a
                .iter()
                .map(|p| p.as_array().ok_or_else(|| ApiError::invalid("prompt", "mixed prompt list")).and_then(|p| ids(p)))
                .collect(),
            _ => Ok(vec![ids(a)?]),
        },
        Some(_) => Err(ApiError::invalid("prompt", "`prompt` must be a string, a list of strings, or token ids")),
    }
}

/// Token ids of every prompt; large texts are encoded on the blocking pool.
async fn tokenize(state: &Arc<AppState>, prompts: Vec<Prompt>, add_special_tokens: bool) -> Result<Vec<Vec<u32>>, ApiError> {
    let bytes = prompts.iter().map(|p| if let Prompt::Text(t) = p { t.len() } else { 0 }).sum();
    let state = state.clone();
    super::off_workers(bytes, move || {
        prompts
            .into_iter()
            .map(|p| match p {
                Prompt::Ids(ids) => Ok(ids),
                Prompt::Text(t) => state.model.tokenizer.encode(&t, add_special_tokens).map_err(|e| ApiError::invalid("prompt", e.to_string())),
            })
            .collect()
    })
    .await
}
