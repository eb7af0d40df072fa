//! Log-probability objects in the two OpenAI shapes.

use mlahost_runtime::{PromptLogprob, TokenEvent};
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

/// vLLM's floor for reported logprobs (-inf is not JSON).
fn clamp(lp: f32) -> f32 {
    lp.max(-9999.0)
}

/// The prompt's part of an echoed completion's logprobs, as vLLM and OpenAI return it: every
/// prompt token, the first with null logprob and alternatives; then the prompt token itself
/// and its `k` best alternatives. Returns the object and the prompt text's length (the
/// offset the generated tokens continue from).
pub fn echo_logprobs(tok: &Tokenizer, prompt: &[u32], scored: &[PromptLogprob], k: usize, as_ids: bool) -> (Value, usize) {
    let (mut texts, mut lps, mut tops, mut offsets) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut at = 0;
    for (i, &id) in prompt.iter().enumerate() {
        let s = token_text(tok, id, as_ids);
        offsets.push(at);
        at += s.len();
        match i.checked_sub(1).and_then(|j| scored.get(j)) {
            Some(p) => {
                lps.push(json!(clamp(p.logprob)));
                let mut m = Map::new();
                m.insert(s.clone(), json!(clamp(p.logprob)));
                for (alt, lp) in p.top.iter().take(k) {
                    m.insert(token_text(tok, *alt, as_ids), json!(clamp(*lp)));
                }
                tops.push(Value::Object(m));
            }
            None => {
                lps.push(Value::Null);
                tops.push(Value::Null);
            }
        }
        texts.push(s);
    }
    (json!({"tokens": texts, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets}), at)
}

/// Appends `more` (the generated tokens' logprobs) to the echoed prompt's.
pub fn concat_logprobs(mut echoed: Value, more: &Value) -> Value {
    for key in ["tokens", "token_logprobs", "top_logprobs", "text_offset"] {
        if let (Some(a), Some(b)) = (echoed[key].as_array_mut(), more[key].as_array()) {
            a.extend(b.iter().cloned());
        }
    }
    echoed
}

/// vLLM's `prompt_logprobs`: null for the first prompt token, then per token an object of
/// token id -> {logprob, rank, decoded_token} holding the prompt token and its best alternatives.
pub fn vllm_prompt_logprobs(tok: &Tokenizer, prompt: &[u32], scored: &[PromptLogprob], as_ids: bool) -> Value {
    let entry = |id: u32, lp: f32, rank: usize| json!({"logprob": clamp(lp), "rank": rank, "decoded_token": token_text(tok, id, as_ids)});
    let mut out = vec![Value::Null];
    for (p, _) in scored.iter().zip(prompt.iter().skip(1)) {
        let mut m = Map::new();
        m.insert(p.token.to_string(), entry(p.token, p.logprob, p.rank));
        for (rank, (alt, lp)) in p.top.iter().enumerate() {
            m.entry(alt.to_string()).or_insert_with(|| entry(*alt, *lp, rank + 1));
        }
        out.push(Value::Object(m));
    }
    Value::Array(out)
}
