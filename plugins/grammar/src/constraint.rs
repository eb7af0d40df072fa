//! A request's constraint (its `sampler_config`) and the llguidance grammar it compiles to.
//!
//! `{"type": "json_schema", "schema": {...}}`, `{"type": "json_object"}`,
//! `{"type": "regex", "pattern": "..."}`, `{"type": "choice", "choices": ["a", "b"]}`,
//! `{"type": "grammar", "grammar": "<Lark text>"}`. JSON output is compact (no whitespace
//! between tokens) unless the schema carries its own `x-guidance` options: a model cannot
//! then pad JSON with endless whitespace.

use llguidance::api::TopLevelGrammar;
use serde_json::{json, Value};

/// Compact JSON: what a schema without `x-guidance` options gets.
fn compact_options() -> Value {
    json!({"whitespace_flexible": false, "item_separator": ",", "key_separator": ":"})
}

/// The grammar for a `sampler_config` text; `Err` says what is wrong with it.
pub fn grammar_for(config: &str) -> Result<TopLevelGrammar, String> {
    let v: Value = serde_json::from_str(config).map_err(|e| format!("sampler_config is not JSON: {e}"))?;
    let kind = v.get("type").and_then(Value::as_str).ok_or("sampler_config needs a string `type`")?;
    let field = |name: &str| v.get(name).ok_or_else(|| format!("a `{kind}` constraint needs `{name}`"));
    match kind {
        "json_schema" => {
            let schema = field("schema")?;
            if !schema.is_object() && !schema.is_boolean() {
                return Err("`schema` must be a JSON Schema object".into());
            }
            Ok(TopLevelGrammar::from_json_schema(with_compact_output(schema.clone())))
        }
        "json_object" => Ok(TopLevelGrammar::from_json_schema(with_compact_output(json!({"type": "object"})))),
        "regex" => Ok(TopLevelGrammar::from_regex(field("pattern")?.as_str().ok_or("`pattern` must be a string")?)),
        "choice" => {
            let choices = field("choices")?.as_array().ok_or("`choices` must be a list of strings")?;
            let texts: Vec<&str> = choices.iter().map(Value::as_str).collect::<Option<_>>().ok_or("`choices` must be a list of strings")?;
            if texts.is_empty() {
                return Err("`choices` must not be empty".into());
            }
            Ok(TopLevelGrammar::from_regex(&texts.iter().map(|t| escape_regex(t)).collect::<Vec<_>>().join("|")))
        }
        "grammar" => Ok(TopLevelGrammar::from_lark(field("grammar")?.as_str().ok_or("`grammar` must be a string")?.to_string())),
        other => Err(format!("unknown constraint type {other:?} (json_schema, json_object, regex, choice, grammar)")),
    }
}

fn with_compact_output(mut schema: Value) -> Value {
    if let Some(obj) = schema.as_object_mut() {
        obj.entry("x-guidance").or_insert_with(compact_options);
    }
    schema
}

/// `text` as a regex that matches exactly it.
fn escape_regex(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_are_checked_before_compiling() {
        assert!(grammar_for("nope").unwrap_err().contains("not JSON"));
        assert!(grammar_for(r#"{"type": "regex"}"#).unwrap_err().contains("`pattern`"));
        assert!(grammar_for(r#"{"type": "choice", "choices": []}"#).unwrap_err().contains("empty"));
        assert!(grammar_for(r#"{"type": "xml"}"#).unwrap_err().contains("unknown constraint"));
        assert!(grammar_for(r#"{"type": "json_schema", "schema": {"type": "object"}}"#).is_ok());
    }

    #[test]
    fn choice_escapes_regex_syntax() {
        assert_eq!(escape_regex("a.b(c)"), r"a\.b\(c\)");
    }
}
