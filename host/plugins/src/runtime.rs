//! The wasmtime engine shared by every plugin: component model on, epoch interruption for
//! per-call deadlines (a background thread ticks the epoch), one linker with WASI (fenced by
//! each store's empty context) and the host side of `logits-access`.

use crate::bindings::{v1, v2};
use crate::vocab::Vocabulary;
use crate::sandbox::Sandbox;
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine};

/// One epoch tick; deadlines are counted in ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

pub struct Runtime {
    pub engine: Engine,
    pub linker: Linker<Sandbox>,
    /// What sampler plugins receive at `init`.
    pub vocab: Arc<Vocabulary>,
}

impl Runtime {
    pub fn new(vocab: Vocabulary) -> Result<Arc<Self>, String> {
        let mut config = Config::new();
        config.wasm_component_model(true).epoch_interruption(true).max_wasm_stack(1 << 20);
        let engine = Engine::new(&config).map_err(|e| format!("wasmtime engine: {e}"))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| format!("WASI linker: {e}"))?;
        crate::no_wait::shadow_monotonic_clock(&mut linker).map_err(|e| format!("WASI clock: {e}"))?;
        v2::sampler::SamplerPlugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s).map_err(|e| format!("logits linker: {e}"))?;
        v1::sampler::SamplerPlugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s).map_err(|e| format!("logits 0.1.0 linker: {e}"))?;
        let runtime = Arc::new(Self { engine, linker, vocab: Arc::new(vocab) });
        // The ticker holds only a weak reference: it stops when the runtime is dropped.
        let weak = Arc::downgrade(&runtime);
        std::thread::Builder::new()
            .name("plugin-epoch".into())
            .spawn(move || {
                while let Some(rt) = weak.upgrade() {
                    rt.engine.increment_epoch();
                    drop(rt);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .map_err(|e| format!("epoch thread: {e}"))?;
        Ok(runtime)
    }
}

pub fn ticks(d: Duration) -> u64 {
    (d.as_micros() / EPOCH_TICK.as_micros()).max(1) as u64 + 1
}
