//! Structured outputs: `response_format` (OpenAI), `structured_outputs` and `guided_*`
//! (vLLM) become a constraint for the built-in grammar sampler plugin, compiled (and so
//! checked) before the request is queued. A constraint the engine cannot compile is a 400
//! naming the field.

use super::error::ApiError;
use super::params::{Common, Fields};
use super::AppState;
use crate::builtin_plugins::GRAMMAR;
use mlahost_runtime::SamplerChoice;
use serde_json::{json, Value};

/// The request fields that ask for structured output, in the order they are read.
const FIELDS: [&str; 6] = ["response_format", "structured_outputs", "guided_json", "guided_regex", "guided_grammar", "guided_choice"];

/// A constraint for the grammar plugin and the field it came from (for 400s).
pub struct Constraint {
    pub field: String,
    pub config: Value,
}

/// Reads the structured-output fields; at most one may be given.
pub fn constraint_of(f: &Fields) -> Result<Option<Constraint>, ApiError> {
    let given: Vec<&str> = FIELDS.iter().copied().filter(|k| f.get(k).is_some()).collect();
    let field = match given.as_slice() {
        [] => return Ok(None),
        [one] => *one,
        [first, second, ..] => return Err(ApiError::invalid(second, format!("`{first}` and `{second}` both constrain the output; give one"))),
    };
    let Some(v) = f.get(field) else { return Ok(None) };
    let c = |sub: &str, config: Value| Ok(Some(Constraint { field: if sub.is_empty() { field.to_string() } else { format!("{field}.{sub}") }, config }));
    match field {
        "response_format" => response_format(v),
        "structured_outputs" => structured_outputs(v),
        "guided_json" => c("", json!({"type": "json_schema", "schema": schema_value(field, v)?})),
        "guided_regex" => c("", json!({"type": "regex", "pattern": string(field, v)?})),
        "guided_grammar" => c("", json!({"type": "grammar", "grammar": string(field, v)?})),
        _ => c("", json!({"type": "choice", "choices": choices(field, v)?})),
    }
}

/// OpenAI's `{"type": "text" | "json_object" | "json_schema", "json_schema": {"name",
/// "schema", "strict"}}`. The schema is always enforced, `strict` or not.
fn response_format(v: &Value) -> Result<Option<Constraint>, ApiError> {
    let kind = v.get("type").and_then(Value::as_str).ok_or_else(|| ApiError::invalid("response_format.type", "`response_format.type` must be text, json_object or json_schema"))?;
    match kind {
        "text" => Ok(None),
        "json_object" => Ok(Some(Constraint { field: "response_format".into(), config: json!({"type": "json_object"}) })),
        "json_schema" => {
            let js = v.get("json_schema").filter(|j| j.is_object()).ok_or_else(|| ApiError::invalid("response_format.json_schema", "`response_format.json_schema` must be an object"))?;
            if let Some(strict) = js.get("strict").filter(|s| !s.is_null() && !s.is_boolean()) {
                return Err(ApiError::invalid("response_format.json_schema.strict", format!("`strict` must be true or false, got {strict}")));
            }
            let field = "response_format.json_schema.schema";
            let schema = js.get("schema").ok_or_else(|| ApiError::invalid(field, "`response_format.json_schema.schema` is required"))?;
            Ok(Some(Constraint { field: field.into(), config: json!({"type": "json_schema", "schema": schema_value(field, schema)?}) }))
        }
        other => Err(ApiError::invalid("response_format.type", format!("`response_format.type` {other:?}: expected text, json_object or json_schema"))),
    }
}

/// vLLM's `{"json": schema, "regex": ..., "choice": [...], "grammar": ..., "json_object": true}`
/// (exactly one key).
fn structured_outputs(v: &Value) -> Result<Option<Constraint>, ApiError> {
    let obj = v.as_object().ok_or_else(|| ApiError::invalid("structured_outputs", "`structured_outputs` must be an object"))?;
    let set: Vec<(&String, &Value)> = obj.iter().filter(|(_, v)| !v.is_null() && **v != Value::Bool(false)).collect();
    let [(key, value)] = set.as_slice() else {
        return Err(ApiError::invalid("structured_outputs", "`structured_outputs` needs exactly one of json, regex, choice, grammar, json_object"));
    };
    let field = format!("structured_outputs.{key}");
    let config = match key.as_str() {
        "json" => json!({"type": "json_schema", "schema": schema_value(&field, value)?}),
        "regex" => json!({"type": "regex", "pattern": string(&field, value)?}),
        "grammar" => json!({"type": "grammar", "grammar": string(&field, value)?}),
        "choice" => json!({"type": "choice", "choices": choices(&field, value)?}),
        "json_object" => json!({"type": "json_object"}),
        other => return Err(ApiError::invalid(&field, format!("`structured_outputs.{other}` is not supported (json, regex, choice, grammar, json_object)"))),
    };
    Ok(Some(Constraint { field, config }))
}

/// A schema given as an object (or `true`), or as JSON text.
fn schema_value(field: &str, v: &Value) -> Result<Value, ApiError> {
    let schema = match v {
        Value::String(s) => serde_json::from_str(s).map_err(|e| ApiError::invalid(field, format!("`{field}` is not valid JSON: {e}")))?,
        other => other.clone(),
    };
    if !schema.is_object() && schema != Value::Bool(true) {
        return Err(ApiError::invalid(field, format!("`{field}` must be a JSON Schema object")));
    }
    Ok(schema)
}

fn string<'a>(field: &str, v: &'a Value) -> Result<&'a str, ApiError> {
    v.as_str().ok_or_else(|| ApiError::invalid(field, format!("`{field}` must be a string")))
}

fn choices(field: &str, v: &Value) -> Result<Vec<String>, ApiError> {
    let list = v.as_array().filter(|a| !a.is_empty()).ok_or_else(|| ApiError::invalid(field, format!("`{field}` must be a non-empty list of strings")))?;
    list.iter().map(|c| c.as_str().map(str::to_string)).collect::<Option<_>>().ok_or_else(|| ApiError::invalid(field, format!("`{field}` must be a list of strings")))
}

/// Points the request at the grammar plugin with `constraint`, after the plugin compiled it.
pub fn attach(state: &AppState, common: &mut Common, constraint: Constraint) -> Result<(), ApiError> {
    if common.request.sampler.is_some() {
        return Err(ApiError::invalid(&constraint.field, format!("`{}` cannot be combined with a `sampler` plugin", constraint.field)));
    }
    let plugin = state
        .plugins
        .sampler(GRAMMAR)
        .ok_or_else(|| ApiError::invalid(&constraint.field, "structured outputs need the `grammar` sampler plugin, which is not loaded"))?;
    let config = constraint.config.to_string();
    match plugin.check_config(&config) {
        Ok(Ok(())) => {}
        Ok(Err(message)) => return Err(ApiError::invalid(&constraint.field, format!("`{}` cannot be compiled: {message}", constraint.field))),
        Err(e) => {
            tracing::warn!(plugin = GRAMMAR, error = %e, "grammar plugin failed to check a constraint");
            return Err(ApiError::overloaded("the grammar plugin failed while compiling the constraint (details are in the server log)"));
        }
    }
    common.request.sampler = Some(SamplerChoice { name: plugin.spec.name.clone(), config });
    Ok(())
}

/// Reads and attaches the structured-output fields of a request, if any.
pub fn attach_structured(state: &AppState, f: &Fields, common: &mut Common) -> Result<(), ApiError> {
    match constraint_of(f)? {
        Some(c) => attach(state, common, c),
        None => Ok(()),
    }
}
