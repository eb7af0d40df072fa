//! The parts of a completion's JSON that a stream's chunks and a whole response share: what
//! an echoing or scoring choice repeats of its prompt, and the request's usage.

use super::logprobs::{echo_logprobs, vllm_prompt_logprobs};
use super::params::Common;
use super::submitted::ChoiceResult;
use super::AppState;
use serde_json::{json, Value};

/// What an echoing or scoring completion puts before its generated part: the prompt's text and
/// logprobs (echo), vLLM's `prompt_logprobs`, and the prompt's ids (`return_token_ids`). The
/// first chunk of a stream carries the same.
pub fn prompt_part(state: &AppState, common: &Common, prompt: &[u32], text: &str, r: &ChoiceResult) -> Value {
    let tok = &state.model.tokenizer;
    let scored = r.prompt_logprobs.as_deref().unwrap_or(&[]);
    let mut c = json!({"text": "", "logprobs": null});
    if common.echo {
        c["text"] = json!(text);
        if let Some(k) = common.request.logprobs {
            let (lp, _) = echo_logprobs(tok, prompt, scored, k, common.tokens_as_ids);
            c["logprobs"] = lp;
        }
    }
    if common.prompt_logprobs_field.is_some() {
        c["prompt_logprobs"] = vllm_prompt_logprobs(tok, prompt, scored, common.tokens_as_ids);
    }
    if common.return_token_ids {
        c["prompt_token_ids"] = json!(prompt);
    }
    c
}

/// Usage of a request whose results are `n` choices per prompt, prompt-major: each prompt
/// counts once.
pub fn usage(results: &[ChoiceResult], n: usize) -> Value {
    let prompt: usize = results.iter().step_by(n.max(1)).map(|r| r.usage.prompt_tokens).sum();
    let cached: usize = results.iter().step_by(n.max(1)).map(|r| r.usage.cached_tokens).sum();
    let completion: usize = results.iter().map(|r| r.usage.completion_tokens).sum();
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached}})
}
