//! The CPU engine against transformers' goldens (tests/fixtures/*/golden.json): greedy tokens
//! up to the first near-tie, and log-probabilities.

use mlahost_engine::cpu::AttentionMode;
use mlahost_runtime::generate::{generate, GenerateRequest};
use mlahost_engine::sampling::SamplingParams;
use mlahost_tests::{backend, floats, golden, ids, load, BUILT_IN, FIXTURES};
use serde_json::Value;

/// transformers' own top-2 margin below which its greedy choice is a coin toss.
const NEAR_TIE: f64 = 1e-3;
/// Top-5 log-probabilities at the first step.
const FIRST_STEP_LOGPROB_TOL: f64 = 2e-3;
/// The chosen token's log-probability at later steps, while the tokens agree.
const STEP_LOGPROB_TOL: f64 = 5e-3;

fn check_case(fixture: &str, model: &mlahost_engine::LoadedModel, case: &Value, page_size: usize) -> usize {
    let name = case["name"].as_str().unwrap_or("chat");
    let prompt = ids(&case["prompt_ids"]);
    let expected = ids(&case["greedy_ids"]);
    let margins = floats(&case["margins"]);
    let chosen = floats(&case["chosen_logprobs"]);
    let pages = (prompt.len() + expected.len()).div_ceil(page_size);
    let mut b = backend(model, pages, page_size, AttentionMode::Auto);
    let req = GenerateRequest {
        prompt,
        max_tokens: expected.len(),
        sampling: SamplingParams { temperature: 0.0, ..Default::default() },
        top_logprobs: 5,
        ignore_eos: true,
    };
    let out = generate(model, &mut b, &req).unwrap_or_else(|e| panic!("{fixture}/{name}: {e}"));
    let comparable = margins.iter().position(|&m| m < NEAR_TIE).unwrap_or(margins.len());
    for step in 0..comparable {
        assert_eq!(out.token_ids[step], expected[step], "{fixture}/{name}: token {step} differs (page size {page_size})");
        let d = (out.logprobs[step] as f64 - chosen[step]).abs();
        assert!(d < STEP_LOGPROB_TOL, "{fixture}/{name}: step {step} logprob off by {d}");
    }
    let top: Vec<(u32, f64)> = case["top_logprobs"][0]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["id"].as_u64().unwrap() as u32, e["logprob"].as_f64().unwrap()))
        .collect();
    for (i, (id, lp)) in top.iter().enumerate() {
        let (got_id, got_lp) = out.top_logprobs[0][i];
        assert_eq!(got_id, *id, "{fixture}/{name}: first-step top-{} id", i + 1);
        let d = (got_lp as f64 - lp).abs();
        assert!(d < FIRST_STEP_LOGPROB_TOL, "{fixture}/{name}: first-step top-{} logprob off by {d}", i + 1);
    }
    comparable
}

/// Every golden case of one checkpoint, greedy and log-probabilities.
fn check_greedy(fixture: &str) {
    let model = load(fixture);
    let g = golden(fixture);
    let cases: Vec<&Value> = g["cases"].as_array().unwrap().iter().chain(g["chat_cases"].as_array().unwrap()).collect();
    assert!(cases.len() >= 6, "{fixture}: too few golden cases");
    let mut compared = 0;
    for (i, case) in cases.iter().enumerate() {
        // Vary the page size across cases; the invariance tests pin it down separately.
        let page_size = [64, 16, 1][i % 3];
        compared += check_case(fixture, &model, case, page_size);
    }
    // The comparison must not be vacuous: the goldens have few near-ties.
    assert!(compared >= cases.len() * 12, "{fixture}: only {compared} steps compared");
    eprintln!("{fixture}: {compared} greedy steps matched across {} cases", cases.len());
}

/// The tokenizer's ids and decoded text against AutoTokenizer's, and the chat template's presence.
fn check_tokenizer(fixture: &str) {
    let model = load(fixture);
    for case in golden(fixture)["tokenizer_cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let expected = ids(&case["ids"]);
        assert_eq!(model.tokenizer.encode(text, true).unwrap(), expected, "{fixture}: encoding {text:?}");
        let decoded = model.tokenizer.decode(&expected[1..], false).unwrap();
        assert_eq!(decoded, case["decoded"].as_str().unwrap(), "{fixture}: decoding {text:?}");
    }
    assert!(model.tokenizer.chat_template.as_deref().is_some_and(|t| t.contains("add_generation_prompt")));
    assert_eq!(model.tokenizer.bos_token_id, model.config.bos_token_id);
}

#[test]
fn greedy_continuations_match_transformers() {
    for fixture in FIXTURES {
        check_greedy(fixture);
    }
}

#[test]
fn tokenizer_matches_transformers() {
    for fixture in FIXTURES {
        check_tokenizer(fixture);
    }
}

/// The trained model `serve` runs by default: the same checks on a model whose weights are not
/// random (sharper distributions, real routing), with its own BPE vocabulary.
#[test]
fn the_built_in_model_matches_transformers() {
    check_greedy(BUILT_IN);
    check_tokenizer(BUILT_IN);
}
