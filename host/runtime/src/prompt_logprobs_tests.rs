//! Prompt logprobs through the engine loop: every prompt position scored once, in chunks or
//! not, never read from the prefix cache; equal to a single forward pass over the prompt.

use crate::core::EngineCore;
use crate::handle::spawn;
use crate::metrics::Metrics;
use crate::request::{EngineRequest, Event, PromptLogprob, Usage};
use mlahost_core::{BlockAllocator, Scheduler, SchedulerConfig};
use mlahost_engine::cpu::{AttentionMode, CpuOptions};
use mlahost_engine::sampling::{log_softmax, token_rank, top_logprobs, SamplingParams};
use mlahost_engine::{Backend, CacheGeometry, KvCacheDtype, LoadedModel, LogitsRequest, SeqChunk};
use std::sync::Arc;

const PAGES: usize = 64;
const PAGE: usize = 4;

fn model() -> Arc<LoadedModel> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-v2-lite");
    Arc::new(LoadedModel::load(&dir, None).expect("fixture"))
}

fn options() -> CpuOptions {
    CpuOptions { geometry: CacheGeometry { num_pages: PAGES, page_size: PAGE }, attention: AttentionMode::Auto, kv_dtype: KvCacheDtype::F32 }
}

/// The reference: one forward pass over the whole prompt with every row's logits.
fn reference(model: &LoadedModel, prompt: &[u32], k: usize) -> Vec<PromptLogprob> {
    let mut backend = model.cpu_backend(options()).expect("backend");
    let table: Vec<u32> = (0..prompt.len().div_ceil(PAGE) as u32).collect();
    let logits = backend.forward(&[SeqChunk { tokens: prompt, start_pos: 0, block_table: &table, logits: LogitsRequest::All }]).expect("forward");
    (0..prompt.len() - 1)
        .map(|p| {
            let lp = log_softmax(logits.row(p));
            let token = prompt[p + 1];
            PromptLogprob { token, logprob: lp[token as usize], rank: token_rank(&lp, token), top: top_logprobs(&lp, k) }
        })
        .collect()
}

/// Runs `requests` one after another on one loop; each one's prompt logprobs and usage.
fn run(model: Arc<LoadedModel>, budget: usize, requests: Vec<EngineRequest>) -> Vec<(Option<Vec<PromptLogprob>>, Usage, usize)> {
    let m = model.clone();
    let make = Box::new(move || {
        let cfg = SchedulerConfig { max_num_batched_tokens: budget, long_prefill_token_threshold: budget, ..SchedulerConfig::default() };
        Scheduler::new(cfg, BlockAllocator::new(PAGES, PAGE)?)
    });
    let backend = Box::new(m.cpu_backend(options()).expect("backend"));
    let core = EngineCore::new(model, backend as Box<dyn Backend>, make, 1024, Arc::new(Metrics::new("test", 0))).expect("core");
    let (engine, join) = spawn(core).expect("loop");
    let mut out = Vec::new();
    for r in requests {
        let mut rx = engine.submit(vec![r]).1;
        let (mut prompt_lp, mut usage, mut tokens) = (None, Usage::default(), 0);
        while let Some((_, e)) = rx.blocking_recv() {
            match e {
                Event::PromptLogprobs(p) => {
                    assert_eq!(tokens, 0, "prompt logprobs come before the first token");
                    assert!(prompt_lp.replace(p).is_none(), "sent once");
                }
                Event::Token(_) => tokens += 1,
                Event::Finished { usage: u, .. } => {
                    usage = u;
                    break;
                }
                Event::Failed(_) | Event::Rejected(_) => panic!("request failed"),
                _ => {}
            }
        }
        out.push((prompt_lp, usage, tokens));
    }
    drop(engine);
    join.join().expect("loop thread");
    out
}

fn request(prompt: &[u32], prompt_logprobs: Option<usize>) -> EngineRequest {
    let params = SamplingParams { temperature: 0.0, ..Default::default() };
    EngineRequest { ignore_eos: true, prompt_logprobs, ..EngineRequest::new(prompt.to_vec(), params, 3) }
}

fn assert_close(got: &[PromptLogprob], want: &[PromptLogprob]) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert_eq!((g.token, g.rank), (w.token, w.rank));
        assert!((g.logprob - w.logprob).abs() < 1e-4, "{} vs {}", g.logprob, w.logprob);
        assert_eq!(g.top.iter().map(|t| t.0).collect::<Vec<_>>(), w.top.iter().map(|t| t.0).collect::<Vec<_>>());
    }
}

#[test]
fn prompt_logprobs_match_one_forward_pass_in_chunks_and_past_the_prefix_cache() {
    let model = model();
    let prompt: Vec<u32> = vec![1, 57, 300, 12, 999, 4, 4, 81, 23, 7, 640, 2, 33];
    let want = reference(&model, &prompt, 3);
    assert_eq!(want.len(), prompt.len() - 1);
    // A budget of 5 tokens prefills the 13-token prompt in three chunks.
    for budget in [5, 2048] {
        let runs = run(model.clone(), budget, vec![request(&prompt, None), request(&prompt, Some(3)), request(&prompt, None)]);
        let (none, first_usage, _) = &runs[0];
        assert!(none.is_none(), "not asked, not sent");
        assert_eq!(first_usage.cached_tokens, 0);
        let (got, usage, tokens) = &runs[1];
        assert_close(got.as_ref().expect("prompt logprobs"), &want);
        assert_eq!((usage.cached_tokens, *tokens), (0, 3), "computed, not read from the cache");
        // The same prompt without prompt logprobs reuses the cached full pages (12 of 13 tokens).
        assert_eq!(runs[2].1.cached_tokens, 12, "budget {budget}");
    }
    // A one-token prompt has no prompt logprobs, and says so.
    let runs = run(model.clone(), 2048, vec![request(&[5], Some(2))]);
    assert_eq!(runs[0].0.as_deref(), Some(&[][..]));
}
