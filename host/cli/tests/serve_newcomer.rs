//! `mlahost serve` for a newcomer: a positional MODEL, a hub id answered with the download
//! command, and start-up errors printed once and never after a "ready" line.

mod support;

use std::process::Command;

fn serve(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mlahost")).arg("serve").args(args).args(["--port", "0"]).env("MLAHOST_LOG", "warn").output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).to_string())
}

#[test]
fn a_hub_id_gets_the_download_command() {
    let (ok, err) = serve(&["deepseek-ai/DeepSeek-V2-Lite"]);
    assert!(!ok);
    assert!(err.contains("mlahost reads a local directory; download it with `huggingface-cli download deepseek-ai/DeepSeek-V2-Lite --local-dir DIR`"), "{err}");
    assert!(!err.contains("listening"), "an error before start must not follow a listening line: {err}");
    assert_eq!(err.matches("error:").count(), 1, "{err}");
}

#[test]
fn startup_errors_print_once_and_never_after_ready() {
    let empty = std::env::temp_dir().join(format!("mlahost-empty-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let file = empty.join("not-a-dir.txt");
    std::fs::write(&file, "x").unwrap();
    // Fails while loading, after "listening": the error still comes once and no "ready".
    let bad = empty.join("bad-config");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("config.json"), "{}").unwrap();
    let cases: Vec<Vec<String>> = vec![
        vec![empty.display().to_string()],
        vec![bad.display().to_string()],
        vec![file.display().to_string()],
        vec!["./no/such/dir".into()],
        vec!["--page-size".into(), "0".into()],
        vec!["--replicas".into(), "0".into()],
        vec!["--host".into(), "256.0.0.1".into()],
        // CI has no GPU: the ranks' devices are opened before anything waits on a peer
        vec!["--device".into(), "cuda:0".into(), "-tp".into(), "2".into()],
    ];
    for case in cases {
        let args: Vec<&str> = case.iter().map(String::as_str).collect();
        let (ok, err) = serve(&args);
        assert!(!ok, "{case:?} started");
        assert!(!err.contains("mlahost ready"), "{case:?}: {err}");
        let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(lines.len(), 1, "{case:?}: {err}");
        // No part of the message repeated (a cause quoted by its own error, then again).
        let parts: Vec<&str> = lines[0].trim_start_matches("error: ").split(": ").collect();
        for (i, p) in parts.iter().enumerate() {
            assert!(!parts[i + 1..].contains(p), "{case:?}: `{p}` printed twice: {}", lines[0]);
        }
    }
    let _ = std::fs::remove_dir_all(&empty);
}

#[test]
fn positional_model_serves() {
    let dir = support::fixture("tiny-v2-lite");
    let server = support::Server::start(&[dir.to_str().unwrap()]);
    let (status, models) = server.get("/v1/models");
    assert_eq!(status, 200);
    assert!(models.contains("tiny-v2-lite"), "{models}");
    let out = Command::new(env!("CARGO_BIN_EXE_mlahost")).args(["serve", dir.to_str().unwrap(), "--model", dir.to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success(), "MODEL and --model together must be refused");
}
