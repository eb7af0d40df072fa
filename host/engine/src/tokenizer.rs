//! `tokenizer.json` through the tokenizers crate, plus the special-token and chat-template
//! settings of `tokenizer_config.json`.

use crate::{EngineError, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    file: PathBuf,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    /// Prepend BOS ourselves: only when tokenizer.json has no post-processor (which otherwise
    /// decides, as in transformers) and `add_bos_token` asks for it.
    add_bos: bool,
    pub chat_template: Option<String>,
}

impl Tokenizer {
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let file = dir.join("tokenizer.json");
        if !file.exists() {
            return Err(EngineError::Tokenizer { file, message: "not found".into() });
        }
        let inner = tokenizers::Tokenizer::from_file(&file)
            .map_err(|e| EngineError::Tokenizer { file: file.clone(), message: e.to_string() })?;
        let config_file = dir.join("tokenizer_config.json");
        let config = if config_file.exists() {
            let text = std::fs::read_to_string(&config_file).map_err(|source| EngineError::Io { path: config_file.clone(), source })?;
            serde_json::from_str(&text).map_err(|e| EngineError::Json { file: config_file.clone(), message: e.to_string() })?
        } else {
            Value::Null
        };
        let bos_token = special_token(&config, "bos_token");
        let eos_token = special_token(&config, "eos_token");
        let id_of = |tok: &Option<String>, field: &str| -> Result<Option<u32>> {
            match tok {
                None => Ok(None),
                Some(t) => inner.token_to_id(t).map(Some).ok_or_else(|| EngineError::Tokenizer {
                    file: config_file.clone(),
                    message: format!("{field} {t:?} is not in the vocabulary"),
                }),
            }
        };
        let bos_token_id = id_of(&bos_token, "bos_token")?;
        let eos_token_id = id_of(&eos_token, "eos_token")?;
        let add_bos = inner.get_post_processor().is_none()
            && bos_token_id.is_some()
            && config.get("add_bos_token").and_then(Value::as_bool).unwrap_or(true);
        Ok(Self {
            inner,
            file,
            bos_token,
            eos_token,
            bos_token_id,
            eos_token_id,
            add_bos,
            chat_template: chat_template(&config),
        })
    }

    /// Bytes of the longest token's text (special tokens included): no token stands for more
    /// input bytes, so a text of B bytes has at least B / this many tokens.
    pub fn max_token_bytes(&self) -> usize {
        self.inner.get_vocab(true).keys().map(String::len).max().unwrap_or(1)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Encodes a prompt; with `add_special_tokens` the checkpoint's post-processor (or
    /// `add_bos_token`) adds BOS, as transformers does.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, add_special_tokens).map_err(|e| self.err(e))?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if add_special_tokens && self.add_bos {
            ids.extend(self.bos_token_id);
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner.decode(ids, skip_special_tokens).map_err(|e| self.err(e))
    }

    /// Ids of the added tokens marked special (control tokens such as BOS/EOS).
    pub fn special_ids(&self) -> std::collections::HashSet<u32> {
        self.inner.get_added_tokens_decoder().into_iter().filter(|(_, t)| t.special).map(|(id, _)| id).collect()
    }

    /// Whether token strings are GPT-2 byte-level (the decoder, or one of its steps, is
    /// `ByteLevel`) rather than SentencePiece pieces.
    pub fn is_byte_level(&self) -> bool {
        self.inner.get_decoder().and_then(|d| serde_json::to_string(d).ok()).is_some_and(|d| d.contains("\"ByteLevel\""))
    }

    /// The id of a token given by its text (added tokens included).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    fn err(&self, e: impl std::fmt::Display) -> EngineError {
        EngineError::Tokenizer { file: self.file.clone(), message: e.to_string() }
    }
}

/// `"bos_token": "<s>"` or `"bos_token": {"content": "<s>", ...}`.
fn special_token(config: &Value, key: &str) -> Option<String> {
    match config.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

/// A template string, or the `default` entry of a list of named templates.
fn chat_template(config: &Value) -> Option<String> {
    match config.get("chat_template")? {
        Value::String(s) => Some(s.clone()),
        Value::Array(list) => list
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
            .and_then(|t| t.get("template"))
            .and_then(Value::as_str)
            .map(str::to_string),
        _ => None,
    }
}
