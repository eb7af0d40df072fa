//! Every request field is honoured (each test shows the field changing the output as vLLM
//! specifies) or refused with a 400 naming it. A real `mlahost serve` on the built-in model.

mod support;

use serde_json::{json, Value};
use support::Server;

const PROMPT: [u32; 9] = [0, 57, 300, 12, 999, 4, 81, 23, 7];

fn ids(v: &Value) -> Vec<u64> {
    v.as_array().unwrap_or_else(|| panic!("not a list: {v}")).iter().map(|x| x.as_u64().unwrap()).collect()
}

fn complete(server: &Server, extra: Value) -> Value {
    let mut body = json!({"prompt": PROMPT, "max_tokens": 8, "temperature": 0, "ignore_eos": true, "return_token_ids": true});
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    let (status, v) = server.post("/v1/completions", &body);
    assert_eq!(status, 200, "{v}");
    v
}

fn generated(v: &Value) -> Vec<u64> {
    ids(&v["choices"][0]["token_ids"])
}

#[test]
fn echo_and_prompt_logprobs_score_the_prompt() {
    let server = Server::start(&[]);
    // Scoring only: max_tokens 0 with echo, as lm-eval's loglikelihood requests do.
    let v = complete(&server, json!({"max_tokens": 0, "echo": true, "logprobs": 2, "prompt_logprobs": 2}));
    let c = &v["choices"][0];
    let lp = &c["logprobs"];
    assert_eq!(lp["tokens"].as_array().unwrap().len(), PROMPT.len(), "one entry per prompt token");
    assert_eq!((&lp["token_logprobs"][0], &lp["top_logprobs"][0]), (&Value::Null, &Value::Null), "the first token has no context");
    assert_eq!(c["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 0);
    assert_eq!(ids(&c["token_ids"]), Vec::<u64>::new(), "nothing generated is returned");
    assert_eq!(ids(&c["prompt_token_ids"]), PROMPT.iter().map(|&t| t as u64).collect::<Vec<_>>());
    let (_, decoded) = server.post("/detokenize", &json!({"tokens": PROMPT}));
    assert_eq!(c["text"], decoded["prompt"], "the echoed text is the prompt");
    // vLLM's prompt_logprobs: null, then {id: {logprob, rank, decoded_token}} holding the prompt token.
    let plp = c["prompt_logprobs"].as_array().unwrap();
    assert_eq!(plp.len(), PROMPT.len());
    assert!(plp[0].is_null());
    for (i, entry) in plp.iter().enumerate().skip(1) {
        let own = &entry[PROMPT[i].to_string()];
        let lp_i = lp["token_logprobs"][i].as_f64().unwrap();
        assert!(lp_i < 0.0);
        assert_eq!(own["logprob"].as_f64().unwrap(), lp_i, "the two shapes agree at {i}");
        let rank = own["rank"].as_u64().unwrap();
        assert!(rank >= 1);
        // The echo's alternatives hold the prompt token and the 2 best; the best has rank 1.
        let tops = lp["top_logprobs"][i].as_object().unwrap();
        assert!(tops.len() == 2 || tops.len() == 3, "{tops:?}");
        let best = tops.values().map(|x| x.as_f64().unwrap()).fold(f64::MIN, f64::max);
        assert_eq!(rank == 1, (best - lp_i).abs() < 1e-9, "rank 1 exactly when the token is the best at {i}");
    }
    // Echo with generation: the prompt first, then the generated tokens, offsets continuing.
    let plain = complete(&server, json!({"logprobs": 1}));
    let v = complete(&server, json!({"echo": true, "logprobs": 1}));
    let c = &v["choices"][0];
    assert_eq!(c["text"], json!(format!("{}{}", decoded["prompt"].as_str().unwrap(), plain["choices"][0]["text"].as_str().unwrap())));
    let lp = &c["logprobs"];
    assert_eq!(lp["tokens"].as_array().unwrap().len(), PROMPT.len() + 8);
    assert_eq!(lp["token_logprobs"][PROMPT.len()], plain["choices"][0]["logprobs"]["token_logprobs"][0]);
    let offsets = ids(&lp["text_offset"]);
    assert!(offsets.windows(2).all(|w| w[0] <= w[1]) && offsets[0] == 0);
    assert_eq!(v["usage"]["completion_tokens"], 8);
    // Streaming: the first chunk carries the echoed prompt.
    let body = json!({"prompt": PROMPT, "max_tokens": 3, "temperature": 0, "echo": true, "stream": true});
    let r = server.post_raw("/v1/completions", &body.to_string());
    let first: Value = serde_json::from_str(&r.sse_data()[0]).unwrap();
    assert_eq!(first["choices"][0]["text"], decoded["prompt"]);
}

#[test]
fn logits_processors_change_the_tokens() {
    let server = Server::start(&[]);
    let base = generated(&complete(&server, json!({})));
    let other = (0..1000u64).find(|t| !base.contains(t)).unwrap();
    // logit_bias: +100 makes a token the greedy choice everywhere; -100 removes the greedy one.
    let v = complete(&server, json!({"logit_bias": {other.to_string(): 100}}));
    assert!(generated(&v).iter().all(|&t| t == other));
    let v = complete(&server, json!({"logit_bias": {base[0].to_string(): -100}, "max_tokens": 1}));
    assert_ne!(generated(&v)[0], base[0]);
    // allowed_token_ids: sampling (temperature 1) stays inside the set.
    let allowed = [5u64, 77, 300];
    let v = complete(&server, json!({"allowed_token_ids": allowed, "temperature": 1.0, "seed": 3, "max_tokens": 16}));
    assert!(generated(&v).iter().all(|t| allowed.contains(t)), "{:?}", generated(&v));
    // bad_words: the first greedy token, as text, is never generated.
    let (_, word) = server.post("/detokenize", &json!({"tokens": [base[0]]}));
    let word = word["prompt"].as_str().unwrap().to_string();
    let v = complete(&server, json!({"bad_words": [word]}));
    assert!(!generated(&v).contains(&base[0]), "{word:?} in {:?}", generated(&v));
    // A two-token bad word: its second token is banned only right after its first.
    let (_, pair) = server.post("/detokenize", &json!({"tokens": [base[0], base[1]]}));
    let (_, check) = server.post("/tokenize", &json!({"prompt": pair["prompt"], "add_special_tokens": false}));
    if ids(&check["tokens"]) == base[..2] {
        let v = complete(&server, json!({"bad_words": [pair["prompt"]]}));
        assert_eq!(generated(&v)[0], base[0]);
        assert_ne!(generated(&v)[1], base[1]);
    }
}

#[test]
fn stop_tokens_min_tokens_and_stop_strings() {
    let server = Server::start(&[]);
    let base = complete(&server, json!({}));
    let toks = generated(&base);
    // stop_token_ids: generation ends at the first occurrence, finish "stop".
    let stop_at = toks.iter().position(|&t| t == toks[2]).unwrap();
    let v = complete(&server, json!({"stop_token_ids": [toks[2]]}));
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(generated(&v), toks[..=stop_at].to_vec());
    // min_tokens: the stop token is banned until 5 tokens are out, so generation goes past it.
    let v = complete(&server, json!({"stop_token_ids": [toks[2]], "min_tokens": 5}));
    let got = generated(&v);
    assert!(got.len() >= 5, "{got:?}");
    assert!(!got[..5].contains(&toks[2]));
    let (status, e) = server.post("/v1/completions", &json!({"prompt": PROMPT, "max_tokens": 2, "min_tokens": 3}));
    assert_eq!((status, e["error"]["param"].as_str()), (400, Some("min_tokens")));
    // A stop string: left out by default, included with include_stop_str_in_output.
    let text = base["choices"][0]["text"].as_str().unwrap();
    let stop: String = text.chars().skip(text.chars().count() / 2).take(2).collect();
    let cut = &text[..text.find(&stop).unwrap()];
    let v = complete(&server, json!({"stop": [stop]}));
    assert_eq!(v["choices"][0]["text"], json!(cut));
    let v = complete(&server, json!({"stop": [stop], "include_stop_str_in_output": true}));
    assert_eq!(v["choices"][0]["text"], json!(format!("{cut}{stop}")));
    // include_stop_str_in_output with a stop token: its text is kept.
    let v = complete(&server, json!({"stop_token_ids": [toks[2]], "include_stop_str_in_output": true}));
    let (_, upto) = server.post("/detokenize", &json!({"tokens": toks[..=stop_at]}));
    assert_eq!(v["choices"][0]["text"], upto["prompt"]);
}

#[test]
fn special_tokens_truncation_and_token_ids() {
    let server = Server::start(&[]);
    let (_, bos) = server.post("/tokenize", &json!({"prompt": "", "add_special_tokens": true}));
    let bos = ids(&bos["tokens"])[0];
    // skip_special_tokens: a generated BOS shows as text only when asked.
    let only_bos = json!({"allowed_token_ids": [bos], "max_tokens": 2});
    let v = complete(&server, only_bos.clone());
    assert_eq!((generated(&v), &v["choices"][0]["text"]), (vec![bos, bos], &json!("")));
    let mut keep = only_bos;
    keep["skip_special_tokens"] = json!(false);
    let v = complete(&server, keep);
    assert_eq!(v["choices"][0]["text"], json!("<｜begin▁of▁sentence｜>".repeat(2)));
    // add_special_tokens: a text prompt without BOS is one token shorter.
    let text = json!({"prompt": "The quick brown fox", "max_tokens": 1, "return_token_ids": true});
    let (_, with) = server.post("/v1/completions", &text);
    let mut without = text.clone();
    without["add_special_tokens"] = json!(false);
    let (_, without) = server.post("/v1/completions", &without);
    let (w, wo) = (ids(&with["choices"][0]["prompt_token_ids"]), ids(&without["choices"][0]["prompt_token_ids"]));
    assert_eq!((w[0], &w[1..]), (bos, &wo[..]));
    // truncate_prompt_tokens: the last 4 tokens, exactly as if only they were sent.
    let v = complete(&server, json!({"truncate_prompt_tokens": 4}));
    assert_eq!(v["usage"]["prompt_tokens"], 4);
    let tail = PROMPT[PROMPT.len() - 4..].to_vec();
    let (_, same) = server.post("/v1/completions", &json!({"prompt": tail, "max_tokens": 8, "temperature": 0, "ignore_eos": true, "return_token_ids": true}));
    assert_eq!(generated(&v), generated(&same));
    let (status, e) = server.post("/v1/completions", &json!({"prompt": PROMPT, "truncate_prompt_tokens": 0}));
    assert_eq!((status, e["error"]["param"].as_str()), (400, Some("truncate_prompt_tokens")));
    // return_token_ids: the generated ids are the ones return_tokens_as_token_ids names.
    let v = complete(&server, json!({"logprobs": 0, "return_tokens_as_token_ids": true}));
    let named: Vec<u64> = v["choices"][0]["logprobs"]["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().strip_prefix("token_id:").unwrap().parse().unwrap())
        .collect();
    assert_eq!(generated(&v), named);
    let (_, plain) = server.post("/v1/completions", &json!({"prompt": PROMPT, "max_tokens": 1}));
    assert!(plain["choices"][0].get("token_ids").is_none(), "only when asked");
}

#[test]
fn chat_fields_and_streaming_usage() {
    let server = Server::start(&["--page-size", "4"]);
    let chat = |extra: Value| {
        let mut body = json!({"messages": [{"role": "user", "content": "Say something"}], "max_tokens": 4, "temperature": 0,
            "ignore_eos": true, "return_token_ids": true});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let (status, v) = server.post("/v1/chat/completions", &body);
        assert_eq!(status, 200, "{v}");
        v
    };
    let base = chat(json!({}));
    let prompt = ids(&base["prompt_token_ids"]);
    // chat_template_kwargs reach the template (this one prints bos_token).
    let v = chat(json!({"chat_template_kwargs": {"bos_token": ""}}));
    assert_eq!(ids(&v["prompt_token_ids"]), prompt[1..].to_vec());
    // continue_final_message: the prompt ends inside the assistant's message, no EOS after it.
    let partial = json!({"messages": [{"role": "user", "content": "Say something"}, {"role": "assistant", "content": "Hello wor"}],
        "continue_final_message": true, "add_generation_prompt": false});
    let v = chat(partial.clone());
    let (_, text) = server.post("/detokenize", &json!({"tokens": v["prompt_token_ids"]}));
    assert!(text["prompt"].as_str().unwrap().ends_with("Assistant: Hello wor"), "{}", text["prompt"]);
    // echo: the reply repeats the assistant's final message first.
    let mut echo = partial;
    echo["echo"] = json!(true);
    let e = chat(echo);
    let content = e["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(content, format!("Hello wor{}", v["choices"][0]["message"]["content"].as_str().unwrap()));
    let (status, err) = server.post("/v1/chat/completions", &json!({"messages": [{"role": "user", "content": "x"}],
        "continue_final_message": true, "add_generation_prompt": true}));
    assert_eq!((status, err["error"]["param"].as_str()), (400, Some("continue_final_message")));
    // prompt_logprobs on chat: top level, one entry per prompt token.
    let v = chat(json!({"prompt_logprobs": 1}));
    assert_eq!(v["prompt_logprobs"].as_array().unwrap().len(), prompt.len());
    // cached_tokens: the same conversation again reads its full pages from the prefix cache.
    assert_eq!(base["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    let again = chat(json!({}));
    let cached = again["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap();
    assert_eq!(cached as usize, (prompt.len() - 1) / 4 * 4, "every full page before the last token");
    // continuous_usage_stats: every chunk counts the tokens so far.
    let body = json!({"messages": [{"role": "user", "content": "Say something"}], "max_tokens": 4, "temperature": 0, "ignore_eos": true,
        "stream": true, "stream_options": {"include_usage": true, "continuous_usage_stats": true}});
    let r = server.post_raw("/v1/chat/completions", &body.to_string());
    let chunks: Vec<Value> = r.sse_data().iter().filter(|d| *d != "[DONE]").map(|d| serde_json::from_str(d).unwrap()).collect();
    let counts: Vec<u64> =
        chunks.iter().filter(|c| !c["choices"].as_array().unwrap().is_empty()).map(|c| c["usage"]["completion_tokens"].as_u64().unwrap()).collect();
    assert!(counts.windows(2).all(|w| w[0] <= w[1]) && counts.last() == Some(&4), "{counts:?}");
    assert!(chunks.iter().all(|c| c["usage"]["prompt_tokens"].as_u64() == Some(prompt.len() as u64)));
}

#[test]
fn fields_mlahost_does_not_implement_are_refused_by_name() {
    let server = Server::start(&[]);
    let refused = [
        ("/v1/completions", json!({"prompt": "x", "suffix": " the end"}), "suffix"),
        ("/v1/completions", json!({"prompt": "x", "best_of": 3}), "best_of"),
        ("/v1/completions", json!({"prompt": "x", "tools": [{"type": "function", "function": {"name": "f"}}]}), "tools"),
        ("/v1/completions", json!({"prompt": "x", "guided_decoding_backend": "xgrammar"}), "guided_decoding_backend"),
        ("/v1/chat/completions", json!({"messages": [{"role": "user", "content": "x"}], "parallel_tool_calls": false}), "parallel_tool_calls"),
        ("/v1/chat/completions", json!({"messages": [{"role": "user", "content": "x"}], "structural_tag": {}}), "structural_tag"),
        ("/v1/chat/completions", json!({"messages": [{"role": "user", "content": "x"}], "use_beam_search": true}), "use_beam_search"),
    ];
    for (path, body, field) in refused {
        let (status, v) = server.post(path, &body);
        assert_eq!(status, 400, "{field}: {v}");
        assert_eq!(v["error"]["param"], field);
        assert!(v["error"]["message"].as_str().unwrap().contains(field));
    }
    // Values that ask for nothing, and fields nobody defines, pass.
    let fine = json!({"prompt": "x", "max_tokens": 1, "best_of": 1, "suffix": "", "tools": [], "no_such_field": {"a": 1}});
    assert_eq!(server.post("/v1/completions", &fine).0, 200);
}
