//! lm-evaluation-harness (`local-completions`, echo + logprobs) scores a multiple-choice task
//! made from local JSON against the server on the tiny fixture; accuracy and every per-choice
//! loglikelihood must equal transformers' on the same token ids (tests/lm_eval_check.py).
//! Skipped with a note where lm-eval or transformers is missing, unless MLAHOST_CI=1 (.ci/run
//! installs them).

mod support;

use support::{fixture, Server};

#[test]
fn lm_eval_loglikelihoods_match_transformers() {
    if !support::python_has("lm_eval, transformers", "'lm-eval[api]' transformers") {
        return;
    }
    let server = Server::start(&["--model", fixture("tiny-v2-lite").to_str().unwrap(), "--served-model-name", "tiny-v2-lite"]);
    let stdout = support::run_python_check("lm_eval_check.py", &server, "", "tiny-v2-lite", "lm-eval's scores against transformers'");
    assert!(stdout.contains("lm-eval check: 25 requests, 0 failures"));
}
