//! Multi-tenancy through HTTP: keys, 401s, quotas charged to the right tenant with the usage
//! returned, static limits, isolation of the prefix cache, per-tenant metrics, reload.

mod support;

use serde_json::{json, Value};
use support::{plugin, Server};

fn hash(key: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mlahost")).args(["hash-key", key]).output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let d = std::env::temp_dir().join(format!("mlahost-tenants-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        Self(d)
    }
    fn write(&self, name: &str, text: &str) -> String {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tenants_toml(extra: &str) -> String {
    format!(
        "[[tenants]]\nid = \"alpha\"\napi_keys = [\"{}\"]\nmax_priority = 1\n\n[[tenants]]\nid = \"beta\"\napi_keys = [\"{}\"]\nmax_concurrent_requests = 1\n{extra}",
        hash("key-alpha"),
        hash("key-beta")
    )
}

fn post(server: &Server, key: Option<&str>, body: &Value) -> (u16, Value, Option<String>) {
    let auth = key.map(|k| format!("Authorization: Bearer {k}\r\n")).unwrap_or_default();
    let body = body.to_string();
    let req = format!(
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut s = std::net::TcpStream::connect(&server.addr).unwrap();
    std::io::Write::write_all(&mut s, req.as_bytes()).unwrap();
    let mut raw = String::new();
    std::io::Read::read_to_string(&mut s, &mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let retry = head.lines().find_map(|l| l.to_ascii_lowercase().strip_prefix("retry-after:").map(|v| v.trim().to_string()));
    (status, serde_json::from_str(body).unwrap_or(Value::Null), retry)
}

#[test]
fn keys_are_required_and_never_leak() {
    let dir = Scratch::new("auth");
    let file = dir.write("t.toml", &tenants_toml(""));
    let server = Server::start(&["--tenants", &file, "--metrics-tenant-labels"]);
    let body = json!({"prompt": "hi", "max_tokens": 2});
    for key in [None, Some("wrong-key")] {
        let (status, v, _) = post(&server, key, &body);
        assert_eq!(status, 401);
        assert_eq!(v["error"]["type"], "authentication_error");
        let text = v.to_string();
        assert!(!text.contains("alpha") && !text.contains("beta"), "tenant ids leak: {text}");
    }
    let (status, v, _) = post(&server, Some("key-alpha"), &body);
    assert_eq!(status, 200);
    assert!(!v.to_string().contains("alpha"));
    assert_eq!(server.get("/health").0, 200, "health needs no key");
    let (_, metrics) = server.get("/metrics");
    assert!(metrics.contains("mlahost_tenant_requests_total{tenant=\"alpha\"} 1"));
    assert!(!metrics.contains("key-alpha") && !metrics.contains(&hash("key-alpha")[7..]), "metrics never show keys");
    // Queue time and time to first token are observed once per choice, with a stop string too.
    let (status, _, _) = post(&server, Some("key-alpha"), &json!({"prompt": "hi", "max_tokens": 4, "n": 2, "stop": ["e"]}));
    assert_eq!(status, 200);
    let (_, metrics) = server.get("/metrics");
    for name in ["mlahost_tenant_queue_time_seconds", "mlahost_tenant_time_to_first_token_seconds"] {
        assert!(metrics.contains(&format!("{name}_count{{tenant=\"alpha\"}} 3")), "{name}: {metrics}");
    }
}

#[test]
fn quotas_are_charged_to_the_key_tenant_with_the_usage_returned() {
    let dir = Scratch::new("quota");
    let file = dir.write("t.toml", &tenants_toml(""));
    // alpha: 1 request a minute; beta: 60 tokens a minute.
    let cfg = r#"{"tenants": {"alpha": {"requests_per_min": 1}, "beta": {"tokens_per_min": 60}}, "default": {}}"#;
    let server = Server::start(&["--tenants", &file, "--plugin", &format!("{}:{}", plugin("tenant_quota"), cfg)]);
    let small = json!({"prompt": [0, 5, 6, 7], "max_tokens": 2, "temperature": 0});
    assert_eq!(post(&server, Some("key-alpha"), &small).0, 200);
    let (status, v, retry) = post(&server, Some("key-alpha"), &small);
    assert_eq!(status, 429, "{v}");
    assert!(retry.is_some_and(|r| r.parse::<u64>().unwrap() >= 1));
    // beta is not charged for alpha's requests.
    // Request 1: 4 prompt + up to 50 generated, cut short by a stop string; the quota is
    // charged the usage actually returned, not the 54 reserved.
    let (_, probe, _) = post(&server, Some("key-beta"), &json!({"prompt": [0, 5, 6, 7], "max_tokens": 3, "temperature": 0, "ignore_eos": true}));
    let text = probe["choices"][0]["text"].as_str().unwrap().to_string();
    let used_probe = probe["usage"]["total_tokens"].as_u64().unwrap();
    let stop: String = text.chars().take(1).collect();
    let (status, v, _) = post(&server, Some("key-beta"), &json!({"prompt": [0, 5, 6, 7], "max_tokens": 40, "temperature": 0, "stop": [stop]}));
    assert_eq!(status, 200, "{v}");
    let used = used_probe + v["usage"]["total_tokens"].as_u64().unwrap();
    assert!(used < 20, "the stop string cut the second request short ({used})");
    // What is left of 60 tokens is exactly 60 - used: a request reserving that much fits...
    let left = 60 - used as usize;
    let fits = json!({"prompt": [0, 5, 6, 7], "max_tokens": left - 4, "temperature": 0, "ignore_eos": true});
    let (status, v, _) = post(&server, Some("key-beta"), &fits);
    assert_eq!(status, 200, "charges must equal the reported usage: {v}");
    // ...and now the minute's budget is spent.
    assert_eq!(post(&server, Some("key-beta"), &json!({"prompt": [0], "max_tokens": 1})).0, 429);
}

#[test]
fn static_limits_salts_and_groups_isolate_tenants() {
    let dir = Scratch::new("iso");
    let extra = format!(
        "\n[[tenants]]\nid = \"gamma\"\napi_keys = [\"{}\"]\ncache_group = \"g\"\n\n[[tenants]]\nid = \"delta\"\napi_keys = [\"{}\"]\ncache_group = \"g\"\n",
        hash("key-gamma"),
        hash("key-delta")
    );
    let file = dir.write("t.toml", &tenants_toml(&extra));
    let server = Server::start(&["--tenants", &file, "--page-size", "16", "--metrics-tenant-labels"]);
    let prompt: Vec<u32> = (0..80).map(|i| (i * 7 + 1) % 1000).collect();
    let body = json!({"prompt": prompt, "max_tokens": 2, "temperature": 0});
    let hits = || server.metric("mlahost_prefix_cache_hits_total");
    post(&server, Some("key-alpha"), &body);
    post(&server, Some("key-beta"), &body);
    assert_eq!(hits(), 0.0, "no prefix hit crosses tenants");
    post(&server, Some("key-alpha"), &body);
    assert_eq!(hits(), 64.0, "within a tenant it hits");
    post(&server, Some("key-gamma"), &body);
    post(&server, Some("key-delta"), &body);
    assert_eq!(hits(), 128.0, "a cache group shares");
    // beta may have one request at a time.
    let long = json!({"prompt": "x", "max_tokens": 100000, "ignore_eos": true, "stream": true}).to_string();
    let auth_req = format!(
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: Bearer key-beta\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{long}",
        long.len()
    );
    let mut s = std::net::TcpStream::connect(&server.addr).unwrap();
    std::io::Write::write_all(&mut s, auth_req.as_bytes()).unwrap();
    // Wait for the stream's first token: the request is then surely running and holds beta's
    // slot (the running gauge alone can still show an earlier request for a moment).
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("data:") {
        let n = std::io::Read::read(&mut s, &mut buf).unwrap();
        assert!(n > 0, "the stream closed before its first token");
        seen.extend_from_slice(&buf[..n]);
    }
    server.wait_metric("mlahost_num_requests_running", 1.0);
    let (status, v, _) = post(&server, Some("key-beta"), &json!({"prompt": "hi", "max_tokens": 1}));
    assert_eq!(status, 429, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("max_concurrent_requests"));
    assert_eq!(post(&server, Some("key-alpha"), &json!({"prompt": "hi", "max_tokens": 1})).0, 200, "others unaffected");
    drop(s);
    server.wait_metric("mlahost_num_requests_running", 0.0);
    assert_eq!(post(&server, Some("key-beta"), &json!({"prompt": "hi", "max_tokens": 1})).0, 200);
    let (_, m) = server.get("/metrics");
    assert!(m.contains("mlahost_tenant_rejections_total{tenant=\"beta\"} 1"));
}

#[test]
fn the_tenants_file_reloads_without_restart() {
    let dir = Scratch::new("reload");
    let file = dir.write("t.toml", &tenants_toml(""));
    let admin = hash("operator-secret");
    let server = Server::start(&["--tenants", &file, "--admin-key", &admin]);
    let body = json!({"prompt": "hi", "max_tokens": 1});
    assert_eq!(post(&server, Some("key-new"), &body).0, 401);
    let extra = format!("\n[[tenants]]\nid = \"newcomer\"\napi_keys = [\"{}\"]\n", hash("key-new"));
    dir.write("t.toml", &tenants_toml(&extra));
    let r = server.post_with_key("/admin/tenants/reload", "{}", "operator-secret");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(post(&server, Some("key-new"), &body).0, 200);
    // A broken file is refused; the table in force stays.
    dir.write("t.toml", "[[tenants]]\nid = \"x\"\napi_keys = [\"plaintext-key\"]\n");
    let r = server.post_with_key("/admin/tenants/reload", "{}", "operator-secret");
    assert_eq!(r.status, 422);
    assert!(!r.body.contains("plaintext-key") && !r.body.contains(&file), "no file contents or paths: {}", r.body);
    assert_eq!(post(&server, Some("key-new"), &body).0, 200);
}
