//! Server-sent events for streaming responses, ending with `data: [DONE]`.

use super::admission::Ticket;
use super::choice_json::{prompt_part, usage};
use super::logprobs::{chat_logprobs, completion_logprobs, vllm_prompt_logprobs};
use super::params::Common;
use super::submitted::{ChoiceResult, Submitted};
use super::AppState;
use super::Reply;
use crate::metrics::TenantStats;
use bytes::Bytes;
use mlahost_runtime::{ChoiceEvent, FinishReason};
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::sync::mpsc::unbounded_channel;

/// What a stream answers, with what its first chunk per choice repeats of the prompt.
#[derive(Clone)]
pub enum StreamKind {
    /// Each prompt's token ids and the text an echo repeats.
    Completion(Arc<Vec<(Vec<u32>, String)>>),
    Chat(Arc<ChatPrompt>),
}

/// A chat's prompt ids, the last assistant message an `echo` repeats, and the model's
/// tool-call format when the request has tools (calls then stream as `tool_calls` deltas).
pub struct ChatPrompt {
    pub ids: Vec<u32>,
    pub echo: Option<String>,
    pub tools: Option<super::tools::ToolFormat>,
}

#[derive(Clone)]
pub struct StreamOptions {
    pub kind: StreamKind,
    pub id: String,
    pub common: Common,
}

impl StreamOptions {
    fn prompt_ids(&self, choice: usize) -> &[u32] {
        match &self.kind {
            StreamKind::Completion(p) => p.get(choice / self.common.n.max(1)).map_or(&[], |p| &p.0),
            StreamKind::Chat(c) => &c.ids,
        }
    }
}

pub fn stream_response(
    state: Arc<AppState>,
    mut sub: Submitted,
    opts: StreamOptions,
    mut ticket: Option<Ticket>,
    stats: Arc<TenantStats>,
) -> Reply {
    let n_choices = sub.choices();
    let (tx, rx) = unbounded_channel::<Bytes>();
    tokio::spawn(async move {
        let common = &opts.common;
        let object = match opts.kind {
            StreamKind::Completion(_) => "text_completion",
            StreamKind::Chat(_) => "chat.completion.chunk",
        };
        let tool_format = match &opts.kind {
            StreamKind::Chat(chat) => chat.tools,
            StreamKind::Completion(_) => None,
        };
        let mut tool_streams: Vec<super::tool_calls::ToolStream> = (0..n_choices).map(|_| Default::default()).collect();
        let chunk = |choices: Vec<Value>, extra: Value| {
            let mut v = json!({"id": opts.id, "object": object, "created": state.created,
                "model": state.served_model_name, "choices": choices});
            if let (Some(v), Value::Object(extra)) = (v.as_object_mut(), extra) {
                v.extend(extra);
            }
            Bytes::from(format!("data: {v}\n\n"))
        };
        // `stream_options.continuous_usage_stats`: each chunk carries its choice's usage so far.
        let running_usage = |i: usize, generated: usize| {
            if !common.continuous_usage_stats {
                return json!({});
            }
            let p = opts.prompt_ids(i).len();
            json!({"usage": {"prompt_tokens": p, "completion_tokens": generated, "total_tokens": p + generated}})
        };
        let tok = &state.model.tokenizer;
        let mut results: Vec<ChoiceResult> = (0..n_choices).map(|_| ChoiceResult::default()).collect();
        let mut started = vec![false; n_choices];
        // Bytes of echoed text before the generated text (completion logprobs' text_offset).
        let mut echoed_len = vec![0usize; n_choices];
        let mut generated = vec![0usize; n_choices];
        let mut finished = 0;
        while finished < n_choices {
            // A closed stream means the engine went away; the client sees no [DONE]. A closed
            // body means the client left: returning drops `sub`, which aborts the requests.
            let next = tokio::select! {
                _ = tx.closed() => return,
                next = sub.next() => next,
            };
            let Some((i, ev)) = next else { return };
            if let ChoiceEvent::PromptLogprobs(p) = ev {
                results[i].prompt_logprobs = Some(p);
                continue;
            }
            let scoring = common.scores_only();
            if !started[i] && matches!(ev, ChoiceEvent::Token(_) | ChoiceEvent::TrailingText(_) | ChoiceEvent::Finished { .. }) {
                started[i] = true;
                if let Some((c, mut extra)) = first_chunk(&state, &opts, i, &results[i], &mut echoed_len[i]) {
                    if let (Some(e), Value::Object(u)) = (extra.as_object_mut(), running_usage(i, 0)) {
                        e.extend(u);
                    }
                    if tx.send(chunk(vec![c], extra)).is_err() {
                        return;
                    }
                }
            }
            let (text, lp, id) = match ev {
                ChoiceEvent::Token(_) | ChoiceEvent::TrailingText(_) if scoring => continue,
                ChoiceEvent::Token(t) => {
                    if let Some(tk) = ticket.as_mut() {
                        tk.completion_tokens += 1;
                    }
                    generated[i] += 1;
                    let lp = common.request.logprobs.map(|_| match opts.kind {
                        StreamKind::Completion(_) => {
                            let offset = echoed_len[i] + results[i].text.len();
                            completion_logprobs(tok, std::slice::from_ref(&t), common.tokens_as_ids, offset)
                        }
                        StreamKind::Chat(_) => chat_logprobs(tok, std::slice::from_ref(&t), common.tokens_as_ids),
                    });
                    if let Some(format) = &tool_format {
                        if let Some(deltas) = tool_streams[i].on_token(format, t.id, tok, &opts.id, i) {
                            for calls in deltas {
                                let c = json!({"index": i, "delta": {"tool_calls": calls}, "logprobs": null, "finish_reason": null});
                                if tx.send(chunk(vec![c], running_usage(i, generated[i]))).is_err() {
                                    return;
                                }
                            }
                            continue;
                        }
                    }
                    (t.text, lp, Some(t.id))
                }
                ChoiceEvent::TrailingText(t) => (t, None, None),
                ChoiceEvent::Finished { reason, mut usage } => {
                    let reason = if scoring {
                        usage.completion_tokens = 0;
                        FinishReason::Length
                    } else {
                        reason
                    };
                    results[i].usage = usage;
                    results[i].finish = Some(reason);
                    finished += 1;
                    let c = choice(&opts.kind, i, "", None, Some(tool_streams[i].finish_reason(reason.as_str())), false);
                    if tx.send(chunk(vec![c], running_usage(i, usage.completion_tokens))).is_err() {
                        return;
                    }
                    continue;
                }
                ChoiceEvent::Failed(f) => {
                    // The stream ends like any other: an error event, then [DONE].
                    let err = super::error::ApiError::from_failure(&f).body();
                    let _ = tx.send(Bytes::from(format!("data: {err}\n\ndata: [DONE]\n\n")));
                    return;
                }
                ChoiceEvent::PromptLogprobs(_) => continue,
            };
            if text.is_empty() && lp.is_none() && !(common.return_token_ids && id.is_some()) {
                continue;
            }
            results[i].text.push_str(&text);
            let mut c = choice(&opts.kind, i, &text, lp, None, false);
            if common.return_token_ids {
                c["token_ids"] = json!(id.into_iter().collect::<Vec<_>>());
            }
            if tx.send(chunk(vec![c], running_usage(i, generated[i]))).is_err() {
                return; // client gone: dropping `sub` aborts the rest
            }
        }
        let u = usage(&results, common.n);
        let (p, c) = (u["prompt_tokens"].as_u64().unwrap_or(0), u["completion_tokens"].as_u64().unwrap_or(0));
        stats.prompt_tokens.fetch_add(p, std::sync::atomic::Ordering::Relaxed);
        stats.generation_tokens.fetch_add(c, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = ticket.take() {
            t.settle(p as usize, c as usize, results_reason(&results));
        }
        if common.include_usage {
            let _ = tx.send(chunk(vec![], json!({"usage": u})));
        }
        let _ = tx.send(Bytes::from_static(b"data: [DONE]\n\n"));
    });
    Reply::Sse(rx)
}

/// A choice's first chunk: the chat role (and an echoed message), or a completion's echoed
/// prompt, prompt logprobs and prompt ids; with top-level fields for the chunk. None when a
/// completion has nothing to put before its text.
fn first_chunk(state: &AppState, opts: &StreamOptions, i: usize, r: &ChoiceResult, echoed_len: &mut usize) -> Option<(Value, Value)> {
    let common = &opts.common;
    match &opts.kind {
        StreamKind::Completion(prompts) => {
            if !(common.echo || common.prompt_logprobs_field.is_some() || common.return_token_ids) {
                return None;
            }
            let (prompt, text) = prompts.get(i / common.n.max(1))?;
            let mut c = prompt_part(state, common, prompt, text, r);
            *echoed_len = c["text"].as_str().map_or(0, str::len);
            c["index"] = json!(i);
            c["finish_reason"] = Value::Null;
            Some((c, json!({})))
        }
        StreamKind::Chat(chat) => {
            let text = if common.echo { chat.echo.as_deref().unwrap_or("") } else { "" };
            let mut extra = json!({});
            if common.return_token_ids {
                extra["prompt_token_ids"] = json!(chat.ids);
            }
            if common.prompt_logprobs_field.is_some() {
                let scored = r.prompt_logprobs.as_deref().unwrap_or(&[]);
                extra["prompt_logprobs"] = vllm_prompt_logprobs(&state.model.tokenizer, &chat.ids, scored, common.tokens_as_ids);
            }
            Some((choice(&opts.kind, i, text, None, None, true), extra))
        }
    }
}

fn results_reason(results: &[ChoiceResult]) -> &'static str {
    results.first().and_then(|r| r.finish).map_or("stop", |f| f.as_str())
}

fn choice(kind: &StreamKind, index: usize, text: &str, logprobs: Option<Value>, finish: Option<&str>, first: bool) -> Value {
    match kind {
        StreamKind::Completion(_) => json!({"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}),
        StreamKind::Chat(_) => {
            let mut delta = if finish.is_some() && text.is_empty() { json!({}) } else { json!({"content": text}) };
            if first {
                delta["role"] = json!("assistant");
            }
            json!({"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish})
        }
    }
}
