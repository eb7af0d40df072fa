//! The CPU engine with each kernel family forced in turn (portable, AVX2+FMA, AVX-512 where the
//! CPU has it): greedy tokens equal to transformers' goldens up to the first near-tie, and the
//! chosen tokens' log-probabilities within the golden tests' tolerance. One test function, so
//! the process-wide kernel choice never changes under another test.

use mlahost_engine::cpu::{set_kernel_isa, AttentionMode, Isa};
use mlahost_runtime::generate::{generate, GenerateRequest};
use mlahost_engine::sampling::SamplingParams;
use mlahost_tests::{backend, floats, golden, ids, load, FIXTURES};
use serde_json::Value;

const NEAR_TIE: f64 = 1e-3;
const STEP_LOGPROB_TOL: f64 = 5e-3;

#[test]
fn every_kernel_family_matches_the_goldens() {
    let families: Vec<Isa> = [Isa::Scalar, Isa::Avx2, Isa::Avx512].into_iter().filter(|i| i.supported()).collect();
    for isa in [Isa::Scalar, Isa::Avx2, Isa::Avx512].iter().filter(|i| !i.supported()) {
        eprintln!("skipping the {} kernels: this CPU lacks them", isa.as_str());
    }
    for fixture in FIXTURES {
        let model = load(fixture);
        let g = golden(fixture);
        let cases: Vec<&Value> = g["cases"].as_array().unwrap().iter().take(3).collect();
        for &isa in &families {
            set_kernel_isa(isa).expect("a supported family");
            for case in &cases {
                let name = case["name"].as_str().unwrap_or("?");
                let (prompt, expected) = (ids(&case["prompt_ids"]), ids(&case["greedy_ids"]));
                let (margins, chosen) = (floats(&case["margins"]), floats(&case["chosen_logprobs"]));
                let mut b = backend(&model, (prompt.len() + expected.len()).div_ceil(16), 16, AttentionMode::Auto);
                let req = GenerateRequest {
                    prompt,
                    max_tokens: expected.len(),
                    sampling: SamplingParams { temperature: 0.0, ..Default::default() },
                    top_logprobs: 0,
                    ignore_eos: true,
                };
                let out = generate(&model, &mut b, &req).unwrap_or_else(|e| panic!("{fixture}/{name}: {e}"));
                let comparable = margins.iter().position(|&m| m < NEAR_TIE).unwrap_or(margins.len());
                assert!(comparable >= 8, "{fixture}/{name}: too few comparable steps");
                for step in 0..comparable {
                    assert_eq!(out.token_ids[step], expected[step], "{fixture}/{name} {isa:?}: token {step}");
                    let d = (out.logprobs[step] as f64 - chosen[step]).abs();
                    assert!(d < STEP_LOGPROB_TOL, "{fixture}/{name} {isa:?}: step {step} logprob off by {d}");
                }
            }
        }
    }
    set_kernel_isa(Isa::best()).expect("the best family");
}
