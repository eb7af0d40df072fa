//! Grammar masks on the device-sampling path, without a GPU: the engine core calls the
//! masks-only grammar plugin while the forward pass runs and hands its allow-sets to a backend that
//! "samples on the device" (the host's sampler over its own logits, honouring the allow-set as
//! the CUDA sampler does). The constrained output must hold its regex, every step must take
//! the device path, and an unconstrained neighbour must get exactly the tokens it gets alone.

mod support;
#[path = "../../runtime/src/emulated_device.rs"]
mod emulated_device;

use mlahost_core::{BlockAllocator, Scheduler, SchedulerConfig};
use emulated_device::{DeviceCounts, EmulatedDeviceSampler};
use mlahost_engine::cpu::{AttentionMode, CpuOptions};
use mlahost_engine::sampling::SamplingParams;
use mlahost_engine::{Backend, CacheGeometry, KvCacheDtype, LoadedModel, TokenBytes};
use mlahost_plugins::{FailurePolicy, Plugin, PluginHost, PluginSpec, Vocabulary};
use mlahost_runtime::metrics::Metrics;
use mlahost_runtime::{spawn, ChoiceEvent, ChoiceText, EngineCore, EngineRequest, Event, SamplerChoice, TextOptions};
use std::sync::Arc;

const PAGES: usize = 64;
const PAGE: usize = 16;

fn model() -> Arc<LoadedModel> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-v2-lite");
    Arc::new(LoadedModel::load(&dir, None).expect("fixture"))
}

/// Runs the requests at once on an emulated device sampler; each one's generated tokens and
/// text, or why it failed.
fn run(model: &Arc<LoadedModel>, requests: Vec<EngineRequest>, counts: &DeviceCounts, samplers: &[Arc<Plugin>]) -> Vec<Result<(Vec<u32>, String), String>> {
    let geometry = CacheGeometry { num_pages: PAGES, page_size: PAGE };
    let cpu = model.cpu_backend(CpuOptions { geometry, attention: AttentionMode::Auto, kv_dtype: KvCacheDtype::F32 }).expect("backend");
    let backend: Box<dyn Backend> = Box::new(EmulatedDeviceSampler { inner: cpu, counts: counts.clone() });
    let make = Box::new(|| Scheduler::new(SchedulerConfig::default(), BlockAllocator::new(PAGES, PAGE)?));
    let core = EngineCore::new(model.clone(), backend, make, 1024, Arc::new(Metrics::new("test", 0))).expect("core").with_samplers(samplers.to_vec());
    let (engine, join) = spawn(core).expect("loop");
    let receivers: Vec<_> = requests.into_iter().map(|r| engine.submit(vec![r]).1).collect();
    let out = receivers
        .into_iter()
        .map(|mut rx| {
            // The text as the server's front end makes it from the engine's token ids.
            let (mut ids, mut text, mut choice) = (Vec::new(), String::new(), ChoiceText::new(&TextOptions::default(), 0));
            while let Some((_, e)) = rx.blocking_recv() {
                if let Event::Rejected(m) = &e {
                    panic!("rejected: {m}");
                }
                let mut out = Vec::new();
                let finished = choice.on_event(&model.tokenizer, e, &mut out).finished;
                for c in out {
                    match c {
                        ChoiceEvent::Token(t) => {
                            ids.push(t.id);
                            text.push_str(&t.text);
                        }
                        ChoiceEvent::TrailingText(t) => text.push_str(&t),
                        ChoiceEvent::Failed(f) => return Err(f.detail),
                        ChoiceEvent::Finished { .. } | ChoiceEvent::PromptLogprobs(_) => {}
                    }
                }
                if finished {
                    break;
                }
            }
            Ok((ids, text))
        })
        .collect();
    drop(engine);
    join.join().expect("loop thread");
    out
}

#[test]
fn grammar_masks_are_applied_by_the_device_sampler_and_leave_neighbours_unchanged() {
    let model = model();
    let tokens = TokenBytes::new(&model.tokenizer, model.config.vocab_size, model.stop_token_ids());
    let mut spec = PluginSpec::parse(&support::plugin("grammar")).expect("spec");
    spec.failure_policy = FailurePolicy::Closed;
    spec.masks_only = true;
    spec.memory_bytes = 256 << 20;
    let host = PluginHost::load(vec![spec], Vocabulary::new(&tokens.tokens, tokens.special, tokens.eos)).expect("grammar plugin");
    assert!(host.sampler("grammar").is_some(), "loaded");
    let samplers = host.samplers();
    let plain = || EngineRequest {
        ignore_eos: true,
        ..EngineRequest::new(vec![1, 5, 9, 200, 31], SamplingParams { temperature: 0.9, seed: Some(3), ..Default::default() }, 12)
    };
    let constrained = EngineRequest {
        sampler: Some(SamplerChoice { name: "grammar".into(), config: r#"{"type": "regex", "pattern": "[a-z]{3,6}-[0-9]{2}"}"#.into() }),
        ..EngineRequest::new(vec![7, 8, 9], SamplingParams { temperature: 1.0, seed: Some(5), ..Default::default() }, 40)
    };
    // A constraint the grammar cannot compile fails its own sequence while the device samples
    // it; the token drawn for it is dropped.
    let broken = EngineRequest {
        sampler: Some(SamplerChoice { name: "grammar".into(), config: r#"{"type": "regex", "pattern": "[unclosed"}"#.into() }),
        ..EngineRequest::new(vec![4, 4, 2], SamplingParams { temperature: 1.0, seed: Some(6), ..Default::default() }, 10)
    };
    let counts = DeviceCounts::default();
    let alone = run(&model, vec![plain()], &counts, &samplers);
    let together = run(&model, vec![constrained, broken, plain()], &counts, &samplers);
    let (calls, masked, pending) = (DeviceCounts::get(&counts.calls), DeviceCounts::get(&counts.masked_rows), DeviceCounts::get(&counts.pending_rows));
    let failed = together[1].as_ref().expect_err("the broken constraint fails its request");
    assert!(failed.contains("grammar"), "{failed}");
    let together: Vec<(Vec<u32>, String)> = [&together[0], &together[2]].iter().map(|r| r.as_ref().expect("served").clone()).collect();
    let alone = alone[0].as_ref().expect("served");
    let text = &together[0].1;
    let ok = text.len() >= 6 && text.split_once('-').is_some_and(|(a, b)| (3..=6).contains(&a.len()) && a.bytes().all(|c| c.is_ascii_lowercase()) && b.len() == 2 && b.bytes().all(|c| c.is_ascii_digit()));
    assert!(ok, "the constrained output breaks its regex: {text:?}");
    assert_eq!(together[1].0, alone.0, "the unconstrained neighbour's tokens changed");
    // The allow-sets were computed while the forward pass ran, and waited for by the sampler.
    assert!(pending >= masked, "masks came through pending slots");
    assert!(masked >= 3, "the allow-sets reached the device sampler ({} masked rows)", masked);
    assert!(calls >= 24, "every step took the device path ({} calls)", calls);
}
