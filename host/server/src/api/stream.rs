//! Server-sent events for streaming responses, ending with `data: [DONE]`.

use super::completions::usage;
use super::logprobs::{chat_logprobs, completion_logprobs};
use super::run::{merge, ChoiceResult, Submitted};
use super::admission::Ticket;
use super::AppState;
use crate::metrics::TenantStats;
use mlahost_runtime::Event;
use super::Reply;
use bytes::Bytes;
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::sync::mpsc::unbounded_channel;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    Completion,
    Chat,
    /// Chat with tools: calls in the model's format stream as `tool_calls` deltas.
    ChatTools(super::tools::ToolFormat),
}

#[derive(Debug, Clone)]
pub struct StreamOptions {
    pub kind: StreamKind,
    pub id: String,
    pub include_usage: bool,
    pub token_ids_as_text: bool,
    pub logprobs: bool,
    /// Choices per prompt (for usage).
    pub n: usize,
}

pub fn stream_response(
    state: Arc<AppState>,
    sub: Submitted,
    opts: StreamOptions,
    mut ticket: Option<Ticket>,
    stats: Arc<TenantStats>,
) -> Reply {
    let n_choices = sub.receivers.len();
    let (tx, rx) = unbounded_channel::<Bytes>();
    let mut events = merge(sub);
    tokio::spawn(async move {
        let object = match opts.kind {
            StreamKind::Completion => "text_completion",
            StreamKind::Chat | StreamKind::ChatTools(_) => "chat.completion.chunk",
        };
        let mut tool_streams: Vec<super::tool_calls::ToolStream> = (0..n_choices).map(|_| Default::default()).collect();
        let chunk = |choices: Vec<Value>, usage: Option<Value>| {
            let mut v = json!({"id": opts.id, "object": object, "created": state.created,
                "model": state.served_model_name, "choices": choices});
            if let Some(u) = usage {
                v["usage"] = u;
            }
            Bytes::from(format!("data: {v}\n\n"))
        };
        let tok = &state.model.tokenizer;
        let mut results: Vec<ChoiceResult> = (0..n_choices).map(|_| ChoiceResult::default()).collect();
        let mut started = vec![false; n_choices];
        let mut finished = 0;
        while finished < n_choices {
            // A closed stream means the engine went away; the client sees no [DONE]. A closed
            // body means the client left: returning drops `events`, which aborts the requests.
            let next = tokio::select! {
                _ = tx.closed() => return,
                next = events.recv() => next,
            };
            let Some((i, ev)) = next else { return };
            let (text, lp) = match ev {
                Event::Token(t) => {
                    if let Some(tk) = ticket.as_mut() {
                        tk.completion_tokens += 1;
                    }
                    let lp = opts.logprobs.then(|| match opts.kind {
                        StreamKind::Completion => {
                            completion_logprobs(tok, std::slice::from_ref(&t), opts.token_ids_as_text, results[i].text.len())
                        }
                        StreamKind::Chat | StreamKind::ChatTools(_) => chat_logprobs(tok, std::slice::from_ref(&t), opts.token_ids_as_text),
                    });
                    if let StreamKind::ChatTools(format) = opts.kind {
                        if let Some(deltas) = tool_streams[i].on_token(&format, t.id, tok, &opts.id, i) {
                            for calls in deltas {
                                let mut delta = json!({"tool_calls": calls});
                                if !started[i] {
                                    delta["role"] = json!("assistant");
                                    started[i] = true;
                                }
                                let c = json!({"index": i, "delta": delta, "logprobs": null, "finish_reason": null});
                                if tx.send(chunk(vec![c], None)).is_err() {
                                    return;
                                }
                            }
                            continue;
                        }
                    }
                    (t.text, lp)
                }
                Event::TrailingText(t) => (t, None),
                Event::Finished { reason, usage } => {
                    results[i].usage = usage;
                    results[i].finish = Some(reason);
                    finished += 1;
                    let c = choice(opts.kind, i, "", None, Some(tool_streams[i].finish_reason(reason.as_str())), !started[i]);
                    if tx.send(chunk(vec![c], None)).is_err() {
                        return;
                    }
                    continue;
                }
                Event::Failed(f) => {
                    // The stream ends like any other: an error event, then [DONE].
                    let err = super::error::ApiError::from_failure(&f).body();
                    let _ = tx.send(Bytes::from(format!("data: {err}\n\ndata: [DONE]\n\n")));
                    return;
                }
                Event::Accepted | Event::Rejected(_) => continue,
            };
            if text.is_empty() && lp.is_none() {
                continue;
            }
            results[i].text.push_str(&text);
            let c = choice(opts.kind, i, &text, lp, None, !started[i]);
            started[i] = true;
            if tx.send(chunk(vec![c], None)).is_err() {
                return; // client gone: dropping `events` aborts the rest
            }
        }
        let u = usage(&results, opts.n);
        let (p, c) = (u["prompt_tokens"].as_u64().unwrap_or(0), u["completion_tokens"].as_u64().unwrap_or(0));
        stats.prompt_tokens.fetch_add(p, std::sync::atomic::Ordering::Relaxed);
        stats.generation_tokens.fetch_add(c, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = ticket.take() {
            t.settle(p as usize, c as usize, results_reason(&results));
        }
        if opts.include_usage {
            let _ = tx.send(chunk(vec![], Some(usage(&results, opts.n))));
        }
        let _ = tx.send(Bytes::from_static(b"data: [DONE]\n\n"));
    });
    Reply::Sse(rx)
}

fn results_reason(results: &[ChoiceResult]) -> &'static str {
    results.first().and_then(|r| r.finish).map_or("stop", |f| f.as_str())
}

fn choice(kind: StreamKind, index: usize, text: &str, logprobs: Option<Value>, finish: Option<&str>, first: bool) -> Value {
    match kind {
        StreamKind::Completion => json!({"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}),
        StreamKind::Chat | StreamKind::ChatTools(_) => {
            let mut delta = if finish.is_some() && text.is_empty() { json!({}) } else { json!({"content": text}) };
            if first {
                delta["role"] = json!("assistant");
            }
            json!({"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish})
        }
    }
}
