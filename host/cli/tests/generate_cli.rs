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

#[test]
fn dummy_load_format_runs_from_config_and_tokenizer_alone() {
    let dir = std::env::temp_dir().join(format!("mlahost-dummy-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(fixture("tiny-v2").join(f), dir.join(f)).unwrap();
    }
    let d = dir.to_str().unwrap();
    let run = |format: &str| mlahost(&["generate", "--model", d, "--load-format", format, "--prompt", "hello", "--max-tokens", "4", "--ignore-eos", "--json"]);
    let out = run("dummy");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(v["token_ids"].as_array().unwrap().len(), 4);
    // the same weights on every load: the same greedy tokens
    let again: Value = serde_json::from_slice(&run("dummy").stdout).unwrap();
    assert_eq!(again["token_ids"], v["token_ids"]);
    let missing = run("auto");
    assert!(!missing.status.success() && String::from_utf8_lossy(&missing.stderr).contains("no model.safetensors"));
    let unknown = run("pt");
    assert!(!unknown.status.success() && String::from_utf8_lossy(&unknown.stderr).contains("expected auto, safetensors or dummy"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tensor_parallel_ranks_on_the_cpu_generate_the_whole_models_tokens() {
    let dir = fixture("tiny-v3-fp8");
    let d = dir.to_str().unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["generate", "--model", d, "--prompt", "the latent cache", "--max-tokens", "10", "--ignore-eos", "--top-logprobs", "2", "--json"];
        args.extend_from_slice(extra);
        mlahost(&args)
    };
    let json = |out: std::process::Output| -> Value {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let whole = json(run(&[]));
    for extra in [&["-tp", "2"][..], &["--tensor-parallel-size", "4", "--enable-expert-parallel"], &["-tp", "2", "-dp", "2", "--enable-expert-parallel"]] {
        let split = json(run(extra));
        assert_eq!(split["token_ids"], whole["token_ids"], "{extra:?}");
        for (a, b) in split["logprobs"].as_array().unwrap().iter().zip(whole["logprobs"].as_array().unwrap()) {
            assert!((a.as_f64().unwrap() - b.as_f64().unwrap()).abs() < 1e-3, "{extra:?}: logprob {a} vs {b}");
        }
    }
    let refused = |extra: &[&str], why: &str| {
        let out = run(extra);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(why), "{extra:?}: {err}");
    };
    refused(&["-tp", "3"], "4 attention heads do not split evenly over --tensor-parallel-size 3");
    refused(&["-dp", "3", "--enable-expert-parallel"], "routed experts do not split evenly over 3 expert-parallel ranks");
}
