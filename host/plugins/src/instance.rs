//! Compiling a component into a prepared instance of its world, and building live instances
//! from it: a fresh sandboxed store, instantiation and the plugin's `init`.

pub use crate::kind::{Bound, Pre};
use crate::kind::{PluginKind, World};
use crate::output::OutputLog;
use crate::runtime::{ticks, Runtime};
use crate::sandbox::Sandbox;
use crate::spec::PluginSpec;
use crate::vocab::Vocabulary;
use crate::PluginError;
use std::time::{Duration, SystemTime};
use wasmtime::{Store, Trap};

/// `init` may take longer than a hook (a plugin may build tables from its config, or index
/// the vocabulary).
pub const INIT_DEADLINE: Duration = Duration::from_secs(10);

/// One initialized instance and its store.
pub struct Live {
    pub store: Store<Sandbox>,
    pub bound: Bound,
}

/// File modification time and length (to notice a new version for hot reload).
pub type Stamp = (Option<SystemTime>, u64);

pub fn file_stamp(path: &std::path::Path) -> Stamp {
    std::fs::metadata(path).map_or((None, 0), |m| (m.modified().ok(), m.len()))
}

pub fn load_err(spec: &PluginSpec, message: impl Into<String>) -> PluginError {
    PluginError::Load { path: spec.path.clone(), message: message.into() }
}

/// Compiles the file and finds its kind from its exports.
pub fn compile(runtime: &Runtime, spec: &PluginSpec) -> Result<(PluginKind, Pre, Stamp), PluginError> {
    let stamp = file_stamp(&spec.path);
    let bytes = std::fs::read(&spec.path).map_err(|e| load_err(spec, e.to_string()))?;
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(load_err(spec, "not a WebAssembly file"));
    }
    if bytes[4..8] == [1, 0, 0, 0] {
        return Err(load_err(spec, "a core WebAssembly module, not a component: build it for wasm32-wasip2"));
    }
    let component = crate::compiled_cache::load_or_compile(&runtime.engine, &bytes).map_err(|e| load_err(spec, format!("not a valid component: {e:#}")))?;
    let exports: Vec<String> = component.component_type().exports(&runtime.engine).map(|(name, _)| name.to_string()).collect();
    let worlds: Vec<World> = World::ALL.iter().copied().filter(|w| exports.iter().any(|e| e == w.export_name())).collect();
    let world = match worlds.as_slice() {
        [w] => *w,
        [] => {
            let known: Vec<&str> = World::ALL.iter().map(|w| w.export_name()).collect();
            return Err(load_err(spec, format!("the component matches no mlahost plugin world (it exports {exports:?}; expected one of {known:?})")));
        }
        _ => return Err(load_err(spec, format!("the component exports several plugin kinds {exports:?}; one per component"))),
    };
    let kind = world.kind();
    let pre = runtime
        .linker
        .instantiate_pre(&component)
        .map_err(|e| load_err(spec, format!("its imports cannot be satisfied (only WASI and mlahost:plugin are provided): {e:#}")))?;
    let pre = Pre::new(world, pre).map_err(|e| load_err(spec, format!("its exports do not match the {} world: {e:#}", world.export_name())))?;
    Ok((kind, pre, stamp))
}

/// Tells a deadline overrun from any other trap.
pub fn classify(plugin: &str, hook: &'static str, e: wasmtime::Error, deadline: Duration) -> PluginError {
    let plugin = plugin.to_string();
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => PluginError::Timeout { plugin, hook, deadline_ms: deadline.as_millis() as u64 },
        _ => PluginError::Trap { plugin, hook, message: clip(&format!("{e:#}")) },
    }
}

/// A fresh instance with its `init` run under the init deadline.
pub fn build(engine: &wasmtime::Engine, pre: &Pre, spec: &PluginSpec, vocab: &Vocabulary, output: &OutputLog) -> Result<Live, PluginError> {
    let mut store = Store::new(engine, Sandbox::new(spec.memory_bytes));
    store.limiter(|s| &mut s.limits);
    store.set_epoch_deadline(ticks(INIT_DEADLINE));
    store.epoch_deadline_trap();
    let trap = |e: wasmtime::Error| classify(&spec.name, "instantiate", e, INIT_DEADLINE);
    let bound = pre.instantiate(&mut store).map_err(trap)?;
    let init = bound.init(&mut store, spec.config.as_str(), vocab);
    drain_output(&mut store, &spec.name, output);
    match init {
        Ok(Ok(())) => Ok(Live { store, bound }),
        Ok(Err(message)) => Err(PluginError::Init { plugin: spec.name.clone(), message: clip(&message) }),
        Err(e) => Err(match classify(&spec.name, "init", e, INIT_DEADLINE) {
            PluginError::Trap { message, .. } => PluginError::Init { plugin: spec.name.clone(), message: format!("trapped: {message}") },
            other => other,
        }),
    }
}

pub fn drain_output(store: &mut Store<Sandbox>, plugin: &str, output: &OutputLog) {
    let (out, err) = store.data_mut().drain_output();
    output.log(plugin, &out, &err);
}

/// Messages from plugins are bounded before they reach logs or responses.
pub fn clip(s: &str) -> String {
    const MAX: usize = 1024;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &s[..end], s.len())
}
