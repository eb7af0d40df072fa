//! Which request fields mlahost honours, which it refuses, and what happens to the rest.
//!
//! A field that OpenAI or vLLM define for an endpoint is either implemented (listed in
//! `COMMON`, `COMPLETIONS` or `CHAT` and read by the endpoint) or refused with a 400 naming it
//! (`NOT_IMPLEMENTED`, unless its value asks for nothing). A field nobody defines is accepted
//! and logged at debug, by name only.

use super::error::ApiError;
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Completions,
    Chat,
}

/// Read by both endpoints.
const COMMON: &[&str] = &[
    "model", "max_tokens", "temperature", "top_p", "top_k", "min_p", "seed", "stop", "n", "stream",
    "stream_options", "logprobs", "presence_penalty", "frequency_penalty", "repetition_penalty",
    "ignore_eos", "return_tokens_as_token_ids", "priority", "cache_salt", "sampler", "sampler_config",
    "logit_bias", "min_tokens", "stop_token_ids", "allowed_token_ids", "bad_words",
    "truncate_prompt_tokens", "include_stop_str_in_output", "skip_special_tokens",
    "add_special_tokens", "return_token_ids", "prompt_logprobs", "echo", "user",
    // structured outputs (api/structured.rs)
    "response_format", "structured_outputs", "guided_json", "guided_regex", "guided_choice", "guided_grammar",
];

const COMPLETIONS: &[&str] = &["prompt"];

const CHAT: &[&str] = &[
    "messages", "max_completion_tokens", "top_logprobs", "add_generation_prompt", "chat_template_kwargs",
    "continue_final_message", "tools", "tool_choice",
];

/// The structured-output and tool fields mlahost does not implement (the others are in `COMMON`
/// and `CHAT`): the legacy function fields, one call at a time, vLLM's backend and whitespace
/// knobs and structural tags.
const STRUCTURED_OUTPUT: &[(&str, Harmless)] = &[
    ("parallel_tool_calls", |v| v.as_bool() == Some(true)),
    ("functions", |v| v.as_array().is_some_and(Vec::is_empty)),
    ("function_call", |v| v.as_str() == Some("none")),
    ("guided_decoding_backend", |_| false),
    ("guided_whitespace_pattern", |_| false),
    ("structural_tag", |_| false),
];

/// Chat's tool fields, which vLLM also accepts on completions: refused there.
const TOOLS_ON_COMPLETIONS: &[(&str, Harmless)] = &[
    ("tools", |v| v.as_array().is_some_and(Vec::is_empty)),
    ("tool_choice", |v| v.as_str() == Some("none")),
];

/// A value of a not-implemented field that asks for nothing (e.g. `best_of: 1`) passes.
type Harmless = fn(&Value) -> bool;

/// Defined by OpenAI or vLLM, not implemented by mlahost: any other value is a 400.
const NOT_IMPLEMENTED: &[(&str, Harmless)] = &[
    ("suffix", |v| v.as_str() == Some("")),
    ("best_of", |v| v.as_u64() == Some(1)),
    ("use_beam_search", |v| v.as_bool() == Some(false)),
    ("length_penalty", |v| v.as_f64() == Some(1.0)),
    ("spaces_between_special_tokens", |v| v.as_bool() == Some(true)),
    ("prompt_embeds", |_| false),
    ("logits_processors", |_| false),
    ("vllm_xargs", |_| false),
    ("kv_transfer_params", |_| false),
    ("mm_processor_kwargs", |_| false),
    ("documents", |_| false),
    ("chat_template", |_| false),
    ("request_id", |_| false),
    ("return_tokens_as_token_ids_in_text", |_| false),
    ("audio", |_| false),
    ("modalities", |v| v.as_array().is_some_and(|m| m.iter().all(|x| x.as_str() == Some("text")))),
    ("prediction", |_| false),
    ("web_search_options", |_| false),
    ("reasoning_effort", |_| false),
    ("store", |v| v.as_bool() == Some(false)),
    ("metadata", |_| false),
    ("service_tier", |v| matches!(v.as_str(), Some("auto" | "default"))),
    ("verbosity", |_| false),
];

/// Refuses fields this endpoint does not implement; logs the ones nobody defines.
pub fn check_fields(obj: &Map<String, Value>, endpoint: Endpoint) -> Result<(), ApiError> {
    let (own, own_refused) = match endpoint {
        Endpoint::Completions => (COMPLETIONS, TOOLS_ON_COMPLETIONS),
        Endpoint::Chat => (CHAT, &[][..]),
    };
    for (name, value) in obj {
        if value.is_null() || COMMON.contains(&name.as_str()) || own.contains(&name.as_str()) {
            continue;
        }
        let refused = STRUCTURED_OUTPUT.iter().chain(NOT_IMPLEMENTED).chain(own_refused).find(|(n, _)| n == name);
        match refused {
            Some((_, harmless)) if harmless(value) => {}
            Some(_) => {
                return Err(ApiError::invalid(name, format!("`{name}` is not supported by mlahost (see the API reference for the fields it implements)")))
            }
            None => tracing::debug!(field = %name.chars().take(64).collect::<String>(), "unknown request field ignored"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(v: Value, e: Endpoint) -> Result<(), String> {
        check_fields(v.as_object().unwrap(), e).map_err(|e| e.param.unwrap_or_default())
    }

    #[test]
    fn implemented_pass_refused_name_the_field_unknown_pass() {
        assert!(check(json!({"prompt": "x", "echo": true, "logit_bias": {}, "whatever_else": 1}), Endpoint::Completions).is_ok());
        assert_eq!(check(json!({"prompt": "x", "suffix": "tail"}), Endpoint::Completions), Err("suffix".into()));
        assert!(check(json!({"prompt": "x", "suffix": "", "best_of": 1, "tools": []}), Endpoint::Completions).is_ok());
        assert_eq!(check(json!({"best_of": 2}), Endpoint::Completions), Err("best_of".into()));
        assert!(check(json!({"response_format": {"type": "json_object"}, "guided_json": {}}), Endpoint::Chat).is_ok());
        assert!(check(json!({"tools": [{"type": "function"}], "tool_choice": "required"}), Endpoint::Chat).is_ok());
        assert_eq!(check(json!({"prompt": "x", "tools": [{"type": "function"}]}), Endpoint::Completions), Err("tools".into()));
        assert_eq!(check(json!({"parallel_tool_calls": false}), Endpoint::Chat), Err("parallel_tool_calls".into()));
        assert_eq!(check(json!({"guided_decoding_backend": "xgrammar"}), Endpoint::Chat), Err("guided_decoding_backend".into()));
        // On each endpoint no field is both implemented and refused.
        for (own, own_refused) in [(COMPLETIONS, TOOLS_ON_COMPLETIONS), (CHAT, &[][..])] {
            let refused: Vec<&str> = STRUCTURED_OUTPUT.iter().chain(NOT_IMPLEMENTED).chain(own_refused).map(|(n, _)| *n).collect();
            for f in COMMON.iter().chain(own) {
                assert!(!refused.contains(f), "{f} is both implemented and refused");
            }
        }
    }
}
