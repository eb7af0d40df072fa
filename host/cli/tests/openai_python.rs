//! The official `openai` Python package against a running server (tests/openai_client.py).
//! CI installs the package (.ci/run); elsewhere the test is skipped with a note if it is absent.

mod support;

use support::Server;

#[test]
fn openai_python_client_works_against_the_server() {
    if !support::python_has("openai", "openai") {
        return;
    }
    let server = Server::start(&["--served-model-name", "tiny-v2-lite"]);
    let stdout = support::run_python_check("openai_client.py", &server, "/v1", "tiny-v2-lite", "the openai client checks");
    assert!(stdout.contains(" passed, 0 failed"));
}
