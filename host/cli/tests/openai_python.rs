//! The official `openai` Python package against a running server (tests/openai_client.py).
//! CI installs the package (.ci/run); elsewhere the test is skipped with a note if it is absent.

mod support;

use std::process::Command;
use support::Server;

#[test]
fn openai_python_client_works_against_the_server() {
    let has_openai = Command::new("python3").args(["-c", "import openai"]).status().is_ok_and(|s| s.success());
    if !has_openai {
        assert!(std::env::var_os("CI").is_none(), "CI must install the openai package (pip install openai)");
        eprintln!("skipped: python3 with the `openai` package is not available (pip install openai)");
        return;
    }
    let server = Server::start(&["--served-model-name", "tiny-v2-lite"]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/openai_client.py");
    let out = Command::new("python3")
        .args([script, "--base-url", &format!("http://{}/v1", server.addr), "--model", "tiny-v2-lite"])
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the openai client checks failed");
    assert!(stdout.contains(" passed, 0 failed"));
}
