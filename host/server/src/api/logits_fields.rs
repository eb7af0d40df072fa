//! The request fields that change the logits or the stop tokens (`logit_bias`,
//! `allowed_token_ids`, `bad_words`, `min_tokens`, `stop_token_ids`) and the prompt logprobs
//! the engine must compute, read with the model's vocabulary and tokenizer at hand.

use super::error::ApiError;
use super::params::{Common, Fields};
use mlahost_engine::LoadedModel;
use super::fields::Endpoint;

/// Fills the request's logits processors and stop tokens from the body.
pub fn read_logits_fields(f: &Fields, model: &LoadedModel, endpoint: Endpoint, common: &mut Common) -> Result<(), ApiError> {
    let vocab = model.config.vocab_size;
    let params = &mut common.request.params;
    if let Some(v) = f.get("logit_bias") {
        let map = v.as_object().ok_or_else(|| ApiError::invalid("logit_bias", "`logit_bias` must be an object of token id -> bias"))?;
        params.logit_bias = map
            .iter()
            .map(|(k, b)| {
                let id = k.trim().parse::<u32>().ok().filter(|&t| (t as usize) < vocab).ok_or_else(|| {
                    ApiError::invalid("logit_bias", format!("`logit_bias` key {k:?} is not a token id of the vocabulary (size {vocab})"))
                })?;
                let bias = b.as_f64().filter(|x| x.is_finite()).ok_or_else(|| ApiError::invalid("logit_bias", "`logit_bias` values must be numbers"))?;
                // OpenAI's range; vLLM clamps to it too.
                Ok((id, bias.clamp(-100.0, 100.0) as f32))
            })
            .collect::<Result<_, ApiError>>()?;
    }
    if let Some(ids) = token_list(f, "allowed_token_ids", vocab)? {
        if ids.is_empty() {
            return Err(ApiError::invalid("allowed_token_ids", "`allowed_token_ids` must not be empty"));
        }
        params.allowed_token_ids = Some(ids);
    }
    if let Some(v) = f.get("bad_words") {
        let words = v.as_array().ok_or_else(|| ApiError::invalid("bad_words", "`bad_words` must be a list of strings"))?;
        for w in words {
            let w = w.as_str().ok_or_else(|| ApiError::invalid("bad_words", "`bad_words` must be a list of strings"))?;
            params.bad_words.extend(bad_word_sequences(model, w)?);
        }
    }
    let stop_token_ids = token_list(f, "stop_token_ids", vocab)?.unwrap_or_default();
    let min_tokens = f.int("min_tokens")?.unwrap_or(0);
    if min_tokens < 0 {
        return Err(ApiError::invalid("min_tokens", "`min_tokens` must be >= 0"));
    }
    let min_tokens = usize::try_from(min_tokens).unwrap_or(usize::MAX);
    if common.max_tokens.is_some_and(|m| min_tokens > m) {
        return Err(ApiError::invalid("min_tokens", "`min_tokens` must be at most `max_tokens`"));
    }
    params.min_tokens = min_tokens;
    if min_tokens > 0 {
        let mut banned = stop_token_ids.clone();
        if !common.request.ignore_eos {
            banned.extend(model.stop_token_ids());
        }
        banned.sort_unstable();
        banned.dedup();
        params.min_tokens_banned = banned;
    }
    common.request.stop_token_ids = stop_token_ids.into();
    // A completion's echo with logprobs reports the prompt's logprobs too (vLLM asks the engine
    // for them); a chat's echo repeats the last message, unscored.
    let echo_k = (common.echo && endpoint == Endpoint::Completions).then_some(common.request.logprobs).flatten();
    common.request.prompt_logprobs = common.prompt_logprobs_field.max(echo_k);
    Ok(())
}

/// A list of token ids inside the vocabulary, if the field is there.
fn token_list(f: &Fields, key: &str, vocab: usize) -> Result<Option<Vec<u32>>, ApiError> {
    let Some(v) = f.get(key) else { return Ok(None) };
    let bad = || ApiError::invalid(key, format!("`{key}` must be a list of token ids of the vocabulary (size {vocab})"));
    let list = v.as_array().ok_or_else(bad)?;
    list.iter()
        .map(|x| x.as_u64().filter(|&t| (t as usize) < vocab).map(|t| t as u32).ok_or_else(bad))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// vLLM's tokenization of a bad word: as written (leading spaces stripped) and, when that makes
/// a different first token of the same length, with one leading space (the word mid-text).
fn bad_word_sequences(model: &LoadedModel, word: &str) -> Result<Vec<Vec<u32>>, ApiError> {
    let encode = |t: &str| model.tokenizer.encode(t, false).map_err(|e| ApiError::invalid("bad_words", e.to_string()));
    let bare = encode(word.trim_start())?;
    if bare.is_empty() {
        return Err(ApiError::invalid("bad_words", "a bad word must not be empty"));
    }
    let spaced = encode(&format!(" {}", word.trim_start()))?;
    let mut out = vec![bare.clone()];
    if spaced.len() == bare.len() && spaced.first() != bare.first() {
        out.push(spaced);
    }
    Ok(out)
}
