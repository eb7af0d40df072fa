//! `mlahost generate` as a user runs it.

use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures").join(name)
}

fn golden_case(fixture_name: &str, case: &str) -> Value {
    let g: Value = serde_json::from_str(&std::fs::read_to_string(fixture(fixture_name).join("golden.json")).unwrap()).unwrap();
    g["cases"].as_array().unwrap().iter().find(|c| c["name"] == case).unwrap().clone()
}

fn mlahost(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mlahost")).args(args).output().expect("run mlahost")
}

#[test]
fn json_output_from_text_prompt_matches_the_golden() {
    let case = golden_case("tiny-v3-fp8", "short_text");
    let dir = fixture("tiny-v3-fp8");
    let out = mlahost(&[
        "generate", "--model", dir.to_str().unwrap(), "--prompt", case["prompt_text"].as_str().unwrap(),
        "--max-tokens", "8", "--ignore-eos", "--top-logprobs", "3", "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["prompt_token_ids"], case["prompt_ids"]);
    let expected: Vec<Value> = case["greedy_ids"].as_array().unwrap()[..8].to_vec();
    assert_eq!(v["token_ids"].as_array().unwrap(), &expected);
    assert_eq!(v["logprobs"].as_array().unwrap().len(), 8);
    let top = v["top_logprobs"].as_array().unwrap();
    assert_eq!(top.len(), 8);
    assert_eq!(top[0].as_array().unwrap().len(), 3);
    assert_eq!(top[0][0]["id"], expected[0]);
    let lp0 = v["logprobs"][0].as_f64().unwrap();
    assert!((lp0 - case["chosen_logprobs"][0].as_f64().unwrap()).abs() < 2e-3);
    assert!(v["text"].is_string());
    assert_eq!(v["finish_reason"], "length");
}

#[test]
fn prompt_ids_and_seeded_sampling_are_reproducible() {
    let dir = fixture("tiny-v2-lite");
    let args = [
        "generate", "--model", dir.to_str().unwrap(), "--prompt-ids", "0,17,99", "--max-tokens", "12",
        "--temperature", "0.9", "--top-p", "0.95", "--top-k", "40", "--seed", "11", "--ignore-eos", "--json",
    ];
    let a: Value = serde_json::from_slice(&mlahost(&args).stdout).unwrap();
    let b: Value = serde_json::from_slice(&mlahost(&args).stdout).unwrap();
    assert_eq!(a["token_ids"], b["token_ids"]);
    assert_eq!(a["token_ids"].as_array().unwrap().len(), 12);
}

#[test]
fn bad_input_is_a_clear_error() {
    let dir = fixture("tiny-v2-lite");
    let d = dir.to_str().unwrap();
    let cases: [(&[&str], &str); 4] = [
        (&["generate", "--model", "/no/such/model", "--prompt", "hi"], "/no/such/model"),
        (&["generate", "--model", d, "--prompt-ids", "0,5000"], "outside the vocabulary"),
        (&["generate", "--model", d, "--prompt", "hi", "--temperature=-1"], "temperature"),
        (&["generate", "--model", d, "--prompt", "hi", "--profile-kernels"], "give --device cuda:N"),
    ];
    for (args, msg) in cases {
        let out = mlahost(args);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(msg), "expected {msg:?} in {err:?}");
        assert!(!err.contains("panicked"), "{err}");
    }
}
