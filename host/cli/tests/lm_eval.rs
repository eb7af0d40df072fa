//! lm-evaluation-harness (`local-completions`, echo + logprobs) scores a multiple-choice task
//! made from local JSON against the server on the tiny fixture; accuracy and every per-choice
//! loglikelihood must equal transformers' on the same token ids (tests/lm_eval_check.py).
//! Skipped with a note where lm-eval or transformers is missing, unless MLAHOST_CI=1 (.ci/run
//! installs them).

mod support;

use std::process::Command;
use support::{fixture, Server};

#[test]
fn lm_eval_loglikelihoods_match_transformers() {
    let has = Command::new("python3").args(["-c", "import lm_eval, transformers"]).status().is_ok_and(|s| s.success());
    if !has {
        assert!(std::env::var("MLAHOST_CI").as_deref() != Ok("1"), "CI must install lm-eval: pip install 'lm-eval[api]' transformers");
        eprintln!("skipped: python3 with `lm_eval` and `transformers` is not available (pip install 'lm-eval[api]' transformers)");
        return;
    }
    let server = Server::start(&["--model", fixture("tiny-v2-lite").to_str().unwrap(), "--served-model-name", "tiny-v2-lite"]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/lm_eval_check.py");
    let out = Command::new("python3")
        .args([script, "--base-url", &format!("http://{}", server.addr), "--model", "tiny-v2-lite"])
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "lm-eval's scores differ from transformers'");
    assert!(stdout.contains("lm-eval check: 25 requests, 0 failures"));
}
