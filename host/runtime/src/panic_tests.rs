//! A step that panics (a bug in a backend, a plugin adapter, the scheduler) fails only the
//! requests in flight; the loop rebuilds its scheduler and page pool and serves the next ones.

use crate::request::{EngineRequest, Event, FailureCause, SamplerChoice};
use crate::core::EngineCore;
use crate::handle::spawn;
use crate::metrics::Metrics;
use mlahost_core::{BlockAllocator, Scheduler, SchedulerConfig};
use mlahost_engine::cpu::{AttentionMode, CpuBackend, CpuOptions};
use mlahost_engine::sampling::SamplingParams;
use mlahost_engine::{Backend, CacheGeometry, KvCacheDtype, LoadedModel, Logits, SeqChunk};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

/// A CPU backend whose third forward pass panics.
struct PanicsOnce {
    inner: CpuBackend,
    calls: Arc<AtomicUsize>,
}

impl Backend for PanicsOnce {
    fn forward(&mut self, batch: &[SeqChunk<'_>]) -> mlahost_engine::Result<Logits> {
        if self.calls.fetch_add(1, Relaxed) == 2 {
            panic!("injected backend panic");
        }
        self.inner.forward(batch)
    }

    fn cache_geometry(&self) -> CacheGeometry {
        self.inner.cache_geometry()
    }
}

fn request(prompt: Vec<u32>) -> EngineRequest {
    EngineRequest { ignore_eos: true, ..EngineRequest::new(prompt, SamplingParams { temperature: 0.0, ..Default::default() }, 6) }
}

/// Tokens until the end, and whether the request failed (with which cause).
fn drain(mut rx: crate::events::EngineEvents) -> (Vec<u32>, Option<FailureCause>) {
    let mut tokens = Vec::new();
    while let Some((_, e)) = rx.blocking_recv() {
        match e {
            Event::Token(t) => tokens.push(t.id),
            Event::Failed(f) => return (tokens, Some(f.cause)),
            Event::Finished { .. } | Event::Rejected(_) => break,
            _ => {}
        }
    }
    (tokens, None)
}

#[test]
fn a_panicking_step_fails_its_requests_and_the_loop_serves_on() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-v2-lite");
    let model = Arc::new(LoadedModel::load(&dir, None).expect("fixture"));
    let geometry = CacheGeometry { num_pages: 32, page_size: 16 };
    let cpu = model.cpu_backend(CpuOptions { geometry, attention: AttentionMode::Auto, kv_dtype: KvCacheDtype::F32 }).expect("backend");
    let calls = Arc::new(AtomicUsize::new(0));
    let builds = Arc::new(AtomicUsize::new(0));
    let counted = builds.clone();
    let make = Box::new(move || {
        counted.fetch_add(1, Relaxed);
        Scheduler::new(SchedulerConfig::default(), BlockAllocator::new(32, 16)?)
    });
    let metrics = Arc::new(Metrics::new("test", 0));
    let backend: Box<dyn Backend> = Box::new(PanicsOnce { inner: cpu, calls });
    let core = EngineCore::new(model, backend, make, 1024, metrics.clone()).expect("core");
    let (engine, join) = spawn(core).expect("loop");
    let (tokens, failed) = drain(engine.submit(vec![request(vec![1, 2, 3])]).1);
    assert_eq!(failed, Some(FailureCause::Engine), "the request in flight fails with an engine error");
    assert_eq!(tokens.len(), 2, "two steps ran before the panic");
    // The loop is alive, rebuilt once, and serves a fresh request whole.
    let (tokens, failed) = drain(engine.submit(vec![request(vec![1, 2, 3])]).1);
    assert_eq!((tokens.len(), failed), (6, None));
    assert_eq!(builds.load(Relaxed), 2);
    assert_eq!(metrics.engine_restarts.load(Relaxed), 1);
    assert!(metrics.engine_alive.load(Relaxed));
    // A sampler the core was not given fails that request alone, before it runs.
    let unknown = EngineRequest { sampler: Some(SamplerChoice { name: "absent".into(), config: String::new() }), ..request(vec![1, 2, 3]) };
    assert_eq!(drain(engine.submit(vec![unknown]).1), (Vec::new(), Some(FailureCause::Plugin)));
    assert_eq!(drain(engine.submit(vec![request(vec![4, 5])]).1).0.len(), 6);
    drop(engine);
    join.join().expect("the loop thread ends cleanly");
}
