//! The vLLM-named families a gateway's endpoint picker reads, checked the way the picker
//! reads them (llm-d-router's core metrics extractor): the family exists with the right type,
//! the first series whose labels match is taken, gauges and counters give their value, and
//! the info gauges' labels parse as integers. Plus: latency clocks start at HTTP arrival.

mod support;

use serde_json::json;
use std::collections::HashMap;
use std::io::Write;
use support::Server;

/// A family: its TYPE and its series in order (labels, value).
struct Family {
    kind: String,
    series: Vec<(HashMap<String, String>, f64)>,
}

fn parse(text: &str) -> HashMap<String, Family> {
    let mut out: HashMap<String, Family> = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            out.insert(name.to_string(), Family { kind: kind.to_string(), series: vec![] });
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (head, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match head.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (head, ""),
        };
        let mut map = HashMap::new();
        for kv in labels.split("\",").filter(|s| !s.is_empty()) {
            let (k, v) = kv.split_once("=\"").unwrap_or_else(|| panic!("bad label in {line}"));
            map.insert(k.to_string(), v.trim_end_matches('"').to_string());
        }
        let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).filter(|b| out.contains_key(*b)).unwrap_or(name);
        let fam = out.get_mut(base).unwrap_or_else(|| panic!("{name} has no TYPE line"));
        fam.series.push((map, value.parse().unwrap_or_else(|_| panic!("bad value in {line}"))));
    }
    out
}

/// What the picker takes: the first series of the family (its spec has no label filter).
fn picked<'a>(m: &'a HashMap<String, Family>, name: &str, kind: &str) -> &'a (HashMap<String, String>, f64) {
    let fam = m.get(name).unwrap_or_else(|| panic!("{name} is missing"));
    assert_eq!(fam.kind, kind, "{name}'s type");
    fam.series.first().unwrap_or_else(|| panic!("{name} has no series"))
}

fn engines(m: &HashMap<String, Family>, name: &str) -> Vec<f64> {
    m[name].series.iter().filter(|(l, _)| l.contains_key("engine")).map(|(_, v)| *v).collect()
}

#[test]
fn endpoint_picker_reads_every_family_per_pod_and_per_replica() {
    let server = Server::start(&["--replicas", "2", "--page-size", "16", "--kv-cache-pages", "64"]);
    for i in 0..4 {
        let body = json!({"prompt": format!("a shared prefix that is long enough to fill a page {i}"), "max_tokens": 8, "temperature": 0});
        assert_eq!(server.post("/v1/completions", &body).0, 200);
    }
    let (_, text) = server.get("/metrics");
    let m = parse(&text);
    for name in ["vllm:num_requests_waiting", "vllm:num_requests_running", "vllm:kv_cache_usage_perc"] {
        let (labels, value) = picked(&m, name, "gauge");
        assert!(!labels.contains_key("engine"), "{name}: the picker must read the pod total first");
        let replicas = engines(&m, name);
        assert_eq!(replicas.len(), 2, "{name}: one series per replica");
        if name == "vllm:kv_cache_usage_perc" {
            assert!((0.0..=1.0).contains(value), "{name} = {value}");
            assert!(replicas.iter().all(|v| (0.0..=1.0).contains(v)));
        } else {
            assert_eq!(*value, replicas.iter().sum::<f64>(), "{name}: pod = sum of replicas");
        }
    }
    let (labels, value) = picked(&m, "vllm:cache_config_info", "gauge");
    assert_eq!(*value, 1.0);
    assert_eq!(labels["block_size"].parse::<usize>().unwrap(), 16);
    assert_eq!(labels["num_gpu_blocks"].parse::<usize>().unwrap(), 128, "pod: 2 replicas x 64 pages");
    let (labels, value) = picked(&m, "vllm:lora_requests_info", "gauge");
    assert_eq!(labels["max_lora"].parse::<usize>().unwrap(), 0);
    assert_eq!(labels["running_lora_adapters"], "");
    assert_eq!(labels["waiting_lora_adapters"], "");
    assert!(*value > 1.0e9, "the value is a unix timestamp: {value}");
    let queries = picked(&m, "vllm:prefix_cache_queries_total", "counter").1;
    let hits = picked(&m, "vllm:prefix_cache_hits_total", "counter").1;
    assert!(queries > 0.0 && hits <= queries, "queries {queries}, hits {hits}");
    assert_eq!(queries, engines(&m, "vllm:prefix_cache_queries_total").iter().sum::<f64>());
    let generated = picked(&m, "vllm:generation_tokens_total", "counter").1;
    assert_eq!(generated, 32.0, "4 requests x 8 tokens");
    assert_eq!(m["vllm:time_to_first_token_seconds"].kind, "histogram");
    // Histograms: the pod's series (no engine label) first, the sum of the replicas' series.
    for name in ["vllm:time_to_first_token_seconds", "vllm:e2e_request_latency_seconds", "vllm:request_queue_time_seconds"] {
        for suffix in ["_count", "_bucket{model_name=\"m\",le=\"+Inf\"}"] {
            let series: Vec<(bool, f64)> = text
                .lines()
                .filter(|l| l.starts_with(&format!("{name}{}", suffix.split('{').next().unwrap())) && (!suffix.contains('{') || l.contains("le=\"+Inf\"")))
                .map(|l| (l.contains("engine="), l.rsplit(' ').next().unwrap().parse::<f64>().unwrap()))
                .collect();
            assert!(series.len() == 3 && !series[0].0 && series[1].0 && series[2].0, "{name}{suffix}: pod then 2 replicas: {series:?}");
            assert_eq!(series[0].1, series[1].1 + series[2].1, "{name}{suffix}: pod = sum of replicas");
            assert_eq!(series[0].1, 4.0, "{name}{suffix}: 4 requests");
        }
    }
    // The mlahost families are still there.
    assert!(m.contains_key("mlahost_num_requests_running"));
    // How the weights are stored on each device (the CPU keeps the checkpoint's bf16).
    let (labels, value) = picked(&m, "mlahost_weights_info", "gauge");
    assert_eq!(*value, 1.0);
    assert_eq!((labels["device"].as_str(), labels["linears"].as_str(), labels["embeddings"].as_str()), ("cpu", "bf16", "bf16"), "{labels:?}");
    assert!(picked(&m, "mlahost_weight_bytes", "gauge").1 > 1.0e5, "a device's weight bytes");
}

#[test]
fn latency_clocks_start_when_the_request_arrives() {
    let server = Server::start(&[]);
    // Send the headers, then hold the body back: the engine cannot see the request before
    // the body is complete, so only a clock started at arrival counts this wait.
    let body = json!({"prompt": "hello", "max_tokens": 1}).to_string();
    let mut s = std::net::TcpStream::connect(&server.addr).unwrap();
    write!(s, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()).unwrap();
    s.flush().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    s.write_all(body.as_bytes()).unwrap();
    let mut reply = String::new();
    std::io::Read::read_to_string(&mut s, &mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let m = parse(&server.get("/metrics").1);
    for name in ["vllm:e2e_request_latency_seconds", "vllm:time_to_first_token_seconds", "vllm:request_queue_time_seconds"] {
        let sum: f64 = m[name].series.iter().filter(|(l, _)| !l.contains_key("le")).map(|s| s.1).next().unwrap();
        assert!(sum >= 1.5, "{name}_sum = {sum}: the clock started after the body arrived");
    }
}
