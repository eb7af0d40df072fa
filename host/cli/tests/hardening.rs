//! The server against hostile plugins, oversized requests and misbehaving connections: each
//! finding of the hardening review as a test (hostile plugins from plugins/hostile, raw-socket
//! clients, memory as RSS).

mod support;

use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use support::{hash_key, hostile, open, parse_response, Server};

fn completion(server: &Server, body: &Value) -> (u16, Value) {
    server.post("/v1/completions", body)
}

fn greedy(prompt: &[u32], n: usize) -> Value {
    json!({"prompt": prompt, "max_tokens": n, "temperature": 0, "ignore_eos": true})
}

/// Writes a plugins file in the temp dir and returns its path.
fn plugins_file(tag: &str, entries: Value) -> String {
    let path = std::env::temp_dir().join(format!("mlahost-hardening-{}-{tag}.json", std::process::id()));
    std::fs::write(&path, json!({ "plugins": entries }).to_string()).unwrap();
    path.display().to_string()
}

/// Reads until the peer closes or `timeout` passes; None when it was still open.
fn read_until_closed(s: &mut TcpStream, timeout: Duration) -> Option<Vec<u8>> {
    s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return Some(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return Some(out),
        }
    }
    None
}

#[test]
fn a_prefix_policy_naming_foreign_pages_cannot_kill_the_engine() {
    let server = Server::start(&["--page-size", "16", "--kv-cache-pages", "24", "--plugin", &hostile("hostile_bad_evict")]);
    // Distinct prompts push the cache past its size, so the policy is asked to evict.
    for q in 0..12u32 {
        let p: Vec<u32> = (0..96).map(|i| (q * 97 + i * 31 + 1) % 1000).collect();
        let (status, v) = completion(&server, &greedy(&p, 2));
        assert_eq!(status, 200, "request {q}: {v}");
    }
    assert!(server.metric("mlahost_prefix_cache_evictions_total") > 0.0);
    assert!(server.metric("mlahost_plugin_invalid_results_total") >= 1.0);
    assert!(server.metric("mlahost_plugin_fallbacks_total") >= 1.0);
    assert_eq!(server.metric("mlahost_engine_restarts_total"), 0.0);
    assert_eq!(server.get("/health").0, 200);
}

#[test]
fn plugins_cannot_sleep_and_no_request_queues_behind_one() {
    let server = Server::start(&["--plugin", &hostile("hostile_sleep_sampler"), "--plugin", &hostile("hostile_sleep_admission")]);
    // The sampler's 20 s sleep traps at once; native sampling decides.
    let started = Instant::now();
    let mut body = greedy(&[1, 2, 3], 3);
    body["sampler"] = json!("hostile_sleep_sampler");
    let (status, v) = completion(&server, &body);
    assert_eq!(status, 200, "{v}");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    // Eight concurrent requests past a 2 s admission sleep: none waits for it.
    let started = Instant::now();
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let addr = server.addr.clone();
            std::thread::spawn(move || support::request(&addr, "POST", "/v1/completions", Some(&greedy(&[i, 5], 2).to_string())).status)
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), 200);
    }
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert!(server.metric("mlahost_plugin_traps_total") + server.metric("mlahost_plugin_busy_total") >= 9.0);
    assert_eq!(server.get("/health").0, 200);
}

#[test]
fn a_trapping_plugin_with_a_slow_init_costs_requests_nothing() {
    let server = Server::start(&["--replicas", "2", "--plugin", &hostile("hostile_slow_init")]);
    let mut slowest = Duration::ZERO;
    for i in 0..12u32 {
        let started = Instant::now();
        assert_eq!(completion(&server, &greedy(&[i, 7], 1)).0, 200);
        slowest = slowest.max(started.elapsed());
    }
    // What one init costs, from the plugin's own histogram.
    let count = server.metric("mlahost_plugin_instance_start_seconds_count");
    assert!(count >= 1.0, "the first instance's start is counted");
    let mean_init = server.metric("mlahost_plugin_instance_start_seconds_sum") / count.max(1.0);
    assert!(mean_init > 0.2, "the hostile init is slow ({mean_init} s)");
    assert!(slowest.as_secs_f64() < mean_init / 2.0, "a request took {slowest:?}; an init takes {mean_init} s");
    assert!(server.metric("mlahost_plugin_traps_total") + server.metric("mlahost_plugin_busy_total") >= 12.0);
}

#[test]
fn limits_are_checked_before_the_work_they_bound() {
    let server = Server::start(&["--max-tenant-requests", "8", "--max-request-body-bytes", "16MiB"]);
    let warm = server.rss_kb();
    // A declared body over the limit: 413 before a byte of it is read.
    let mut s = TcpStream::connect(&server.addr).unwrap();
    write!(s, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 99999999\r\n\r\n").unwrap();
    let r = parse_response(&read_until_closed(&mut s, Duration::from_secs(5)).expect("answered at once"));
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(r.body.contains("--max-request-body-bytes"));
    // 20,000 prompts x n 16 = 320,000 engine requests: refused by count, nothing queued.
    let prompts: Vec<Vec<u32>> = (0..20_000).map(|i| vec![i % 1000]).collect();
    let (status, v) = completion(&server, &json!({"prompt": prompts, "n": 16, "max_tokens": 1}));
    assert_eq!(status, 400, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("--max-prompts-per-request"));
    let prompts: Vec<Vec<u32>> = (0..100).map(|i| vec![i]).collect();
    let (status, v) = completion(&server, &json!({"prompt": prompts, "n": 3, "max_tokens": 1}));
    assert_eq!((status, v["error"]["param"].as_str()), (400, Some("n")), "{v}");
    // Stop lists are bounded before they are copied per choice.
    let stops: Vec<String> = (0..64).map(|i| format!("{i}").repeat(100)).collect();
    let (status, v) = completion(&server, &json!({"prompt": "hi", "stop": stops}));
    assert_eq!(status, 400);
    assert!(v["error"]["message"].as_str().unwrap().contains("--max-stop-strings"));
    let (status, v) = completion(&server, &json!({"prompt": "hi", "stop": ["x".repeat(300)]}));
    assert_eq!(status, 400);
    assert!(v["error"]["message"].as_str().unwrap().contains("--max-stop-string-bytes"));
    assert_eq!(completion(&server, &json!({"prompt": "hi", "n": 17})).0, 400);
    // A tenant's engine requests (prompts x n), not its HTTP requests, meet its limit.
    let (status, v) = completion(&server, &json!({"prompt": [[1], [2], [3]], "n": 3, "max_tokens": 1}));
    assert_eq!(status, 429, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("--max-tenant-requests"));
    // A 10 MB prompt cannot fit the model in any tokenization: refused without tokenizing,
    // while /health keeps answering.
    let huge = json!({"prompt": "lorem ipsum ".repeat(850_000), "max_tokens": 1}).to_string();
    let addr = server.addr.clone();
    let started = Instant::now();
    let t = std::thread::spawn(move || support::request(&addr, "POST", "/v1/completions", Some(&huge)));
    for _ in 0..5 {
        let h = Instant::now();
        assert_eq!(server.get("/health").0, 200);
        assert!(h.elapsed() < Duration::from_millis(500), "/health took {:?}", h.elapsed());
    }
    let r = t.join().unwrap();
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("bytes"), "{}", r.body);
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    // Memory came back: no request above kept anything.
    let rss = server.rss_kb();
    assert!(rss < warm + 200_000, "RSS grew from {warm} to {rss} kB");
    assert_eq!(completion(&server, &greedy(&[1, 2], 2)).0, 200);
}

#[test]
fn connections_are_capped_and_idle_or_slow_ones_are_closed() {
    let server = Server::start(&["--max-connections", "32", "--keep-alive-timeout", "1", "--body-timeout", "1"]);
    // More idle connections than the cap: the extra ones get a 503 at once.
    let mut idle: Vec<TcpStream> = (0..32).map(|_| TcpStream::connect(&server.addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut extra = TcpStream::connect(&server.addr).unwrap();
    let r = parse_response(&read_until_closed(&mut extra, Duration::from_secs(3)).expect("refused at once"));
    assert_eq!(r.status, 503);
    assert!(r.body.contains("--max-connections"));
    // Idle connections are closed after the keep-alive timeout; then /health answers again.
    for s in &mut idle {
        assert!(read_until_closed(s, Duration::from_secs(4)).is_some(), "an idle connection stayed open");
    }
    assert_eq!(server.get("/health").0, 200);
    // Half-sent headers and a half-sent body are closed too (408 for the body).
    let mut headers = TcpStream::connect(&server.addr).unwrap();
    write!(headers, "POST /v1/completions HTTP/1.1\r\nHost: x\r\n").unwrap();
    assert!(read_until_closed(&mut headers, Duration::from_secs(4)).is_some(), "half-sent headers held the connection");
    let mut body = TcpStream::connect(&server.addr).unwrap();
    write!(body, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"prompt\"").unwrap();
    let raw = read_until_closed(&mut body, Duration::from_secs(4)).expect("half-sent body held the connection");
    assert_eq!(parse_response(&raw).status, 408);
}

#[test]
fn a_long_prompt_prefilling_does_not_hold_up_a_short_request() {
    let server = Server::start(&["--max-num-batched-tokens", "32", "--page-size", "16", "--max-model-len", "4096"]);
    let long: Vec<u32> = (0..2000).map(|i| (i * 13 + 7) % 1000).collect();
    let body = json!({"prompt": long, "max_tokens": 1, "stream": true}).to_string();
    let started = Instant::now();
    let mut s = open(&server.addr, "POST", "/v1/completions", Some(&body));
    std::thread::sleep(Duration::from_millis(100));
    let (status, _) = completion(&server, &greedy(&[1, 2, 3, 4], 2));
    let short_done = started.elapsed();
    assert_eq!(status, 200);
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let long_done = started.elapsed();
    assert!(raw.contains("[DONE]"));
    // 2,000 tokens at 32 per step are 63 steps; the short request needs 3.
    assert!(short_done < long_done / 3, "short request {short_done:?}, long prefill {long_done:?}");
}

#[test]
fn admin_endpoints_need_the_operator_key_and_error_bodies_hide_files() {
    let dir = std::env::temp_dir().join(format!("mlahost-admin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tenants = dir.join("t.toml");
    std::fs::write(&tenants, format!("[[tenants]]\nid = \"acme\"\napi_keys = [\"{}\"]\n", hash_key("key-acme"))).unwrap();
    let tenants = tenants.display().to_string();
    // Without --admin-key the admin endpoints are off.
    let server = Server::start(&["--tenants", &tenants]);
    for path in ["/admin/plugins/reload", "/admin/tenants/reload", "/reset_prefix_cache"] {
        assert_eq!(server.post_raw(path, "{}").status, 403, "{path}");
        assert_eq!(server.post_with_key(path, "{}", "key-acme").status, 403, "{path}: a tenant key is no admin key");
    }
    assert_eq!(server.post_with_key("/v1/completions", &json!({"prompt": "hi", "max_tokens": 1}).to_string(), "key-acme").status, 200);
    let (_, m) = server.get("/metrics");
    assert!(!m.contains("tenant=\"acme\""), "tenant ids only behind the admin key or --metrics-tenant-labels");
    drop(server);
    // With it: 401 without the key, 200 with it; per-tenant metrics for the operator.
    let server = Server::start(&["--tenants", &tenants, "--admin-key", &hash_key("operator-secret")]);
    assert_eq!(server.post_raw("/reset_prefix_cache", "{}").status, 401);
    assert_eq!(server.post_with_key("/reset_prefix_cache", "{}", "wrong").status, 401);
    let r = server.post_with_key("/reset_prefix_cache", "{}", "operator-secret");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(server.post_with_key("/v1/completions", &json!({"prompt": "hi", "max_tokens": 1}).to_string(), "key-acme").status, 200);
    let m = support::request_with(&server.addr, "GET", "/metrics", None, &[("Authorization", "Bearer operator-secret")]).body;
    assert!(m.contains("mlahost_tenant_requests_total{tenant=\"acme\"} 1"));
    // A broken tenants file: the reason is logged, not returned.
    std::fs::write(&tenants, "[[tenants]]\nid = \"acme\"\napi_keys = [\"secret-plaintext\"]\n").unwrap();
    let r = server.post_with_key("/admin/tenants/reload", "{}", "operator-secret");
    assert_eq!(r.status, 422);
    assert!(!r.body.contains("secret-plaintext") && !r.body.contains(dir.to_str().unwrap()), "{}", r.body);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_tenant_cannot_reach_another_tenants_pages_through_its_cache_salt() {
    let dir = std::env::temp_dir().join(format!("mlahost-salt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tenants = dir.join("t.toml");
    let toml = format!(
        "[[tenants]]\nid = \"acme\"\napi_keys = [\"{}\"]\n\n[[tenants]]\nid = \"acme/dev\"\napi_keys = [\"{}\"]\n",
        hash_key("key-acme"),
        hash_key("key-acme-dev")
    );
    std::fs::write(&tenants, toml).unwrap();
    let server = Server::start(&["--tenants", tenants.to_str().unwrap(), "--page-size", "16"]);
    let prompt: Vec<u32> = (0..80).map(|i| (i * 11 + 3) % 1000).collect();
    let send = |key: &str, salt: Option<&str>| {
        let mut body = json!({"prompt": prompt, "max_tokens": 1, "temperature": 0});
        if let Some(s) = salt {
            body["cache_salt"] = json!(s);
        }
        assert_eq!(server.post_with_key("/v1/completions", &body.to_string(), key).status, 200);
    };
    send("key-acme-dev", None);
    send("key-acme", Some("dev"));
    // The gauges are published after the step that answered: wait until both lookups show.
    server.wait_metric("mlahost_prefix_cache_queries_total", 160.0);
    assert_eq!(server.metric("mlahost_prefix_cache_hits_total"), 0.0, "tenant:acme + salt dev is not tenant acme/dev");
    send("key-acme", Some("dev"));
    server.wait_metric("mlahost_prefix_cache_hits_total", 64.0);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn sampling_edge_cases_and_invalid_plugin_decisions() {
    let modes = ["inf", "nan", "zero", "short", "token"];
    let mut entries: Vec<Value> = modes.iter().map(|m| json!({"path": hostile("hostile_bad_sampler"), "name": format!("bad_{m}"), "config": m})).collect();
    entries.push(json!({"path": hostile("hostile_bad_sampler"), "name": "bad_closed", "config": "inf", "failure_policy": "closed"}));
    let file = plugins_file("sampling", Value::Array(entries));
    let server = Server::start(&["--plugins-file", &file]);
    let prompt = [3u32, 1, 4, 1, 5];
    let tokens = |v: &Value| v["choices"][0]["text"].as_str().unwrap().to_string();
    let (_, greedy_v) = completion(&server, &greedy(&prompt, 8));
    // A temperature below the floor is greedy, not "always the last token".
    let mut tiny = greedy(&prompt, 8);
    tiny["temperature"] = json!(1e-40);
    let (status, v) = completion(&server, &tiny);
    assert_eq!(status, 200);
    assert_eq!(tokens(&v), tokens(&greedy_v));
    // Each invalid decision is a failed call: fail-open samples natively (greedy here).
    for m in modes {
        let mut body = greedy(&prompt, 8);
        body["sampler"] = json!(format!("bad_{m}"));
        let (status, v) = completion(&server, &body);
        assert_eq!(status, 200, "{m}: {v}");
        assert_eq!(tokens(&v), tokens(&greedy_v), "{m}: the invalid decision was not used");
    }
    assert!(server.metric("mlahost_plugin_invalid_results_total") >= 5.0 * 8.0);
    // Fail-closed: a 503 with a generic message; a stream ends with an error event and [DONE].
    let mut body = greedy(&prompt, 4);
    body["sampler"] = json!("bad_closed");
    let r = server.post_raw("/v1/completions", &body.to_string());
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("sampler plugin failed") && !r.body.contains("wasm") && !r.body.contains("bias"), "{}", r.body);
    body["stream"] = json!(true);
    let r = server.post_raw("/v1/completions", &body.to_string());
    let data = r.sse_data();
    assert!(data.iter().any(|d| d.contains("\"error\"")), "{data:?}");
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(server.get("/health").0, 200);
}

#[test]
fn plugin_output_is_escaped_and_bounded_and_retry_after_is_clamped() {
    let server = Server::start_logging(&["--plugin", &hostile("hostile_chatty_admission")], "info");
    for _ in 0..5 {
        let r = server.post_raw("/v1/completions", &json!({"prompt": "hi", "max_tokens": 1}).to_string());
        assert_eq!(r.status, 429, "{}", r.body);
        let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=3600).contains(&retry), "Retry-After {retry}");
    }
    std::thread::sleep(Duration::from_millis(300));
    let log = server.log.lock().unwrap().clone();
    assert!(log.len() < 64 << 10, "{} bytes of log for 5 calls", log.len());
    assert!(log.contains("plugin output"), "the output is labelled");
    assert!(!log.lines().any(|l| l.starts_with("2026-01-01") || l.contains('\u{1b}')), "a forged line or terminal code reached the log");
    assert!(server.metric("mlahost_plugin_output_dropped_bytes_total") > 150_000.0);
}

#[test]
fn shutdown_closes_keep_alive_connections_and_a_half_sent_body_cannot_hold_it() {
    let mut server = Server::start(&["--shutdown-timeout", "2"]);
    // A keep-alive connection that has served one request.
    let mut keep = TcpStream::connect(&server.addr).unwrap();
    let req = json!({"prompt": "hi", "max_tokens": 1}).to_string();
    let send = |s: &mut TcpStream| {
        write!(s, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{req}", req.len())
    };
    send(&mut keep).unwrap();
    keep.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 8192];
    let n = keep.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // A request whose body never finishes.
    let mut half = TcpStream::connect(&server.addr).unwrap();
    write!(half, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    assert!(std::process::Command::new("kill").args(["-TERM", &server.pid().to_string()]).status().unwrap().success());
    std::thread::sleep(Duration::from_millis(300));
    // The kept-alive connection serves nothing new: closed, or a 503.
    let answered = send(&mut keep).ok().and_then(|_| read_until_closed(&mut keep, Duration::from_secs(5)));
    if let Some(raw) = answered.filter(|r| !r.is_empty()) {
        assert!(String::from_utf8_lossy(&raw).starts_with("HTTP/1.1 503"), "{}", String::from_utf8_lossy(&raw));
    }
    let status = server.wait_exit(Duration::from_secs(8)).expect("the server exits despite the half-sent body");
    assert!(status.success());
    assert!(started.elapsed() < Duration::from_secs(6), "exit took {:?}", started.elapsed());
    drop(half);
}
