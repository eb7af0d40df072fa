//! Tool calling wired into a chat request: the grammar constraint for "required" and named
//! choices, and the assistant message with `tool_calls` parsed from the generated tokens.

use super::error::ApiError;
use super::params::Common;
use super::submitted::ChoiceResult;
use super::structured::{attach, Constraint};
use super::tools::{tool_calls_json, ToolChoice, ToolFormat, Tools};
use super::AppState;
use mlahost_engine::Tokenizer;
use serde_json::{json, Value};

/// Constrains the request as its `tool_choice` says; the format to parse calls with, unless
/// tools are off (no tools, or "none").
pub fn attach_tools(state: &AppState, tools: Option<&Tools>, common: &mut Common) -> Result<Option<ToolFormat>, ApiError> {
    let Some(tools) = tools else { return Ok(None) };
    if matches!(tools.choice, ToolChoice::None) {
        return Ok(None);
    }
    let format = ToolFormat::deepseek_v3(&state.model.tokenizer)
        .ok_or_else(|| ApiError::invalid("tools", "this model's tokenizer has no tool-call format mlahost can parse (DeepSeek-V3's)"))?;
    let only = match &tools.choice {
        ToolChoice::Named(name) => Some(name.as_str()),
        ToolChoice::Required => None,
        ToolChoice::Auto | ToolChoice::None => return Ok(Some(format)),
    };
    if common.request.sampler.is_some() {
        return Err(ApiError::invalid("tool_choice", "a required or named `tool_choice` cannot be combined with another output constraint or sampler"));
    }
    let grammar = format.grammar(&tools.tools, only);
    attach(state, common, Constraint { field: "tools".into(), config: json!({"type": "grammar", "grammar": grammar}) })?;
    Ok(Some(format))
}

/// The assistant message of one choice and its finish reason: with tool calls when the model
/// made any ("tool_calls"), else its text.
pub fn message(format: Option<&ToolFormat>, id: &str, index: usize, r: &ChoiceResult, tok: &Tokenizer) -> (Value, Option<&'static str>) {
    let finish = r.finish.map(|f| f.as_str());
    let Some(format) = format else { return (json!({"role": "assistant", "content": r.text}), finish) };
    let ids: Vec<u32> = r.tokens.iter().map(|t| t.id).collect();
    let (content, calls) = format.parse(&ids, tok);
    if calls.is_empty() {
        return (json!({"role": "assistant", "content": r.text}), finish);
    }
    let content = (!content.is_empty()).then_some(content);
    let finish = if finish == Some("stop") { Some("tool_calls") } else { finish };
    (json!({"role": "assistant", "content": content, "tool_calls": tool_calls_json(id, index, &calls)}), finish)
}

/// A streamed choice of a chat request with tools: text streams as content until the model
/// opens a call block; then each call goes out when its end token arrives, as OpenAI streams
/// them (a delta naming the call, then its arguments).
#[derive(Default)]
pub struct ToolStream {
    ids: Vec<u32>,
    in_calls: bool,
    sent: usize,
}

impl ToolStream {
    /// Takes one generated token: `None` to stream its text as content, or the `tool_calls`
    /// deltas it completes (possibly none).
    pub fn on_token(&mut self, format: &ToolFormat, id: u32, tok: &Tokenizer, response_id: &str, choice: usize) -> Option<Vec<Value>> {
        self.ids.push(id);
        if !self.in_calls && !format.opens_calls(id) {
            return None;
        }
        self.in_calls = true;
        if !format.ends_call(id) {
            return Some(Vec::new());
        }
        let (_, calls) = format.parse(&self.ids, tok);
        let all = tool_calls_json(response_id, choice, &calls);
        let mut deltas = Vec::new();
        for (k, call) in all.as_array().into_iter().flatten().enumerate().skip(self.sent) {
            deltas.push(json!([{"index": k, "id": call["id"], "type": "function", "function": {"name": call["function"]["name"], "arguments": ""}}]));
            deltas.push(json!([{"index": k, "function": {"arguments": call["function"]["arguments"]}}]));
        }
        self.sent = calls.len();
        Some(deltas)
    }

    /// The finish reason: "tool_calls" when calls were sent and the model stopped.
    pub fn finish_reason(&self, reason: &'static str) -> &'static str {
        if self.sent > 0 && reason == "stop" { "tool_calls" } else { reason }
    }
}
