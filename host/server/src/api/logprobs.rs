//! Log-probability objects in the two OpenAI shapes.

use mlahost_runtime::TokenEvent;
use mlahost_engine::Tokenizer;
use serde_json::{json, Map, Value};

/// How a token is shown: its text, or vLLM's `token_id:N` when asked.
pub fn token_text(tok: &Tokenizer, id: u32, as_ids: bool) -> String {
    if as_ids {
        format!("token_id:{id}")
    } else {
        tok.decode(&[id], false).unwrap_or_default()
    }
}

/// `/v1/completions`: tokens, token_logprobs, top_logprobs (token -> logprob), text_offset.
pub fn completion_logprobs(tok: &Tokenizer, tokens: &[TokenEvent], as_ids: bool, offset: usize) -> Value {
    let mut texts = Vec::new();
    let mut offsets = Vec::new();
    let mut at = offset;
    for t in tokens {
        let s = token_text(tok, t.id, as_ids);
        offsets.push(at);
        at += t.text.len();
        texts.push(s);
    }
    let tops: Vec<Value> = tokens
        .iter()
        .map(|t| {
            let mut m = Map::new();
            for (id, lp) in &t.top {
                m.insert(token_text(tok, *id, as_ids), json!(lp));
            }
            Value::Object(m)
        })
        .collect();
    json!({
        "tokens": texts,
        "token_logprobs": tokens.iter().map(|t| t.logprob).collect::<Vec<_>>(),
        "top_logprobs": tops,
        "text_offset": offsets,
    })
}

/// `/v1/chat/completions`: {"content": [{token, logprob, bytes, top_logprobs: [...]}]}.
pub fn chat_logprobs(tok: &Tokenizer, tokens: &[TokenEvent], as_ids: bool) -> Value {
    let entry = |id: u32, lp: f32| {
        let s = token_text(tok, id, as_ids);
        json!({"token": s, "logprob": lp, "bytes": s.as_bytes()})
    };
    let content: Vec<Value> = tokens
        .iter()
        .map(|t| {
            let mut e = entry(t.id, t.logprob);
            e["top_logprobs"] = Value::Array(t.top.iter().map(|(id, lp)| entry(*id, *lp)).collect());
            e
        })
        .collect();
    json!({ "content": content })
}
