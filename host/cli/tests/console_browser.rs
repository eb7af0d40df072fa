//! The web console: its assets are served from the binary, and a real headless Chromium
//! drives it (tests/console/drive.py). The browser part skips with a message when chromium,
//! chromedriver or selenium is missing, unless MLAHOST_CI=1 (.ci/run sets it).

mod support;

use std::path::PathBuf;
use std::process::Command;
use support::Server;

#[test]
fn console_assets_are_served_from_the_binary() {
    let server = Server::start(&[]);
    let (status, html) = server.get("/");
    assert_eq!(status, 200);
    assert!(html.contains("<title>mlahost console</title>"), "{html}");
    for asset in ["/console/app.js", "/console/dashboard.js", "/console/style.css"] {
        assert!(html.contains(asset), "the page does not load {asset}");
        let (status, body) = server.get(asset);
        assert_eq!(status, 200, "{asset}");
        assert!(body.len() > 500, "{asset} is nearly empty");
    }
    // Offline: nothing is fetched from another host.
    for asset in ["/", "/console/app.js", "/console/dashboard.js", "/console/style.css"] {
        // The SVG namespace is a name, not an address the browser fetches.
        let body = server.get(asset).1.replace("http://www.w3.org/2000/svg", "");
        assert!(!body.contains("http://") && !body.contains("https://") && !body.contains("//cdn"), "{asset} refers to another host");
    }
}

#[test]
fn console_plan_and_plugins_endpoints() {
    let server = Server::start(&["--page-size", "16", "--kv-cache-pages", "40", "--replicas", "2"]);
    let (status, plan) = server.get("/console/plan?context=100");
    assert_eq!(status, 200, "{plan}");
    let plan: serde_json::Value = serde_json::from_str(&plan).unwrap();
    assert_eq!(plan["pool"]["pages"], 40);
    assert_eq!(plan["pool"]["page_size"], 16);
    assert_eq!(plan["pool"]["tokens"], 640);
    // 100 tokens take 7 pages of 16: 40 / 7 = 5 sequences per replica, 10 over two.
    assert_eq!(plan["pool"]["sequences_per_replica"], 5);
    assert_eq!(plan["pool"]["sequences"], 10);
    assert_eq!(plan["per_sequence"]["context"], 100);
    let stored = plan["per_token_per_layer"]["stored"].as_u64().unwrap();
    let layers = plan["shape"]["layers"].as_u64().unwrap();
    assert_eq!(plan["per_sequence"]["stored_bytes"].as_u64().unwrap(), stored * layers * 100);
    let (status, bad) = server.get("/console/plan?context=zero");
    assert_eq!(status, 400);
    assert!(bad.contains("\"param\":\"context\""), "{bad}");
    let (status, plugins) = server.get("/console/plugins");
    assert_eq!(status, 200);
    // Only the built-in grammar sampler (structured outputs) is loaded without --plugin.
    let plugins: serde_json::Value = serde_json::from_str(&plugins).unwrap();
    let names: Vec<(&str, &str)> = plugins["plugins"].as_array().unwrap().iter().map(|p| (p["name"].as_str().unwrap(), p["kind"].as_str().unwrap())).collect();
    assert_eq!(names, vec![("grammar", "sampler")], "{plugins}");
}

fn have(cmd: &str, arg: &str) -> bool {
    Command::new(cmd).arg(arg).output().map(|o| o.status.success()).unwrap_or(false)
}

#[test]
fn console_in_headless_chromium() {
    let missing: Vec<&str> = [
        ("chromium (apt-get install chromium)", have("/usr/bin/chromium", "--version")),
        ("chromedriver (apt-get install chromium-driver)", have("/usr/bin/chromedriver", "--version")),
        ("selenium (pip install selenium)", python_has("selenium")),
    ]
    .into_iter()
    .filter(|(_, ok)| !ok)
    .map(|(what, _)| what)
    .collect();
    if !missing.is_empty() {
        assert!(std::env::var("MLAHOST_CI").as_deref() != Ok("1"), "the browser test needs {missing:?}");
        eprintln!("SKIPPED console_in_headless_chromium: missing {missing:?}");
        return;
    }
    let key = "console-test-admin-key";
    let hash = Command::new(env!("CARGO_BIN_EXE_mlahost")).args(["hash-key", key]).output().unwrap();
    let hash = String::from_utf8(hash.stdout).unwrap();
    let server = Server::start(&["--admin-key", hash.trim(), "--replicas", "2"]);
    let out = screenshot_dir();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/console/drive.py");
    let url = format!("http://{}", server.addr);
    let run = Command::new("python3")
        .arg(&script)
        .args(["--url", &url, "--out"])
        .arg(&out)
        .args(["--admin-key", key])
        .output()
        .expect("run drive.py");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    eprintln!("{stdout}{stderr}");
    eprintln!("console screenshots: {}", out.display());
    assert!(run.status.success(), "the browser test failed (screenshots in {})", out.display());
    for shot in ["chat.png", "dashboard.png", "plan.png", "plugins.png"] {
        assert!(out.join(shot).metadata().map(|m| m.len() > 1000).unwrap_or(false), "{shot} missing");
    }
}

fn python_has(module: &str) -> bool {
    Command::new("python3").args(["-c", &format!("import {module}")]).status().map(|s| s.success()).unwrap_or(false)
}

/// `$MLAHOST_SCREENSHOTS`, else `console-screenshots` in the target directory.
fn screenshot_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("MLAHOST_SCREENSHOTS") {
        return PathBuf::from(dir);
    }
    // The test binary lives in <target>/debug/deps.
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).map(|t| t.join("console-screenshots")).unwrap_or_else(|| std::env::temp_dir().join("console-screenshots"))
}
