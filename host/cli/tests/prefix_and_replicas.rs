//! Prefix caching and replicas through HTTP: hits never change outputs, shared prefixes skip
//! their prefill, salts isolate, eviction is safe under pressure, and the router keeps a shared
//! prefix on one replica while load is balanced and spreads it when not.

mod support;

use serde_json::{json, Value};
use support::{open, Server};

fn greedy(server: &Server, prompt: &[u32], max_tokens: usize, salt: Option<&str>) -> Vec<u64> {
    let mut body = json!({"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": true,
        "logprobs": 0, "return_tokens_as_token_ids": true});
    if let Some(s) = salt {
        body["cache_salt"] = json!(s);
    }
    let (status, v) = server.post("/v1/completions", &body);
    assert_eq!(status, 200, "{v}");
    v["choices"][0]["logprobs"]["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t: &Value| t.as_str().unwrap()[9..].parse().unwrap())
        .collect()
}

fn ids(seed: u32, n: usize) -> Vec<u32> {
    (0..n as u32).map(|i| (seed * 7919 + i * 104_729) % 1000).collect()
}

#[test]
fn outputs_with_prefix_hits_equal_outputs_without() {
    let on = Server::start(&["--page-size", "16"]);
    let off = Server::start(&["--page-size", "16", "--no-prefix-caching"]);
    let p1 = ids(1, 40);
    let mut p2 = p1[..32].to_vec(); // a hit ending at a page boundary inside the prompt
    p2.extend(ids(2, 9));
    let p3 = p1.clone(); // the whole prompt cached (its last token is recomputed)
    let p4 = p1[..32].to_vec(); // exactly two full pages, all cached
    for p in [&p1, &p2, &p3, &p4, &p2] {
        assert_eq!(greedy(&on, p, 16, None), greedy(&off, p, 16, None));
    }
    assert!(on.metric("mlahost_prefix_cache_hits_total") >= 32.0 * 3.0);
    assert_eq!(off.metric("mlahost_prefix_cache_hits_total"), 0.0);
    on.wait_metric("mlahost_kv_cache_pages_used", 0.0);
}

#[test]
fn a_shared_system_prompt_is_prefilled_once_and_salts_do_not_share() {
    let server = Server::start(&["--page-size", "16"]);
    let system = ids(3, 2048);
    let prompt = |q: u32| -> Vec<u32> { system.iter().copied().chain(ids(100 + q, 16)).collect() };
    greedy(&server, &prompt(0), 4, None);
    let computed_first = server.metric("mlahost_prompt_tokens_total");
    assert_eq!(computed_first, 2064.0);
    let (srv, prompt_of) = (&server, &prompt);
    std::thread::scope(|s| {
        for chunk in (1..64).collect::<Vec<u32>>().chunks(8) {
            let handles: Vec<_> = chunk.iter().map(|&q| s.spawn(move || greedy(srv, &prompt_of(q), 4, None))).collect();
            for h in handles {
                h.join().unwrap();
            }
        }
    });
    // 63 more requests, each computing only its 16-token question.
    assert_eq!(server.metric("mlahost_prompt_tokens_total"), 2064.0 + 63.0 * 16.0);
    assert_eq!(server.metric("mlahost_prefix_cache_hits_total"), 63.0 * 2048.0);
    let rate = server.metric("mlahost_prefix_cache_hit_rate");
    assert!((rate - 63.0 * 2048.0 / (64.0 * 2064.0)).abs() < 1e-9, "{rate}");
    // Another salt finds nothing of it; the same salt again hits.
    let before = server.metric("mlahost_prompt_tokens_total");
    greedy(&server, &prompt(0), 4, Some("tenant-b"));
    assert_eq!(server.metric("mlahost_prompt_tokens_total") - before, 2064.0);
    greedy(&server, &prompt(1), 4, Some("tenant-b"));
    assert_eq!(server.metric("mlahost_prompt_tokens_total") - before, 2064.0 + 16.0);
}

#[test]
fn eviction_under_page_pressure_keeps_outputs_and_returns_every_page() {
    // 40 pages of 16 tokens; 24 prompts of ~100 tokens at concurrency 8 force evictions.
    let on = Server::start(&["--page-size", "16", "--kv-cache-pages", "40"]);
    let off = Server::start(&["--page-size", "16", "--no-prefix-caching"]);
    let prompts: Vec<Vec<u32>> = (0..24).map(|i| {
        // Pairs share a 64-token prefix so hits and evictions interleave.
        let mut p = ids(200 + i / 2, 64);
        p.extend(ids(500 + i, 36));
        p
    }).collect();
    let got: Vec<Vec<u64>> = std::thread::scope(|s| {
        let mut out = Vec::new();
        for chunk in prompts.chunks(8) {
            let hs: Vec<_> = chunk.iter().map(|p| s.spawn(|| greedy(&on, p, 12, None))).collect();
            out.extend(hs.into_iter().map(|h| h.join().unwrap()));
        }
        out
    });
    for (p, g) in prompts.iter().zip(&got) {
        assert_eq!(g, &greedy(&off, p, 12, None));
    }
    assert!(on.metric("mlahost_prefix_cache_evictions_total") > 0.0, "the small pool evicted");
    assert!(on.metric("mlahost_prefix_cache_hits_total") > 0.0);
    on.wait_metric("mlahost_kv_cache_pages_used", 0.0);
}

#[test]
fn two_replicas_keep_a_shared_prefix_together_until_load_is_imbalanced() {
    let server = Server::start(&["--replicas", "2", "--page-size", "16", "--router-imbalance-abs", "2", "--router-imbalance-rel", "1.5"]);
    let prefix = ids(9, 64);
    let with_q = |q: u32| -> Vec<u32> { prefix.iter().copied().chain(ids(300 + q, 8)).collect() };
    for q in 0..6 {
        greedy(&server, &with_q(q), 4, None);
    }
    let (a, b) = (server.metric_for("mlahost_requests_routed_total", 0), server.metric_for("mlahost_requests_routed_total", 1));
    assert_eq!(a.min(b), 0.0, "balanced: the shared prefix stays on one replica ({a} / {b})");
    assert_eq!(a.max(b), 6.0);
    let home = if a > b { 0 } else { 1 };
    // Long-running requests with the same prefix pile onto the cached replica until the load
    // difference passes the thresholds; then the other replica takes them.
    let endless = |q: u32| json!({"prompt": with_q(100 + q), "max_tokens": 100000, "ignore_eos": true, "stream": true}).to_string();
    let mut streams = Vec::new();
    for q in 0..8 {
        streams.push(open(&server.addr, "POST", "/v1/completions", Some(&endless(q))));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while server.metric("mlahost_num_requests_running") + server.metric("mlahost_num_requests_waiting") < (q + 1) as f64 {
            assert!(std::time::Instant::now() < deadline, "request {q} never started");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    let other = 1 - home;
    assert!(server.metric_for("mlahost_requests_routed_total", other) >= 2.0, "imbalance spreads the load");
    assert!(server.metric_for("mlahost_num_requests_running", other) >= 2.0);
    assert!(server.metric_for("mlahost_num_requests_running", home) >= 3.0);
    drop(streams);
    server.wait_metric("mlahost_kv_cache_pages_used", 0.0);
}
