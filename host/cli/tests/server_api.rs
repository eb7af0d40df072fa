//! The HTTP API end to end: a real `mlahost serve` process and raw HTTP/1.1.

mod support;

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};
use support::{fixture, golden, open, Server};

fn ids_of(v: &Value) -> Vec<u64> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect()
}

/// Token ids from logprobs reported with return_tokens_as_token_ids.
fn tokens_from_logprobs(tokens: &[Value]) -> Vec<u64> {
    tokens.iter().map(|t| t.as_str().unwrap().strip_prefix("token_id:").unwrap().parse().unwrap()).collect()
}

fn comparable(margins: &[f64]) -> usize {
    margins.iter().position(|&m| m < 1e-3).unwrap_or(margins.len())
}

#[test]
fn greedy_completions_and_chat_match_the_goldens() {
    for name in ["tiny-v2-lite", "tiny-v3-fp8"] {
        let server = Server::start(&["--model", fixture(name).to_str().unwrap(), "--served-model-name", name]);
        let g = golden(name);
        for case in g["cases"].as_array().unwrap() {
            let want = ids_of(&case["greedy_ids"]);
            let body = json!({"model": name, "prompt": case["prompt_ids"], "max_tokens": want.len(), "temperature": 0,
                "ignore_eos": true, "logprobs": 5, "return_tokens_as_token_ids": true});
            let (status, v) = server.post("/v1/completions", &body);
            assert_eq!(status, 200, "{v}");
            let got = tokens_from_logprobs(v["choices"][0]["logprobs"]["tokens"].as_array().unwrap());
            let n = comparable(&support_margins(case));
            assert_eq!(got[..n], want[..n], "{name}/{}", case["name"]);
            let lp0 = v["choices"][0]["logprobs"]["token_logprobs"][0].as_f64().unwrap();
            assert!((lp0 - case["chosen_logprobs"][0].as_f64().unwrap()).abs() < 2e-3);
            assert_eq!(v["usage"]["prompt_tokens"], json!(case["prompt_ids"].as_array().unwrap().len()));
            assert_eq!(v["usage"]["completion_tokens"], json!(want.len()));
        }
        for case in g["chat_cases"].as_array().unwrap() {
            let want = ids_of(&case["greedy_ids"]);
            let body = json!({"model": name, "messages": case["messages"], "max_tokens": want.len(), "temperature": 0,
                "ignore_eos": true, "logprobs": true, "top_logprobs": 2, "return_tokens_as_token_ids": true});
            let (status, v) = server.post("/v1/chat/completions", &body);
            assert_eq!(status, 200, "{v}");
            let content = v["choices"][0]["logprobs"]["content"].as_array().unwrap();
            let got = tokens_from_logprobs(&content.iter().map(|c| c["token"].clone()).collect::<Vec<_>>());
            let n = comparable(&support_margins(case));
            assert_eq!(got[..n], want[..n], "{name}/chat");
            assert_eq!(content[0]["top_logprobs"].as_array().unwrap().len(), 2);
            assert_eq!(v["usage"]["prompt_tokens"], json!(case["prompt_ids"].as_array().unwrap().len()), "template render");
            assert_eq!(v["choices"][0]["message"]["role"], "assistant");
        }
    }
}

fn support_margins(case: &Value) -> Vec<f64> {
    case["margins"].as_array().unwrap().iter().map(|m| m.as_f64().unwrap()).collect()
}

fn greedy(server: &Server, prompt: &[u32], max_tokens: usize) -> Vec<u64> {
    let body = json!({"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": true,
        "logprobs": 0, "return_tokens_as_token_ids": true});
    let (status, v) = server.post("/v1/completions", &body);
    assert_eq!(status, 200, "{v}");
    tokens_from_logprobs(v["choices"][0]["logprobs"]["tokens"].as_array().unwrap())
}

fn prompts(n: usize) -> Vec<Vec<u32>> {
    (0..n).map(|i| (0..(5 + (i * 7) % 40)).map(|j| ((i * 131 + j * 17) % 1000) as u32).collect()).collect()
}

#[test]
fn concurrent_requests_and_preemption_keep_outputs_identical() {
    let model = fixture("tiny-v2-lite");
    let ps = prompts(32);
    let solo_server = Server::start(&["--model", model.to_str().unwrap()]);
    let solo: Vec<Vec<u64>> = ps.iter().map(|p| greedy(&solo_server, p, 20)).collect();
    drop(solo_server);
    // Ample pages, then a pool so small that 32 concurrent requests must preempt.
    for pages in ["4096", "12"] {
        let server = Server::start(&["--model", model.to_str().unwrap(), "--page-size", "16", "--kv-cache-pages", pages]);
        let results: Vec<Vec<u64>> = std::thread::scope(|s| {
            let handles: Vec<_> = ps.iter().map(|p| s.spawn(|| greedy(&server, p, 20))).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (i, (a, b)) in results.iter().zip(&solo).enumerate() {
            assert_eq!(a, b, "request {i} with {pages} pages differs from its solo run");
        }
        if pages == "12" {
            assert!(server.metric("mlahost_num_preemptions_total") > 0.0, "the tiny pool preempted");
        }
        server.wait_metric("mlahost_kv_cache_pages_used", 0.0);
    }
}

/// A request that keeps the engine busy until it is cancelled.
fn endless(stream: bool) -> String {
    json!({"prompt": [0, 5, 6], "max_tokens": 100000, "ignore_eos": true, "temperature": 0, "stream": stream}).to_string()
}

#[test]
fn disconnects_free_every_page() {
    let server = Server::start(&["--max-num-seqs", "1", "--page-size", "16"]);
    // Mid-stream: read a few events, then hang up.
    let s = open(&server.addr, "POST", "/v1/completions", Some(&endless(true)));
    let mut reader = BufReader::new(s);
    let mut events = 0;
    let mut line = String::new();
    while events < 3 {
        line.clear();
        reader.read_line(&mut line).unwrap();
        events += line.contains("data:") as usize;
    }
    assert!(server.metric("mlahost_kv_cache_pages_used") > 0.0);
    drop(reader);
    server.wait_metric("mlahost_num_requests_running", 0.0);
    server.wait_metric("mlahost_kv_cache_pages_used", 0.0);
    // While queued: one request decodes (max one sequence), a second waits; both clients leave.
    let running = open(&server.addr, "POST", "/v1/completions", Some(&endless(false)));
    server.wait_metric("mlahost_num_requests_running", 1.0);
    let queued = open(&server.addr, "POST", "/v1/completions", Some(&endless(true)));
    server.wait_metric("mlahost_num_requests_waiting", 1.0);
    drop(queued);
    server.wait_metric("mlahost_num_requests_waiting", 0.0);
    assert!(server.metric("mlahost_kv_cache_pages_used") > 0.0, "the running request keeps its pages");
    drop(running);
    server.wait_metric("mlahost_num_requests_running", 0.0);
    server.wait_metric("mlahost_kv_cache_pages_used", 0.0);
    assert!(server.metric("mlahost_request_success_total") >= 3.0);
}

#[test]
fn full_queue_is_503_at_once_and_the_server_keeps_serving() {
    let server = Server::start(&["--max-num-seqs", "1", "--max-queued-requests", "1"]);
    let a = open(&server.addr, "POST", "/v1/completions", Some(&endless(true)));
    server.wait_metric("mlahost_num_requests_running", 1.0);
    let b = open(&server.addr, "POST", "/v1/completions", Some(&endless(true)));
    server.wait_metric("mlahost_num_requests_waiting", 1.0);
    let started = Instant::now();
    let r = server.post_raw("/v1/completions", &json!({"prompt": "hi", "max_tokens": 2}).to_string());
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(r.header("retry-after"), Some("1"));
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["error"]["code"], 503);
    assert_eq!(server.get("/health").0, 200);
    drop((a, b));
    server.wait_metric("mlahost_kv_cache_pages_used", 0.0);
    let (status, _) = server.post("/v1/completions", &json!({"prompt": "hi", "max_tokens": 2}));
    assert_eq!(status, 200);
}

#[test]
fn bad_input_gets_an_openai_shaped_4xx() {
    let server = Server::start(&["--max-model-len", "128"]);
    let cases: Vec<(&str, Value, u16, Option<&str>)> = vec![
        ("/v1/completions", json!({"prompt": ""}), 400, Some("prompt")),
        ("/v1/completions", json!({"prompt": []}), 400, Some("prompt")),
        ("/v1/completions", json!({}), 400, Some("prompt")),
        ("/v1/completions", json!({"prompt": [1, 5000]}), 400, Some("prompt")),
        ("/v1/completions", json!({"prompt": [1, -3]}), 400, Some("prompt")),
        ("/v1/completions", json!({"prompt": "hi", "max_tokens": 500}), 400, Some("max_tokens")),
        ("/v1/completions", json!({"prompt": "hi", "temperature": -1}), 400, Some("temperature")),
        ("/v1/completions", json!({"prompt": "hi", "temperature": "hot"}), 400, Some("temperature")),
        ("/v1/completions", json!({"prompt": "hi", "top_p": 0}), 400, Some("top_p")),
        ("/v1/completions", json!({"prompt": "hi", "top_k": -5}), 400, Some("top_k")),
        ("/v1/completions", json!({"prompt": "hi", "min_p": 2}), 400, Some("min_p")),
        ("/v1/completions", json!({"prompt": "hi", "presence_penalty": 9}), 400, Some("presence_penalty")),
        ("/v1/completions", json!({"prompt": "hi", "repetition_penalty": 0}), 400, Some("repetition_penalty")),
        ("/v1/completions", json!({"prompt": "hi", "n": 0}), 400, Some("n")),
        ("/v1/completions", json!({"prompt": "hi", "logprobs": 50}), 400, Some("logprobs")),
        ("/v1/completions", json!({"prompt": "hi", "stop": 3}), 400, Some("stop")),
        ("/v1/completions", json!({"prompt": "hi", "model": "gpt-9"}), 404, Some("model")),
        ("/v1/chat/completions", json!({"messages": []}), 400, Some("messages")),
        ("/v1/chat/completions", json!({"messages": [{"content": "x"}]}), 400, Some("messages[0].role")),
        ("/v1/chat/completions", json!({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 99}), 400, Some("top_logprobs")),
        ("/v1/completions", json!([1, 2]), 400, None),
    ];
    for (path, body, status, param) in cases {
        let r = server.post_raw(path, &body.to_string());
        assert_eq!(r.status, status, "{body} -> {}", r.body);
        let v: Value = serde_json::from_str(&r.body).unwrap();
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        assert!(v["error"]["type"].is_string());
        assert_eq!(v["error"]["param"].as_str(), param, "{body}");
    }
    let r = server.post_raw("/v1/completions", "{not json");
    assert_eq!(r.status, 400);
    assert_eq!(server.get("/v1/nothing").0, 404);
    assert_eq!(support::request(&server.addr, "GET", "/v1/completions", None).status, 405);
    // Unknown fields are ignored.
    let (status, _) = server.post("/v1/completions", &json!({"prompt": "hi", "max_tokens": 1, "frobnicate": true}));
    assert_eq!(status, 200);
}

#[test]
fn sampling_options_behave() {
    let server = Server::start(&[]);
    let base = json!({"prompt": "The quick brown fox", "max_tokens": 12, "temperature": 0.9, "top_p": 0.9,
        "top_k": 50, "min_p": 0.01, "seed": 42, "ignore_eos": true});
    let (_, a) = server.post("/v1/completions", &base);
    let (_, b) = server.post("/v1/completions", &base);
    assert_eq!(a["choices"][0]["text"], b["choices"][0]["text"], "same seed, same output");
    let mut many = base.clone();
    many["n"] = json!(3);
    let (_, v) = server.post("/v1/completions", &many);
    assert_eq!(v["choices"].as_array().unwrap().len(), 3);
    assert_eq!(v["usage"]["completion_tokens"], 36);
    // A stop string taken from the greedy text: it is not emitted and finish_reason is "stop".
    let greedy = json!({"prompt": "The quick brown fox", "max_tokens": 16, "temperature": 0, "ignore_eos": true});
    let (_, g) = server.post("/v1/completions", &greedy);
    let text = g["choices"][0]["text"].as_str().unwrap().to_string();
    let stop: String = text.chars().skip(3).take(3).collect();
    let mut with_stop = greedy.clone();
    with_stop["stop"] = json!([stop]);
    let (_, s) = server.post("/v1/completions", &with_stop);
    let cut = s["choices"][0]["text"].as_str().unwrap();
    assert_eq!(s["choices"][0]["finish_reason"], "stop");
    assert!(!cut.contains(&stop) && text.starts_with(cut) && cut.len() < text.len(), "{cut:?} vs {text:?}");
    // Batch of prompts, token ids and text.
    let (_, v) = server.post("/v1/completions", &json!({"prompt": [[0, 5, 9], [0, 7]], "max_tokens": 2}));
    assert_eq!(v["choices"].as_array().unwrap().len(), 2);
    assert_eq!(v["usage"]["prompt_tokens"], 5);
    // A strong repetition penalty changes a greedy continuation that repeats tokens.
    let rep = json!({"prompt": [0, 5], "max_tokens": 40, "temperature": 0, "ignore_eos": true, "logprobs": 0,
        "return_tokens_as_token_ids": true});
    let mut pen = rep.clone();
    pen["repetition_penalty"] = json!(5.0);
    pen["frequency_penalty"] = json!(2.0);
    let plain = server.post("/v1/completions", &rep).1;
    let penalized = server.post("/v1/completions", &pen).1;
    let toks = |v: &Value| tokens_from_logprobs(v["choices"][0]["logprobs"]["tokens"].as_array().unwrap());
    let (p, q) = (toks(&plain), toks(&penalized));
    let distinct = |t: &[u64]| t.iter().collect::<std::collections::HashSet<_>>().len();
    assert!(distinct(&q) >= distinct(&p), "penalties do not reduce variety");
    assert_ne!(p, q);
}

#[test]
fn streaming_chat_with_usage_and_sigterm_exits_cleanly() {
    let mut server = Server::start(&["--shutdown-timeout", "5"]);
    let body = json!({"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 5, "temperature": 0,
        "ignore_eos": true, "stream": true, "stream_options": {"include_usage": true}});
    let r = server.post_raw("/v1/chat/completions", &body.to_string());
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let data = r.sse_data();
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(chunks[0]["object"], "chat.completion.chunk");
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["completion_tokens"], 5);
    assert!(chunks.iter().any(|c| c["choices"][0]["finish_reason"] == "length"));
    // SIGTERM with a request in flight: it finishes (or is cancelled at the timeout), exit 0.
    let mut s = open(&server.addr, "POST", "/v1/completions", Some(&json!({"prompt": "x", "max_tokens": 50}).to_string()));
    std::thread::sleep(Duration::from_millis(50));
    let status = std::process::Command::new("kill").args(["-TERM", &server.pid().to_string()]).status().unwrap();
    assert!(status.success());
    let exit = server.wait_exit(Duration::from_secs(15)).expect("server exits after SIGTERM");
    assert!(exit.success(), "{exit:?}");
    let _ = s.flush();
}

#[test]
fn serving_over_cpu_ranks_gives_the_goldens() {
    // tiny-v2: two attention groups of 2 ranks (4 heads, 2 per rank), 16 routed experts spread
    // 4 per rank; requests sent at once share steps and spread over the groups' page pools.
    let name = "tiny-v2";
    let server = Server::start(&["--model", fixture(name).to_str().unwrap(), "-tp", "2", "-dp", "2", "--enable-expert-parallel"]);
    let g = golden(name);
    let cases = g["cases"].as_array().unwrap();
    std::thread::scope(|s| {
        for case in cases {
            let server = &server;
            s.spawn(move || {
                let want = ids_of(&case["greedy_ids"]);
                let prompt: Vec<u32> = case["prompt_ids"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect();
                let n = comparable(&support_margins(case));
                assert_eq!(greedy(server, &prompt, want.len())[..n], want[..n], "{name}/{} over 2 x 2 ranks", case["name"]);
            });
        }
    });
    let err = support::refuse_to_start(&["--model", fixture(name).to_str().unwrap(), "-tp", "3"]);
    assert!(err.contains("4 attention heads do not split evenly over --tensor-parallel-size 3"), "{err}");
}
