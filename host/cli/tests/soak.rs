//! A CI-size soak: 2,000 mixed requests (plain, streamed with random disconnects, chat, bad
//! inputs, a looping sampler) against a server with a hostile plugin of every kind loaded.
//! It must end with nothing left behind (0 pages used, 0 running, 0 waiting), answer no 5xx
//! (every hostile plugin fails open), and give its memory back (RSS within 10% of warm).

mod support;

use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use support::{hostile, Server};

/// A small deterministic generator (no rand dependency).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    client_errors: AtomicUsize,
    server_errors: AtomicUsize,
    disconnects: AtomicUsize,
}

/// Sends one raw request and returns the status (0 when we hung up on purpose).
fn send(addr: &str, path: &str, body: &str, hang_up_after: Option<usize>) -> u16 {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(s, "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 2048];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
        if hang_up_after.is_some_and(|b| raw.len() >= b) {
            return 0;
        }
    }
    let head = String::from_utf8_lossy(&raw[..raw.len().min(64)]).to_string();
    head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(599)
}

/// One request of the mix, chosen by `r`.
fn one(addr: &str, rng: &mut Lcg) -> (u16, bool) {
    let prompt: Vec<u64> = (0..(2 + rng.below(60))).map(|_| rng.below(1000)).collect();
    let max_tokens = 1 + rng.below(4);
    match rng.below(20) {
        0..=7 => (send(addr, "/v1/completions", &json!({"prompt": prompt, "max_tokens": max_tokens, "temperature": 0.7, "seed": rng.next()}).to_string(), None), false),
        8..=10 => {
            let body = json!({"prompt": prompt, "max_tokens": 24, "stream": true, "ignore_eos": true}).to_string();
            let cut = 100 + rng.below(600) as usize;
            let status = send(addr, "/v1/completions", &body, Some(cut));
            (status, status == 0)
        }
        11..=12 => {
            let body = json!({"messages": [{"role": "user", "content": format!("hello {}", rng.next())}], "max_tokens": max_tokens});
            (send(addr, "/v1/chat/completions", &body.to_string(), None), false)
        }
        13 => {
            let body = json!({"prompt": prompt, "max_tokens": 2, "sampler": "hostile_loop"});
            (send(addr, "/v1/completions", &body.to_string(), None), false)
        }
        14 => {
            // A shared prefix, so cached pages are reused and evicted under the hostile policy.
            let shared: Vec<u64> = (0..48).map(|i| (i * 7) % 1000).chain([rng.below(1000)]).collect();
            (send(addr, "/v1/completions", &json!({"prompt": shared, "max_tokens": 1}).to_string(), None), false)
        }
        15 => (send(addr, "/v1/completions", "{\"prompt\": [1, 2", None), false),
        16 => (send(addr, "/v1/completions", &json!({"prompt": "x", "n": 99}).to_string(), None), false),
        17 => (send(addr, "/v1/completions", &json!({"prompt": "x", "temperature": "hot"}).to_string(), None), false),
        18 => (send(addr, "/v1/completions", &json!({"prompt": "x", "stop": vec!["s"; 40]}).to_string(), None), false),
        _ => (send(addr, "/v1/chat/completions", &json!({"messages": "nope"}).to_string(), None), false),
    }
}

fn run(addr: &str, requests: usize, threads: u64, seed: u64, tally: &Arc<Tally>) {
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (addr, next, tally) = (addr.to_string(), next.clone(), tally.clone());
            std::thread::spawn(move || {
                let mut rng = Lcg(seed ^ (t + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                while next.fetch_add(1, Relaxed) < requests {
                    let (status, hung_up) = one(&addr, &mut rng);
                    let counter = match status {
                        _ if hung_up => &tally.disconnects,
                        200..=299 => &tally.ok,
                        400..=499 => &tally.client_errors,
                        _ => &tally.server_errors,
                    };
                    counter.fetch_add(1, Relaxed);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
}

#[test]
fn two_thousand_mixed_requests_leave_nothing_behind() {
    let server = Server::start(&[
        "--replicas", "2",
        "--page-size", "16",
        "--kv-cache-pages", "96",
        "--plugin", &hostile("hostile_loop"),
        "--plugin", &hostile("hostile_hook_trap"),
        "--plugin", &hostile("hostile_bad_evict"),
        "--plugin", &hostile("hostile_sleep_admission"),
    ]);
    let tally = Arc::new(Tally::default());
    // Warm-up: every path once, so the warm RSS includes plugin instances and caches.
    run(&server.addr, 300, 6, 1, &tally);
    let settle = |server: &Server| {
        server.wait_metric("mlahost_num_requests_running", 0.0);
        server.wait_metric("mlahost_num_requests_waiting", 0.0);
        server.wait_metric("mlahost_kv_cache_pages_used", 0.0);
    };
    settle(&server);
    let warm = server.rss_kb();
    run(&server.addr, 1700, 6, 2, &tally);
    settle(&server);
    let rss = server.rss_kb();
    let (ok, bad, fivexx, gone) =
        (tally.ok.load(Relaxed), tally.client_errors.load(Relaxed), tally.server_errors.load(Relaxed), tally.disconnects.load(Relaxed));
    eprintln!("soak: {ok} ok, {bad} 4xx, {fivexx} 5xx, {gone} disconnects; RSS warm {warm} kB, end {rss} kB");
    assert_eq!(ok + bad + fivexx + gone, 2000);
    assert_eq!(fivexx, 0, "every hostile plugin fails open: no 5xx");
    assert!(ok > 1000 && bad > 200 && gone > 100, "the mix ran: {ok} ok, {bad} 4xx, {gone} disconnects");
    assert!((rss as f64) < warm as f64 * 1.10, "RSS {rss} kB is more than 10% over the warm {warm} kB");
    assert_eq!(server.get("/health").0, 200);
    assert_eq!(server.metric("mlahost_engine_restarts_total"), 0.0);
    for family in ["mlahost_plugin_traps_total", "mlahost_plugin_timeouts_total", "mlahost_plugin_fallbacks_total"] {
        assert!(server.metric(family) > 0.0, "{family}: the hostile plugins were exercised");
    }
}
