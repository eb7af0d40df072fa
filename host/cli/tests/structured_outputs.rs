//! Structured outputs on the built-in random-weight model, through the built-in grammar plugin
//! (tests/structured_outputs.py: generated JSON schemas validated with `jsonschema`, regex,
//! choice, Lark, invalid constraints, the `openai` package's `parse`, batch independence).
//! CI installs the Python packages (.ci/run); elsewhere the test is skipped with a note.

mod support;

use serde_json::json;
use std::process::Command;
use support::Server;

#[test]
fn structured_outputs_hold_on_the_random_model() {
    let has_packages = Command::new("python3").args(["-c", "import openai, jsonschema, pydantic"]).status().is_ok_and(|s| s.success());
    if !has_packages {
        assert!(std::env::var_os("CI").is_none(), "CI must install openai and jsonschema (pip install openai jsonschema)");
        eprintln!("skipped: python3 with `openai` and `jsonschema` is not available");
        return;
    }
    let server = Server::start(&["--served-model-name", "tiny-v2-lite"]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/structured_outputs.py");
    let out = Command::new("python3")
        .args([script, "--base-url", &format!("http://{}", server.addr), "--model", "tiny-v2-lite"])
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the structured-output checks failed");
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
