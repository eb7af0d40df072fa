//! WebAssembly plugins in a running server: the examples change behaviour as their READMEs
//! say, hostile plugins are refused or contained, and the sandbox holds.

mod support;

use serde_json::{json, Value};
use std::collections::HashSet;
use support::{hash_key, hostile, open, plugin, refuse_to_start, Server};

fn completion(server: &Server, body: Value) -> (u16, Value) {
    server.post("/v1/completions", &body)
}

fn tokens(v: &Value) -> Vec<u64> {
    v["choices"][0]["logprobs"]["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap()[9..].parse().unwrap())
        .collect()
}

fn greedy_body(prompt: &[u32], n: usize) -> Value {
    json!({"prompt": prompt, "max_tokens": n, "temperature": 0, "ignore_eos": true, "logprobs": 0, "return_tokens_as_token_ids": true})
}

#[test]
fn tenant_quota_rejects_over_the_limit_with_retry_after() {
    let server = Server::start(&["--plugin", &format!("{}:{}", plugin("tenant_quota"), r#"{"default": {"requests_per_min": 2}}"#)]);
    for _ in 0..2 {
        assert_eq!(completion(&server, json!({"prompt": "hi", "max_tokens": 2})).0, 200);
    }
    let r = server.post_raw("/v1/completions", &json!({"prompt": "hi", "max_tokens": 2}).to_string());
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r.header("retry-after").is_some_and(|s| s.parse::<u64>().unwrap() >= 1));
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains("requests_per_min"));
    assert_eq!(v["error"]["type"], "rate_limit_error");
}

/// A component built against mlahost:plugin@0.1.0 (by the SDK before 0.2.0), kept as a fixture.
fn legacy(name: &str) -> String {
    format!("{}/../plugins/tests/fixtures/v0.1.0/{name}.wasm", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn no_repeat_ngram_sampler_removes_repeated_trigrams() {
    removes_repeated_trigrams(&plugin("no_repeat_ngram"));
}

#[test]
fn a_0_1_0_sampler_still_loads_and_works() {
    removes_repeated_trigrams(&legacy("no_repeat_ngram"));
}

fn removes_repeated_trigrams(path: &str) {
    let server = Server::start(&["--plugin", &format!("{path}:{}", r#"{"n": 3}"#)]);
    let trigrams = |t: &[u64]| -> (usize, usize) {
        let all: Vec<&[u64]> = t.windows(3).collect();
        (all.len(), all.iter().collect::<HashSet<_>>().len())
    };
    // A greedy continuation of the tiny model that repeats itself without the plugin.
    let mut found = None;
    for seed in 0..40u32 {
        let prompt: Vec<u32> = (0..6).map(|i| (seed * 37 + i * 11) % 1000).collect();
        let (_, v) = completion(&server, greedy_body(&prompt, 48));
        let (n, distinct) = trigrams(&tokens(&v));
        if distinct < n {
            found = Some(prompt);
            break;
        }
    }
    let prompt = found.expect("some greedy continuation repeats a trigram");
    let mut body = greedy_body(&prompt, 48);
    body["sampler"] = json!("no_repeat_ngram");
    let (status, v) = completion(&server, body);
    assert_eq!(status, 200, "{v}");
    let (n, distinct) = trigrams(&tokens(&v));
    assert_eq!(n, distinct, "with the plugin no trigram repeats");
    assert!(server.metric("mlahost_plugin_calls_total") >= 48.0);
    // Unknown sampler names are a 400 naming the field.
    let (status, v) = completion(&server, json!({"prompt": "x", "sampler": "nope"}));
    assert_eq!((status, v["error"]["param"].as_str()), (400, Some("sampler")));
}

#[test]
fn prefix_router_keeps_shared_prefixes_together_and_is_called() {
    keeps_shared_prefixes_together(&plugin("prefix_router"));
}

#[test]
fn a_0_1_0_router_still_loads_and_works() {
    keeps_shared_prefixes_together(&legacy("prefix_router"));
}

fn keeps_shared_prefixes_together(path: &str) {
    let server = Server::start(&["--replicas", "2", "--page-size", "16", "--plugin", path]);
    let prefix: Vec<u32> = (0..64).map(|i| (i * 13 + 5) % 1000).collect();
    for q in 0..6u32 {
        let prompt: Vec<u32> = prefix.iter().copied().chain([q + 100, q + 200]).collect();
        assert_eq!(completion(&server, greedy_body(&prompt, 2)).0, 200);
    }
    let (a, b) = (server.metric_for("mlahost_requests_routed_total", 0), server.metric_for("mlahost_requests_routed_total", 1));
    assert_eq!((a.min(b), a.max(b)), (0.0, 6.0));
    assert!(server.metric("mlahost_plugin_calls_total") >= 6.0);
    assert_eq!(server.metric("mlahost_plugin_fallbacks_total"), 0.0);
}

#[test]
fn pin_shared_prefixes_keeps_a_popular_prefix_through_eviction() {
    let shared: Vec<u32> = (0..64).map(|i| (i * 7 + 3) % 1000).collect();
    let run = |extra: &[&str]| -> f64 {
        let mut args = vec!["--page-size", "16", "--kv-cache-pages", "24"];
        args.extend_from_slice(extra);
        let server = Server::start(&args);
        for q in 0..3u32 {
            let p: Vec<u32> = shared.iter().copied().chain([q + 500]).collect();
            completion(&server, greedy_body(&p, 2));
        }
        // Distinct prompts push the cache past its size.
        for q in 0..12u32 {
            let p: Vec<u32> = (0..96).map(|i| (q * 97 + i * 31 + 1) % 1000).collect();
            completion(&server, greedy_body(&p, 2));
        }
        let before = server.metric("mlahost_prefix_cache_hits_total");
        let p: Vec<u32> = shared.iter().copied().chain([999]).collect();
        completion(&server, greedy_body(&p, 2));
        assert!(server.metric("mlahost_prefix_cache_evictions_total") > 0.0);
        server.metric("mlahost_prefix_cache_hits_total") - before
    };
    let lru = run(&[]);
    let pinned_arg = format!("{}:{}", plugin("pin_shared_prefixes"), r#"{"min_hits": 2}"#);
    let pinned = run(&["--plugin", &pinned_arg]);
    assert_eq!(lru, 0.0, "plain LRU evicts the shared prefix");
    assert_eq!(pinned, 64.0, "the policy pins it");
}

#[test]
fn bad_plugins_are_refused_at_start_with_the_reason() {
    let junk = std::env::temp_dir().join(format!("mlahost-junk-{}.wasm", std::process::id()));
    std::fs::write(&junk, b"this is not wasm at all").unwrap();
    let cases = [
        (junk.display().to_string(), "not a WebAssembly file"),
        (hostile("hostile_wrong_world"), "matches no mlahost plugin world"),
        (hostile("hostile_init_trap"), "init failed"),
        ("/no/such/plugin.wasm".to_string(), "/no/such/plugin.wasm"),
    ];
    for (path, msg) in cases {
        let err = refuse_to_start(&["--plugin", &path]);
        assert!(err.contains(msg), "{path}: expected {msg:?} in {err}");
        // The guest's own panic is logged; the host must not panic.
        assert!(!err.contains("panicked at host/") && !err.contains("thread 'main' panicked"), "{err}");
    }
    let _ = std::fs::remove_file(junk);
    let err = refuse_to_start(&["--plugin", &plugin("prefix_router"), "--plugin", &format!("{}:{}", hostile("hostile_hook_trap"), "{}")]);
    assert!(err.contains("only one router plugin"), "{err}");
}

#[test]
fn hostile_hooks_are_contained_and_fail_open() {
    let server = Server::start(&[
        "--replicas", "2",
        "--plugin", &hostile("hostile_loop"),
        "--plugin", &hostile("hostile_alloc"),
    ]);
    // A looping sampler: the request falls back to native sampling, within the deadline.
    let started = std::time::Instant::now();
    let mut body = greedy_body(&[0, 5, 9], 3);
    body["sampler"] = json!("hostile_loop");
    let (status, v) = completion(&server, body);
    assert_eq!(status, 200, "{v}");
    assert_eq!(tokens(&v), tokens(&completion(&server, greedy_body(&[0, 5, 9], 3)).1), "native sampling decided");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert!(server.metric("mlahost_plugin_timeouts_total") >= 1.0);
    // An allocation bomb in the router: stopped by the memory cap (a trap) or the deadline,
    // whichever comes first; native routing decides.
    for _ in 0..3 {
        assert_eq!(completion(&server, json!({"prompt": "hello", "max_tokens": 2})).0, 200);
    }
    let stopped = server.metric("mlahost_plugin_traps_total") + server.metric("mlahost_plugin_timeouts_total");
    assert!(stopped >= 4.0, "{stopped}");
    assert!(server.metric("mlahost_plugin_fallbacks_total") >= 4.0);
    // The server's memory stays bounded (each instance is capped at 64 MiB).
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    let rss_kb: u64 = status.lines().find(|l| l.starts_with("VmRSS")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(rss_kb < 1_500_000, "RSS {rss_kb} kB");
    assert_eq!(server.get("/health").0, 200);
}

#[test]
fn hook_traps_and_huge_results_fail_open_or_closed_as_configured() {
    let open_server = Server::start(&["--replicas", "2", "--plugin", &hostile("hostile_hook_trap"), "--plugin", &hostile("hostile_huge_sampler")]);
    for _ in 0..3 {
        assert_eq!(completion(&open_server, json!({"prompt": "hello", "max_tokens": 2})).0, 200);
    }
    let mut body = greedy_body(&[0, 1, 2], 2);
    body["sampler"] = json!("hostile_huge_sampler");
    assert_eq!(completion(&open_server, body).0, 200);
    assert!(open_server.metric("mlahost_plugin_traps_total") >= 4.0);
    // The same router, failing closed: requests get a clear 503; the server stays up.
    let file = std::env::temp_dir().join(format!("mlahost-plugins-{}.json", std::process::id()));
    std::fs::write(&file, json!({"plugins": [{"path": hostile("hostile_hook_trap"), "failure_policy": "closed"}]}).to_string()).unwrap();
    let closed = Server::start(&["--replicas", "2", "--plugins-file", file.to_str().unwrap()]);
    let r = closed.post_raw("/v1/completions", &json!({"prompt": "hello", "max_tokens": 2}).to_string());
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("router plugin failed"), "{}", r.body);
    assert_eq!(closed.get("/health").0, 200);
    let _ = std::fs::remove_file(file);
}

#[test]
fn the_sandbox_has_no_files_sockets_environment_or_clock() {
    let server = Server::start(&["--replicas", "2", "--plugin", &hostile("sandbox_probe")]);
    let r = server.post_raw("/v1/completions", &json!({"prompt": "hello", "max_tokens": 2}).to_string());
    assert_eq!(r.status, 503);
    let v: Value = serde_json::from_str(&r.body).unwrap();
    let report = v["error"]["message"].as_str().unwrap().to_string();
    for expected in ["file=denied", "socket=denied", "env=0", "clock=0"] {
        assert!(report.contains(expected), "{expected} missing from {report:?}");
    }
}

#[test]
fn hot_reload_swaps_versions_without_dropping_requests() {
    let dir = std::env::temp_dir().join(format!("mlahost-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("router.wasm");
    std::fs::copy(plugin("prefix_router"), &path).unwrap();
    let admin = hash_key("operator-secret");
    let server = Server::start(&["--replicas", "2", "--plugin", path.to_str().unwrap(), "--plugin-watch-ms", "0", "--admin-key", &admin]);
    assert_eq!(completion(&server, json!({"prompt": "hi", "max_tokens": 2})).0, 200);
    // A long request in flight across the reload.
    let body = json!({"prompt": "x", "max_tokens": 400, "ignore_eos": true, "stream": true}).to_string();
    let s = open(&server.addr, "POST", "/v1/completions", Some(&body));
    std::thread::sleep(std::time::Duration::from_millis(50));
    std::fs::copy(hostile("sandbox_probe"), &path).unwrap();
    let r = server.post_with_key("/admin/plugins/reload", "{}", "operator-secret");
    assert_eq!(r.status, 200, "{}", r.body);
    // The new version decides now (the probe rejects every request)...
    assert_eq!(server.post_raw("/v1/completions", &json!({"prompt": "hi", "max_tokens": 2}).to_string()).status, 503);
    // ...and the request in flight completed normally.
    let mut raw = String::new();
    std::io::Read::read_to_string(&mut { s }, &mut raw).unwrap();
    assert!(raw.contains("data: [DONE]"), "the in-flight stream was cut");
    // A broken new version is refused and the running one stays.
    std::fs::write(&path, b"garbage").unwrap();
    let r = server.post_with_key("/admin/plugins/reload", "{}", "operator-secret");
    assert_eq!(r.status, 422);
    assert!(r.body.contains("not a WebAssembly file"));
    assert!(!r.body.contains(dir.to_str().unwrap()), "no file paths in error bodies: {}", r.body);
    assert_eq!(server.post_raw("/v1/completions", &json!({"prompt": "hi", "max_tokens": 2}).to_string()).status, 503);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn sdk_and_example_plugin_unit_tests_pass() {
    // The plugin workspaces are separate (they target wasm32-wasip2); their pure-Rust unit
    // tests run natively here so `cargo test --workspace` covers them.
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    for manifest in ["sdk/Cargo.toml", "plugins/Cargo.toml"] {
        let dir = root.join(manifest).parent().unwrap().to_path_buf();
        let out = std::process::Command::new(env!("CARGO"))
            .args(["test", "--manifest-path"])
            .arg(root.join(manifest))
            .env("CARGO_TARGET_DIR", dir.join("target"))
            .output()
            .expect("run cargo");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{manifest}:\n{text}");
        assert!(text.contains("test result: ok"), "{manifest} ran no test");
    }
}
