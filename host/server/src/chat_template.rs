//! The checkpoint's Jinja chat template, rendered with minijinja and Python-compatible string
//! methods (DeepSeek's templates call `.split`, `.startswith`, ...).

use crate::api::error::ApiError;
use minijinja::{Environment, Error, ErrorKind};
use serde_json::{json, Map, Value};

pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    pub fn new(source: &str, bos_token: Option<&str>, eos_token: Option<&str>) -> Result<Self, String> {
        let mut env = Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<String, Error> {
            Err(Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_template_owned("chat", source.to_string()).map_err(|e| format!("chat_template does not parse: {e}"))?;
        Ok(Self { env, bos_token: bos_token.unwrap_or("").into(), eos_token: eos_token.unwrap_or("").into() })
    }

    /// Renders `messages` (already validated: role and string content each), with the
    /// request's `chat_template_kwargs` as extra variables: as in transformers they may
    /// replace the special tokens' strings, never the messages, the tools or the generation
    /// prompt. `tools` (the request's, when it has any) is the template's `tools` variable.
    pub fn render(&self, messages: &[Value], add_generation_prompt: bool, kwargs: &Map<String, Value>, tools: Option<&Value>) -> Result<String, ApiError> {
        let tmpl = self.env.get_template("chat").map_err(|e| ApiError::internal(e.to_string()))?;
        let mut ctx = Map::new();
        ctx.insert("bos_token".into(), json!(self.bos_token));
        ctx.insert("eos_token".into(), json!(self.eos_token));
        ctx.extend(kwargs.clone());
        ctx.insert("messages".into(), json!(messages));
        ctx.insert("add_generation_prompt".into(), json!(add_generation_prompt));
        ctx.insert("tools".into(), json!(tools));
        tmpl.render(ctx).map_err(|e| ApiError::invalid("messages", format!("the chat template failed: {e}")))
    }
}

/// `continue_final_message`: the rendered chat up to the end of the final message's content,
/// so the model continues it (what transformers' `apply_chat_template` does).
pub fn cut_after_final_message(rendered: &str, final_message: &str) -> Result<String, ApiError> {
    let trimmed = final_message.trim();
    let at = rendered.rfind(trimmed).ok_or_else(|| {
        ApiError::invalid("continue_final_message", "the final message does not appear in the chat once the template is applied")
    })?;
    let lead = final_message.trim_start();
    let end = if rendered[at..].starts_with(lead) { at + lead.len() } else { at + trimmed.len() };
    Ok(rendered[..end].to_string())
}

/// Validates the messages and flattens content parts (`[{"type": "text", "text": ...}]`).
pub fn normalize_messages(v: Option<&Value>) -> Result<Vec<Value>, ApiError> {
    let list = v.and_then(Value::as_array).ok_or_else(|| ApiError::invalid("messages", "`messages` must be a list"))?;
    if list.is_empty() {
        return Err(ApiError::invalid("messages", "`messages` must not be empty"));
    }
    list.iter()
        .enumerate()
        .map(|(i, m)| {
            let role = m.get("role").and_then(Value::as_str).ok_or_else(|| {
                ApiError::invalid(&format!("messages[{i}].role"), "each message needs a string `role`")
            })?;
            if !matches!(role, "system" | "user" | "assistant" | "tool" | "developer") {
                return Err(ApiError::invalid(&format!("messages[{i}].role"), format!("unknown role {role:?}")));
            }
            let content = match m.get("content") {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => parts
                    .iter()
                    .map(|p| match (p.get("type").and_then(Value::as_str), p.get("text").and_then(Value::as_str)) {
                        (Some("text"), Some(t)) => Ok(t.to_string()),
                        _ => Err(ApiError::invalid(&format!("messages[{i}].content"), "only text content parts are supported")),
                    })
                    .collect::<Result<Vec<_>, _>>()?
                    .join(""),
                Some(_) => return Err(ApiError::invalid(&format!("messages[{i}].content"), "content must be a string or a list of parts")),
            };
            let role = if role == "developer" { "system" } else { role };
            Ok(json!({"role": role, "content": content}))
        })
        .collect()
}
