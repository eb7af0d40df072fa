//! /tokenize, /detokenize, /tokenizer_info, /version, /v1/models/{id}, /ping, /load, HEAD on
//! GET routes, CORS (--allowed-origins) and /openapi.json.

mod support;

use serde_json::{json, Value};
use std::io::Read;
use support::{open_with, request_with, Server};

#[test]
fn tokenize_and_detokenize_round_trip() {
    let server = Server::start(&[]);
    let (status, t) = server.post("/tokenize", &json!({"prompt": "Hello world, hello MLA", "return_token_strs": true}));
    assert_eq!(status, 200, "{t}");
    let ids: Vec<u64> = t["tokens"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    assert_eq!(t["count"], ids.len());
    assert!(t["max_model_len"].as_u64().unwrap() > 0);
    assert_eq!(t["token_strs"].as_array().unwrap().len(), ids.len());
    let (_, plain) = server.post("/tokenize", &json!({"prompt": "Hello world, hello MLA", "add_special_tokens": false}));
    let plain: Vec<u64> = plain["tokens"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    assert!(plain.len() <= ids.len());
    let (status, d) = server.post("/detokenize", &json!({"tokens": plain}));
    assert_eq!(status, 200, "{d}");
    assert_eq!(d["prompt"], "Hello world, hello MLA");
    // The same ids the completions endpoint would see for that prompt.
    let (_, c) = server.post("/v1/completions", &json!({"prompt": "Hello world, hello MLA", "max_tokens": 1}));
    assert_eq!(c["usage"]["prompt_tokens"], ids.len());
    let (status, chat) = server.post("/tokenize", &json!({"messages": [{"role": "user", "content": "hi"}]}));
    assert_eq!(status, 200, "{chat}");
    assert!(chat["count"].as_u64().unwrap() > 1);
}

#[test]
fn bad_utility_input_gets_openai_errors() {
    let server = Server::start(&[]);
    let cases = [
        ("/detokenize", json!({"tokens": [1, 99999999]}), "tokens"),
        ("/detokenize", json!({"tokens": "abc"}), "tokens"),
        ("/detokenize", json!({"tokens": [-1]}), "tokens"),
        ("/tokenize", json!({"prompt": 5}), "prompt"),
        ("/tokenize", json!({}), "prompt"),
        ("/tokenize", json!({"prompt": "a", "model": "other"}), "model"),
    ];
    for (path, body, param) in cases {
        let (status, v) = server.post(path, &body);
        assert!(status == 400 || status == 404, "{path} {body}: {status} {v}");
        assert_eq!(v["error"]["param"], param, "{path} {body}: {v}");
        assert!(v["error"]["message"].is_string());
    }
    let r = server.post_raw("/tokenize", "[1,2]");
    assert_eq!(r.status, 400);
    let r = server.post_raw("/tokenize", "{not json");
    assert_eq!(r.status, 400);
}

#[test]
fn info_endpoints() {
    let server = Server::start(&["--served-model-name", "org/tiny"]);
    let get = |p: &str| -> (u16, Value) {
        let (s, b) = server.get(p);
        (s, serde_json::from_str(&b).unwrap_or(Value::Null))
    };
    let (s, v) = get("/version");
    assert_eq!(s, 200);
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    let (s, v) = get("/tokenizer_info");
    assert_eq!(s, 200);
    assert!(v["vocab_size"].as_u64().unwrap() > 0 && v["model_max_length"].as_u64().unwrap() > 0, "{v}");
    let (s, v) = get("/v1/models/org%2Ftiny");
    assert_eq!(s, 200);
    assert_eq!(v["id"], "org/tiny");
    let (s, v) = get("/v1/models/org/tiny");
    assert_eq!((s, &v["id"]), (200, &json!("org/tiny")));
    let (s, v) = get("/v1/models/nope");
    assert_eq!(s, 404);
    assert_eq!(v["error"]["type"], "not_found_error");
    assert_eq!(server.get("/ping").0, 200);
    assert_eq!(server.post_raw("/ping", "").status, 200);
    let (s, v) = get("/load");
    assert_eq!(s, 200);
    assert_eq!(v["server_load"], 0, "only this request is in flight");
    let r = server.post_raw("/version", "{}");
    assert_eq!(r.status, 405);
}

/// The status line, headers and whatever follows them, for a request read to the end.
fn raw(addr: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> (String, Vec<u8>) {
    let mut s = open_with(addr, method, path, None, headers);
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let cut = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    (String::from_utf8_lossy(&all[..cut]).to_string(), all[cut..].to_vec())
}

#[test]
fn head_answers_every_get_route_without_a_body() {
    let server = Server::start(&[]);
    for path in ["/health", "/metrics", "/v1/models", "/version", "/ping", "/load", "/tokenizer_info", "/openapi.json", "/", "/console/plan"] {
        let (head, body) = raw(&server.addr, "HEAD", path, &[]);
        assert!(head.starts_with("HTTP/1.1 200"), "HEAD {path}: {head}");
        assert!(body.is_empty(), "HEAD {path} sent a body");
    }
    let (head, _) = raw(&server.addr, "HEAD", "/nope", &[]);
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
}

#[test]
fn cors_is_off_by_default() {
    let server = Server::start(&[]);
    let (head, _) = raw(&server.addr, "OPTIONS", "/v1/chat/completions", &[("Origin", "http://ui.example"), ("Access-Control-Request-Method", "POST")]);
    assert!(head.starts_with("HTTP/1.1 204"), "{head}");
    assert!(!head.to_ascii_lowercase().contains("access-control-allow-origin"), "{head}");
    let r = request_with(&server.addr, "GET", "/v1/models", None, &[("Origin", "http://ui.example")]);
    assert_eq!(r.status, 200);
    assert!(r.header("access-control-allow-origin").is_none());
}

#[test]
fn cors_allows_the_listed_origins() {
    let server = Server::start(&["--allowed-origins", "http://ui.example,http://other.example"]);
    let (head, _) = raw(&server.addr, "OPTIONS", "/v1/chat/completions", &[("Origin", "http://ui.example"), ("Access-Control-Request-Method", "POST")]);
    let lower = head.to_ascii_lowercase();
    assert!(head.starts_with("HTTP/1.1 204"), "{head}");
    assert!(lower.contains("access-control-allow-origin: http://ui.example"), "{head}");
    assert!(lower.contains("access-control-allow-methods:") && lower.contains("access-control-allow-headers:"), "{head}");
    let r = request_with(&server.addr, "POST", "/v1/completions", Some(r#"{"prompt":"hi","max_tokens":1}"#), &[("Origin", "http://other.example")]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some("http://other.example"));
    let r = request_with(&server.addr, "GET", "/v1/models", None, &[("Origin", "http://evil.example")]);
    assert!(r.header("access-control-allow-origin").is_none());
    // Errors carry the header too, so the page can read them.
    let r = request_with(&server.addr, "GET", "/nope", None, &[("Origin", "http://ui.example")]);
    assert_eq!((r.status, r.header("access-control-allow-origin")), (404, Some("http://ui.example")));
}

#[test]
fn openapi_lists_routes_that_exist() {
    let server = Server::start(&[]);
    let (status, doc) = server.get("/openapi.json");
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&doc).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for required in ["/v1/completions", "/v1/chat/completions", "/tokenize", "/detokenize", "/tokenizer_info", "/version", "/ping", "/load", "/metrics", "/health"] {
        assert!(paths.contains_key(required), "{required} is not documented");
    }
    for (path, ops) in paths {
        let path = path.replace("{model}", "tiny-v2-lite");
        for method in ops.as_object().unwrap().keys() {
            let m = method.to_ascii_uppercase();
            let r = support::request(&server.addr, &m, &path, (m == "POST").then_some("{}"));
            assert!(r.status != 404 && r.status != 405, "{m} {path} is documented but answers {}", r.status);
        }
    }
}
