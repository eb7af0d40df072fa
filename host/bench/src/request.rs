//! One streamed request, timed chunk by chunk.

use crate::dataset::{Item, Prompt};
use crate::http_client::{send, Endpoint};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Completions,
    Chat,
}

#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub ok: bool,
    pub error: Option<String>,
    pub prompt_tokens: usize,
    pub output_tokens: usize,
    /// Seconds from sending to the first chunk with text (None for an empty output).
    pub ttft: Option<f64>,
    /// Gaps between text chunks after the first.
    pub itl: Vec<f64>,
    pub e2e: f64,
}

impl Outcome {
    /// vLLM's time per output token: excludes the first token.
    pub fn tpot(&self) -> Option<f64> {
        match self.ttft {
            Some(t) if self.output_tokens > 1 => Some((self.e2e - t) / (self.output_tokens - 1) as f64),
            _ => None,
        }
    }
}

pub fn body(api: Api, model: &str, item: &Item, extra: &Value) -> Value {
    let mut b = match (api, &item.prompt) {
        (Api::Completions, Prompt::Ids(ids)) => json!({"prompt": ids}),
        (Api::Completions, Prompt::Text(t)) => json!({"prompt": t}),
        (Api::Chat, Prompt::Text(t)) => json!({"messages": [{"role": "user", "content": t}]}),
        (Api::Chat, Prompt::Ids(_)) => unreachable!("chat datasets are text"),
    };
    b["model"] = json!(model);
    b["max_tokens"] = json!(item.max_tokens);
    b["stream"] = json!(true);
    b["stream_options"] = json!({"include_usage": true});
    b["temperature"] = json!(0);
    b["ignore_eos"] = json!(true);
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            b[k] = v.clone();
        }
    }
    b
}

pub async fn run(ep: &Endpoint, api: Api, body: &Value, timeout: Duration) -> Outcome {
    let started = Instant::now();
    match tokio::time::timeout(timeout, stream(ep, api, body, started)).await {
        Ok(o) => o,
        Err(_) => Outcome { error: Some(format!("timeout after {:?}", timeout)), e2e: started.elapsed().as_secs_f64(), ..Default::default() },
    }
}

async fn stream(ep: &Endpoint, api: Api, body: &Value, started: Instant) -> Outcome {
    let path = match api {
        Api::Completions => "/v1/completions",
        Api::Chat => "/v1/chat/completions",
    };
    let mut out = Outcome::default();
    let fail = |mut o: Outcome, e: String| {
        o.error = Some(e);
        o.e2e = started.elapsed().as_secs_f64();
        o
    };
    let mut resp = match send(ep, "POST", path, Some(&body.to_string())).await {
        Ok(r) => r,
        Err(e) => return fail(out, e.to_string()),
    };
    if resp.status != 200 {
        let status = resp.status;
        let text = resp.text().await.unwrap_or_default();
        let msg = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
            .unwrap_or(text);
        return fail(out, format!("HTTP {status}: {msg}"));
    }
    let mut last: Option<Instant> = None;
    let mut chunks_with_text = 0;
    let mut done = false;
    loop {
        let line = match resp.next_line().await {
            Ok(Some(l)) => l,
            Ok(None) => break,
            Err(e) => return fail(out, e.to_string()),
        };
        let Some(data) = line.strip_prefix("data:").map(str::trim) else { continue };
        if data == "[DONE]" {
            done = true;
            break;
        }
        let Ok(v) = serde_json::from_str::<Value>(data) else { return fail(out, format!("bad event {data:?}")) };
        if let Some(e) = v.get("error") {
            return fail(out, format!("server error mid-stream: {}", e["message"].as_str().unwrap_or("?")));
        }
        if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
            out.prompt_tokens = u["prompt_tokens"].as_u64().unwrap_or(0) as usize;
            out.output_tokens = u["completion_tokens"].as_u64().unwrap_or(0) as usize;
        }
        let text = v["choices"]
            .as_array()
            .and_then(|c| c.first())
            .map(|c| match api {
                Api::Completions => c["text"].as_str().unwrap_or(""),
                Api::Chat => c["delta"]["content"].as_str().unwrap_or(""),
            })
            .unwrap_or("");
        if !text.is_empty() {
            let now = Instant::now();
            match last {
                None => out.ttft = Some(now.duration_since(started).as_secs_f64()),
                Some(prev) => out.itl.push(now.duration_since(prev).as_secs_f64()),
            }
            last = Some(now);
            chunks_with_text += 1;
        }
    }
    out.e2e = started.elapsed().as_secs_f64();
    if !done {
        return fail(out, "the stream ended without [DONE] (server disconnected)".into());
    }
    if out.output_tokens == 0 {
        // A server without usage in streams: count the chunks that carried text.
        out.output_tokens = chunks_with_text;
    }
    out.ok = true;
    out
}
