//! Tool calling for chat: `tools` and `tool_choice` read and checked, the grammar that makes
//! "required" and a named function hold, and DeepSeek-V3's tool-call format parsed out of the
//! generated tokens into OpenAI `tool_calls`.
//!
//! DeepSeek-V3 writes a call as
//! `<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\n```json\nARGS\n```<｜tool▁call▁end｜>`,
//! further calls after a newline, then `<｜tool▁calls▁end｜>`.

use super::error::ApiError;
use super::params::Fields;
use mlahost_engine::Tokenizer;
use serde_json::{json, Value};

/// One function the model may call.
pub struct Tool {
    pub name: String,
    pub parameters: Value,
}

/// What the request allows.
pub enum ToolChoice {
    None,
    Auto,
    Required,
    Named(String),
}

pub struct Tools {
    pub tools: Vec<Tool>,
    pub choice: ToolChoice,
    /// The request's `tools`, as given (for the chat template).
    pub raw: Value,
}

/// The special tokens of the model family's tool-call format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToolFormat {
    calls_begin: u32,
    calls_end: u32,
    call_begin: u32,
    call_end: u32,
    sep: u32,
}

impl ToolFormat {
    /// DeepSeek-V3's tokens, when the tokenizer has them.
    pub fn deepseek_v3(tok: &Tokenizer) -> Option<Self> {
        Some(Self {
            calls_begin: tok.token_id("<｜tool▁calls▁begin｜>")?,
            calls_end: tok.token_id("<｜tool▁calls▁end｜>")?,
            call_begin: tok.token_id("<｜tool▁call▁begin｜>")?,
            call_end: tok.token_id("<｜tool▁call▁end｜>")?,
            sep: tok.token_id("<｜tool▁sep｜>")?,
        })
    }

    /// A Lark grammar (llguidance's dialect) for one or more calls ("required") or exactly
    /// one call of `only`, each call's arguments valid for its function's schema.
    pub fn grammar(&self, tools: &[Tool], only: Option<&str>) -> String {
        let chosen: Vec<&Tool> = tools.iter().filter(|t| only.is_none_or(|n| n == t.name)).collect();
        let mut g = String::new();
        let repeat = if only.is_some() { "" } else { " (\"\\n\" call)*" };
        g.push_str(&format!("start: <[{}]> call{repeat} <[{}]>\n", self.calls_begin, self.calls_end));
        let alternatives: Vec<String> = (0..chosen.len()).map(|i| format!("f{i}")).collect();
        g.push_str(&format!("call: <[{}]> \"function\" <[{}]> ({})\n", self.call_begin, self.sep, alternatives.join(" | ")));
        for (i, t) in chosen.iter().enumerate() {
            let head = serde_json::to_string(&format!("{}\n```json\n", t.name)).unwrap_or_default();
            g.push_str(&format!("f{i}: {head} a{i} \"\\n```\" <[{}]>\n", self.call_end));
            g.push_str(&format!("a{i}: %json {}\n", compact(&t.parameters)));
        }
        g
    }

    /// Whether `id` opens the call block.
    pub fn opens_calls(&self, id: u32) -> bool {
        id == self.calls_begin
    }

    /// Whether `id` ends one call.
    pub fn ends_call(&self, id: u32) -> bool {
        id == self.call_end
    }

    /// The text before the first call, and each call's name and arguments; no calls when the
    /// tokens do not hold a complete call block.
    pub fn parse(&self, tokens: &[u32], tok: &Tokenizer) -> (String, Vec<(String, String)>) {
        let decode = |ids: &[u32]| tok.decode(ids, true).unwrap_or_default();
        let Some(begin) = tokens.iter().position(|&t| t == self.calls_begin) else { return (decode(tokens), Vec::new()) };
        let content = decode(&tokens[..begin]);
        let mut calls = Vec::new();
        let mut rest = &tokens[begin + 1..];
        while let Some(start) = rest.iter().position(|&t| t == self.call_begin) {
            let Some(len) = rest[start..].iter().position(|&t| t == self.call_end) else { break };
            let body = &rest[start + 1..start + len];
            if let Some(sep) = body.iter().position(|&t| t == self.sep) {
                let text = decode(&body[sep + 1..]);
                if let Some((name, args)) = text.split_once('\n') {
                    let args = args.trim().trim_start_matches("```json").trim_end_matches("```").trim();
                    calls.push((name.trim().to_string(), args.to_string()));
                }
            }
            rest = &rest[start + len + 1..];
        }
        (content, calls)
    }
}

/// The schema with llguidance's compact-output options (as the grammar plugin gives JSON
/// schemas), so arguments cannot be padded with endless whitespace.
fn compact(schema: &Value) -> Value {
    let mut s = schema.clone();
    if let Some(o) = s.as_object_mut() {
        o.entry("x-guidance").or_insert_with(|| json!({"whitespace_flexible": false, "item_separator": ",", "key_separator": ":"}));
    }
    s
}

/// Reads `tools` and `tool_choice` (chat only). `None` when the request has no tools.
pub fn parse_tools(f: &Fields) -> Result<Option<Tools>, ApiError> {
    let Some(raw) = f.get("tools") else {
        return match f.get("tool_choice") {
            None => Ok(None),
            Some(Value::String(s)) if s == "none" || s == "auto" => Ok(None),
            Some(_) => Err(ApiError::invalid("tool_choice", "`tool_choice` needs `tools`")),
        };
    };
    let list = raw.as_array().ok_or_else(|| ApiError::invalid("tools", "`tools` must be a list"))?;
    let mut tools = Vec::with_capacity(list.len());
    for (i, t) in list.iter().enumerate() {
        let at = format!("tools[{i}]");
        if t.get("type").and_then(Value::as_str) != Some("function") {
            return Err(ApiError::invalid(&at, format!("`{at}.type` must be \"function\"")));
        }
        let func = t.get("function").filter(|v| v.is_object()).ok_or_else(|| ApiError::invalid(&at, format!("`{at}.function` must be an object")))?;
        let name = func.get("name").and_then(Value::as_str).unwrap_or("");
        let valid = !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            return Err(ApiError::invalid(&format!("{at}.function.name"), "a function name is 1 to 64 of a-z, A-Z, 0-9, _ and -"));
        }
        if tools.iter().any(|x: &Tool| x.name == name) {
            return Err(ApiError::invalid(&format!("{at}.function.name"), format!("two tools are named `{name}`")));
        }
        let parameters = match func.get("parameters") {
            None | Some(Value::Null) => json!({"type": "object"}),
            Some(p) if p.is_object() => p.clone(),
            Some(_) => return Err(ApiError::invalid(&format!("{at}.function.parameters"), "`parameters` must be a JSON Schema object")),
        };
        tools.push(Tool { name: name.to_string(), parameters });
    }
    let choice = match f.get("tool_choice") {
        None => ToolChoice::Auto,
        Some(Value::String(s)) => match s.as_str() {
            "none" => ToolChoice::None,
            "auto" => ToolChoice::Auto,
            "required" => ToolChoice::Required,
            other => return Err(ApiError::invalid("tool_choice", format!("`tool_choice` {other:?}: expected none, auto, required or a function"))),
        },
        Some(v) => {
            let name = v.pointer("/function/name").and_then(Value::as_str).filter(|_| v.get("type").and_then(Value::as_str) == Some("function"));
            let name = name.ok_or_else(|| ApiError::invalid("tool_choice", "`tool_choice` must be {\"type\": \"function\", \"function\": {\"name\": ...}}"))?;
            if !tools.iter().any(|t| t.name == name) {
                return Err(ApiError::invalid("tool_choice", format!("`tool_choice` names `{name}`, which is not in `tools`")));
            }
            ToolChoice::Named(name.to_string())
        }
    };
    if matches!(choice, ToolChoice::Required) && tools.is_empty() {
        return Err(ApiError::invalid("tool_choice", "`tool_choice` \"required\" needs at least one tool"));
    }
    Ok(Some(Tools { tools, choice, raw: raw.clone() }))
}

/// OpenAI's `tool_calls` list for parsed calls; ids are the response id, choice and index.
pub fn tool_calls_json(id: &str, choice: usize, calls: &[(String, String)]) -> Value {
    calls
        .iter()
        .enumerate()
        .map(|(k, (name, args))| json!({"id": format!("call_{}_{choice}_{k}", id.trim_start_matches("chatcmpl-")), "type": "function", "function": {"name": name, "arguments": args}}))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format() -> ToolFormat {
        ToolFormat { calls_begin: 5, calls_end: 6, call_begin: 7, call_end: 8, sep: 13 }
    }

    #[test]
    fn the_grammar_names_the_format_tokens_and_each_schema() {
        let tools = [Tool { name: "get_w".into(), parameters: json!({"type": "object"}) }, Tool { name: "b".into(), parameters: json!({"type": "integer"}) }];
        let g = format().grammar(&tools, None);
        assert!(g.starts_with("start: <[5]> call (\"\\n\" call)* <[6]>\n"), "{g}");
        assert!(g.contains("call: <[7]> \"function\" <[13]> (f0 | f1)\n"), "{g}");
        assert!(g.contains("f0: \"get_w\\n```json\\n\" a0 \"\\n```\" <[8]>\n") && g.contains("a1: %json {\"type\":\"integer\""), "{g}");
        let named = format().grammar(&tools, Some("b"));
        assert!(named.contains("start: <[5]> call <[6]>") && named.contains("(f0)") && named.contains("\"b\\n```json\\n\""), "{named}");
    }
}
