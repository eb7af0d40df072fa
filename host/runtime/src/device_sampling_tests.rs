//! The engine loop's device-sampling path, exercised without a GPU: a backend that "samples on
//! the device" with the host's own sampler must produce exactly the tokens and logprobs of the
//! host path, and the loop must actually take that path.

use crate::request::{EngineRequest, Event};
use crate::core::EngineCore;
use crate::handle::spawn;
use crate::metrics::Metrics;
use mlahost_core::{BlockAllocator, Scheduler, SchedulerConfig};
use mlahost_engine::cpu::{AttentionMode, CpuBackend, CpuOptions};
use mlahost_engine::sampling::SamplingParams;
use crate::emulated_device::{DeviceCounts, EmulatedDeviceSampler};
use mlahost_engine::{Backend, CacheGeometry, KvCacheDtype, LoadedModel};
use std::sync::Arc;

const PAGES: usize = 64;
const PAGE: usize = 16;

fn model() -> Arc<LoadedModel> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-v2-lite");
    Arc::new(LoadedModel::load(&dir, None).expect("fixture"))
}

fn cpu(model: &LoadedModel) -> CpuBackend {
    let geometry = CacheGeometry { num_pages: PAGES, page_size: PAGE };
    model.cpu_backend(CpuOptions { geometry, attention: AttentionMode::Auto, kv_dtype: KvCacheDtype::F32 }).expect("backend")
}

/// Runs two requests at once through a loop on `backend`; returns each one's tokens and logprobs.
fn run(model: Arc<LoadedModel>, backend: Box<dyn Backend>) -> Vec<Vec<(u32, f32, Vec<(u32, f32)>)>> {
    let make = Box::new(|| Scheduler::new(SchedulerConfig::default(), BlockAllocator::new(PAGES, PAGE)?));
    let core = EngineCore::new(model, backend, make, 1024, Arc::new(Metrics::new("test", 0))).expect("core");
    let (engine, join) = spawn(core).expect("loop");
    let request = |prompt: Vec<u32>, params: SamplingParams| EngineRequest {
        ignore_eos: true,
        logprobs: Some(3),
        ..EngineRequest::new(prompt, params, 10)
    };
    let sampled = SamplingParams { temperature: 0.9, top_p: 0.9, seed: Some(11), frequency_penalty: 0.4, ..Default::default() };
    let greedy = SamplingParams { temperature: 0.0, repetition_penalty: 1.3, ..Default::default() };
    let receivers = [engine.submit(vec![request(vec![1, 5, 9, 200, 31], sampled)]).1, engine.submit(vec![request(vec![7; 20], greedy)]).1];
    let out = receivers
        .into_iter()
        .map(|mut rx| {
            let mut tokens = Vec::new();
            while let Some((_, e)) = rx.blocking_recv() {
                match e {
                    Event::Token(t) => tokens.push((t.id, t.logprob, t.top)),
                    Event::Finished { .. } | Event::Failed(_) | Event::Rejected(_) => break,
                    _ => {}
                }
            }
            tokens
        })
        .collect();
    drop(engine);
    join.join().expect("loop thread");
    out
}

#[test]
fn device_sampling_path_gives_the_host_paths_tokens_and_logprobs() {
    let model = model();
    let host = run(model.clone(), Box::new(cpu(&model)));
    let counts = DeviceCounts::default();
    let device = run(model.clone(), Box::new(EmulatedDeviceSampler { inner: cpu(&model), counts: counts.clone() }));
    let calls = DeviceCounts::get(&counts.calls);
    assert_eq!(host.iter().map(Vec::len).collect::<Vec<_>>(), vec![10, 10]);
    assert_eq!(host, device, "same tokens, logprobs and alternatives on both paths");
    assert!(calls >= 10, "the loop sampled through the backend ({calls} calls)");
}
