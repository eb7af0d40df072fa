//! Structured outputs on the built-in random-weight model, through the built-in grammar plugin
//! (tests/structured_outputs.py: generated JSON schemas validated with `jsonschema`, regex,
//! choice, Lark, invalid constraints, the `openai` package's `parse`, batch independence).
//! CI installs the Python packages (.ci/run); elsewhere the test is skipped with a note.

mod support;

use serde_json::json;
use support::Server;

#[test]
fn structured_outputs_hold_on_the_random_model() {
    if !support::python_has("openai, jsonschema, pydantic", "openai jsonschema") {
        return;
    }
    let server = Server::start(&["--served-model-name", "tiny-v2-lite"]);
    let stdout = support::run_python_check("structured_outputs.py", &server, "", "tiny-v2-lite", "the structured-output checks");
    assert!(stdout.contains(" passed, 0 failed"));
}

#[test]
fn a_json_schema_constrains_completions_without_python() {
    let server = Server::start(&[]);
    let schema = json!({"type": "object", "properties": {"n": {"type": "integer", "minimum": 1, "maximum": 9}, "c": {"enum": ["a", "b"]}},
                        "required": ["n", "c"], "additionalProperties": false});
    for seed in 0..5 {
        let body = json!({"prompt": "x", "max_tokens": 64, "seed": seed, "guided_json": schema});
        let (status, v) = server.post("/v1/completions", &body);
        assert_eq!(status, 200, "{v}");
        let text = v["choices"][0]["text"].as_str().unwrap();
        let out: serde_json::Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
        let n = out["n"].as_i64().unwrap();
        assert!((1..=9).contains(&n) && ["a", "b"].contains(&out["c"].as_str().unwrap()), "{out}");
        assert_eq!(out.as_object().unwrap().len(), 2, "{out}");
    }
}

#[test]
fn a_grammar_that_overruns_its_deadline_fails_its_request_cleanly_and_no_other() {
    // The grammar plugin again, with a 1 ms deadline: compiling a schema of a thousand
    // properties cannot finish in it.
    let file = std::env::temp_dir().join(format!("mlahost-grammar-deadline-{}.json", std::process::id()));
    let entry = json!({"plugins": [{"path": support::plugin("grammar"), "name": "grammar", "failure_policy": "closed",
                                    "deadline_ms": 1, "memory_mb": 256}]});
    std::fs::write(&file, entry.to_string()).unwrap();
    let server = Server::start(&["--plugins-file", file.to_str().unwrap()]);
    let props: serde_json::Map<String, serde_json::Value> =
        (0..1000).map(|i| (format!("p{i}"), json!({"enum": (0..20).map(|j| format!("v{i}_{j}")).collect::<Vec<_>>()}))).collect();
    let schema = json!({"type": "object", "properties": props, "required": ["p0", "p999"]});
    let (status, v) = server.post("/v1/completions", &json!({"prompt": "x", "max_tokens": 8, "guided_json": schema}));
    assert!((500..600).contains(&status), "{status} {v}");
    assert!(v["error"]["message"].as_str().is_some_and(|m| m.contains("grammar plugin")) && v["error"]["code"] == status, "{v}");
    assert!(server.metric("mlahost_plugin_timeouts_total") >= 1.0);
    // Other requests are served as before.
    let (status, v) = server.post("/v1/completions", &json!({"prompt": "x", "max_tokens": 8, "ignore_eos": true}));
    assert_eq!((status, v["usage"]["completion_tokens"].as_u64()), (200, Some(8)), "{v}");
    let _ = std::fs::remove_file(file);
}
