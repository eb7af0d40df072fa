//! Compiling a component into a prepared instance of its world, and building live instances
//! from it: a fresh sandboxed store, instantiation and the plugin's `init`.

use crate::bindings::{admission::AdmissionPlugin, prefix_policy::PrefixPolicyPlugin, router::RouterPlugin, sampler::SamplerPlugin};
use crate::bindings::{admission::AdmissionPluginPre, prefix_policy::PrefixPolicyPluginPre, router::RouterPluginPre, sampler::SamplerPluginPre};
use crate::kind::PluginKind;
use crate::output::OutputLog;
use crate::runtime::{ticks, Runtime};
use crate::sandbox::Sandbox;
use crate::spec::PluginSpec;
use crate::PluginError;
use std::time::{Duration, SystemTime};
use wasmtime::component::Component;
use wasmtime::{Store, Trap};

/// `init` may take longer than a hook (a plugin may build tables from its config).
pub const INIT_DEADLINE: Duration = Duration::from_secs(2);

pub enum Pre {
    Sampler(SamplerPluginPre<Sandbox>),
    Router(RouterPluginPre<Sandbox>),
    PrefixPolicy(PrefixPolicyPluginPre<Sandbox>),
    Admission(AdmissionPluginPre<Sandbox>),
}

pub enum Bound {
    Sampler(SamplerPlugin),
    Router(RouterPlugin),
    PrefixPolicy(PrefixPolicyPlugin),
    Admission(AdmissionPlugin),
}

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
    let component = Component::new(&runtime.engine, &bytes).map_err(|e| load_err(spec, format!("not a valid component: {e:#}")))?;
    let exports: Vec<String> = component.component_type().exports(&runtime.engine).map(|(name, _)| name.to_string()).collect();
    let kinds: Vec<PluginKind> = PluginKind::ALL.into_iter().filter(|k| exports.iter().any(|e| e == k.export_name())).collect();
    let kind = match kinds.as_slice() {
        [k] => *k,
        [] => {
            return Err(load_err(
                spec,
                format!("the component matches no mlahost plugin world (it exports {exports:?}; expected one of mlahost:plugin/{{sampler,router,prefix-policy,admission}}@0.1.0)"),
            ))
        }
        _ => return Err(load_err(spec, format!("the component exports several plugin kinds {exports:?}; one per component"))),
    };
    let pre = runtime
        .linker
        .instantiate_pre(&component)
        .map_err(|e| load_err(spec, format!("its imports cannot be satisfied (only WASI and mlahost:plugin are provided): {e:#}")))?;
    let typed = |e: wasmtime::Error| load_err(spec, format!("its exports do not match the {} world: {e:#}", kind.as_str()));
    let pre = match kind {
        PluginKind::Sampler => Pre::Sampler(SamplerPluginPre::new(pre).map_err(typed)?),
        PluginKind::Router => Pre::Router(RouterPluginPre::new(pre).map_err(typed)?),
        PluginKind::PrefixPolicy => Pre::PrefixPolicy(PrefixPolicyPluginPre::new(pre).map_err(typed)?),
        PluginKind::Admission => Pre::Admission(AdmissionPluginPre::new(pre).map_err(typed)?),
    };
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
pub fn build(engine: &wasmtime::Engine, pre: &Pre, spec: &PluginSpec, output: &OutputLog) -> Result<Live, PluginError> {
    let mut store = Store::new(engine, Sandbox::new(spec.memory_bytes));
    store.limiter(|s| &mut s.limits);
    store.set_epoch_deadline(ticks(INIT_DEADLINE));
    store.epoch_deadline_trap();
    let trap = |e: wasmtime::Error| classify(&spec.name, "instantiate", e, INIT_DEADLINE);
    let bound = match pre {
        Pre::Sampler(p) => Bound::Sampler(p.instantiate(&mut store).map_err(trap)?),
        Pre::Router(p) => Bound::Router(p.instantiate(&mut store).map_err(trap)?),
        Pre::PrefixPolicy(p) => Bound::PrefixPolicy(p.instantiate(&mut store).map_err(trap)?),
        Pre::Admission(p) => Bound::Admission(p.instantiate(&mut store).map_err(trap)?),
    };
    let config = spec.config.as_str();
    let init = match &bound {
        Bound::Sampler(b) => b.mlahost_plugin_sampler().call_init(&mut store, config),
        Bound::Router(b) => b.mlahost_plugin_router().call_init(&mut store, config),
        Bound::PrefixPolicy(b) => b.mlahost_plugin_prefix_policy().call_init(&mut store, config),
        Bound::Admission(b) => b.mlahost_plugin_admission().call_init(&mut store, config),
    };
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
