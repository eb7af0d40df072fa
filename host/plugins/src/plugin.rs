//! One loaded plugin: its compiled component, an `InstancePre` for its world, and at most one
//! live instance. A call that traps or overruns its deadline drops the instance; the next call
//! builds a fresh one from the `InstancePre` (and runs `init` again).

use crate::bindings::{admission::AdmissionPluginPre, prefix_policy::PrefixPolicyPluginPre, router::RouterPluginPre, sampler::SamplerPluginPre};
use crate::bindings::{admission::AdmissionPlugin, prefix_policy::PrefixPolicyPlugin, router::RouterPlugin, sampler::SamplerPlugin};
use crate::runtime::{ticks, Runtime};
use crate::sandbox::Sandbox;
use crate::spec::PluginSpec;
use crate::stats::PluginStats;
use crate::PluginError;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::component::Component;
use wasmtime::{Store, Trap};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PluginKind {
    Sampler,
    Router,
    PrefixPolicy,
    Admission,
}

impl PluginKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sampler => "sampler",
            Self::Router => "router",
            Self::PrefixPolicy => "prefix-policy",
            Self::Admission => "admission",
        }
    }

    /// Each hook's default deadline: what it may cost per call.
    pub fn default_deadline(self) -> Duration {
        match self {
            Self::Sampler => Duration::from_millis(50),
            Self::Router | Self::PrefixPolicy => Duration::from_millis(20),
            Self::Admission => Duration::from_millis(20),
        }
    }

    /// The exported interface that identifies the kind.
    fn export_name(self) -> &'static str {
        match self {
            Self::Sampler => "mlahost:plugin/sampler@0.1.0",
            Self::Router => "mlahost:plugin/router@0.1.0",
            Self::PrefixPolicy => "mlahost:plugin/prefix-policy@0.1.0",
            Self::Admission => "mlahost:plugin/admission@0.1.0",
        }
    }

    const ALL: [PluginKind; 4] = [Self::Sampler, Self::Router, Self::PrefixPolicy, Self::Admission];
}

/// `init` may take longer than a hook (a plugin may build tables from its config).
const INIT_DEADLINE: Duration = Duration::from_secs(2);

enum Pre {
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

struct Live {
    store: Store<Sandbox>,
    bound: Bound,
}

struct Version {
    pre: Pre,
    live: Option<Live>,
    /// File modification time and length when compiled (for hot reload).
    stamp: (Option<std::time::SystemTime>, u64),
}

pub struct Plugin {
    pub spec: PluginSpec,
    pub kind: PluginKind,
    runtime: Arc<Runtime>,
    version: Mutex<Version>,
    pub stats: PluginStats,
}

fn load_err(spec: &PluginSpec, message: impl Into<String>) -> PluginError {
    PluginError::Load { path: spec.path.clone(), message: message.into() }
}

fn file_stamp(path: &std::path::Path) -> (Option<std::time::SystemTime>, u64) {
    std::fs::metadata(path).map_or((None, 0), |m| (m.modified().ok(), m.len()))
}

impl Plugin {
    /// Compiles the component, finds its kind from its exports, prepares its instance and
    /// runs `init` once, so a plugin that cannot start is refused here with the reason.
    pub fn load(runtime: Arc<Runtime>, spec: PluginSpec) -> Result<Self, PluginError> {
        let (kind, version) = Self::compile(&runtime, &spec)?;
        let plugin = Self { spec, kind, runtime, version: Mutex::new(version), stats: PluginStats::default() };
        plugin.ensure_live(&mut plugin.lock())?;
        Ok(plugin)
    }

    fn compile(runtime: &Runtime, spec: &PluginSpec) -> Result<(PluginKind, Version), PluginError> {
        let stamp = file_stamp(&spec.path);
        let bytes = std::fs::read(&spec.path).map_err(|e| load_err(spec, e.to_string()))?;
        if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
            return Err(load_err(spec, "not a WebAssembly file"));
        }
        if bytes[4..8] == [1, 0, 0, 0] {
            return Err(load_err(spec, "a core WebAssembly module, not a component: build it for wasm32-wasip2"));
        }
        let component = Component::new(&runtime.engine, &bytes).map_err(|e| load_err(spec, format!("not a valid component: {e:#}")))?;
        let exports: Vec<String> =
            component.component_type().exports(&runtime.engine).map(|(name, _)| name.to_string()).collect();
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
        Ok((kind, Version { pre, live: None, stamp }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Version> {
        self.version.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn deadline(&self) -> Duration {
        self.spec.deadline.unwrap_or(self.kind.default_deadline())
    }

    /// Builds a fresh instance and runs its `init` when there is none.
    fn ensure_live(&self, v: &mut Version) -> Result<(), PluginError> {
        if v.live.as_ref().is_some_and(|l| !l.store.data().output_nearly_full()) {
            return Ok(());
        }
        v.live = None;
        let mut store = Store::new(&self.runtime.engine, Sandbox::new(self.spec.memory_bytes));
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(ticks(INIT_DEADLINE));
        store.epoch_deadline_trap();
        let trap = |e: wasmtime::Error| self.classify("instantiate", e, INIT_DEADLINE);
        let bound = match &v.pre {
            Pre::Sampler(p) => Bound::Sampler(p.instantiate(&mut store).map_err(trap)?),
            Pre::Router(p) => Bound::Router(p.instantiate(&mut store).map_err(trap)?),
            Pre::PrefixPolicy(p) => Bound::PrefixPolicy(p.instantiate(&mut store).map_err(trap)?),
            Pre::Admission(p) => Bound::Admission(p.instantiate(&mut store).map_err(trap)?),
        };
        let config = self.spec.config.as_str();
        let init = match &bound {
            Bound::Sampler(b) => b.mlahost_plugin_sampler().call_init(&mut store, config),
            Bound::Router(b) => b.mlahost_plugin_router().call_init(&mut store, config),
            Bound::PrefixPolicy(b) => b.mlahost_plugin_prefix_policy().call_init(&mut store, config),
            Bound::Admission(b) => b.mlahost_plugin_admission().call_init(&mut store, config),
        };
        self.log_output(&mut store);
        match init {
            Ok(Ok(())) => {
                v.live = Some(Live { store, bound });
                Ok(())
            }
            Ok(Err(message)) => Err(PluginError::Init { plugin: self.spec.name.clone(), message: clip(&message) }),
            Err(e) => Err(match self.classify("init", e, INIT_DEADLINE) {
                PluginError::Trap { message, .. } => PluginError::Init { plugin: self.spec.name.clone(), message: format!("trapped: {message}") },
                other => other,
            }),
        }
    }

    /// Runs one hook on the live instance under the plugin's deadline. On a trap or overrun
    /// the instance is dropped (the next call starts a fresh one).
    pub fn call<R>(
        &self,
        hook: &'static str,
        f: impl FnOnce(&mut Store<Sandbox>, &Bound) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        // WASI's synchronous host calls block on tokio: on a runtime worker thread they must
        // first move off the async scheduler.
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| self.call_here(hook, f))
            }
            _ => self.call_here(hook, f),
        }
    }

    fn call_here<R>(
        &self,
        hook: &'static str,
        f: impl FnOnce(&mut Store<Sandbox>, &Bound) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        let mut v = self.lock();
        if let Err(e) = self.ensure_live(&mut v) {
            self.count_failure(&e);
            return Err(e);
        }
        let live = v.live.as_mut().expect("ensure_live leaves a live instance");
        let deadline = self.deadline();
        live.store.set_epoch_deadline(ticks(deadline));
        let started = Instant::now();
        let result = f(&mut live.store, &live.bound);
        self.stats.observe(started.elapsed().as_secs_f64());
        self.log_output(&mut live.store);
        result.map_err(|e| {
            v.live = None;
            let err = self.classify(hook, e, deadline);
            self.count_failure(&err);
            tracing::warn!(plugin = %self.spec.name, hook, error = %err, "plugin call failed; instance dropped");
            err
        })
    }

    fn classify(&self, hook: &'static str, e: wasmtime::Error, deadline: Duration) -> PluginError {
        let plugin = self.spec.name.clone();
        match e.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => PluginError::Timeout { plugin, hook, deadline_ms: deadline.as_millis() as u64 },
            _ => PluginError::Trap { plugin, hook, message: clip(&format!("{e:#}")) },
        }
    }

    fn count_failure(&self, e: &PluginError) {
        use std::sync::atomic::Ordering::Relaxed;
        match e {
            PluginError::Timeout { .. } => self.stats.timeouts.fetch_add(1, Relaxed),
            _ => self.stats.traps.fetch_add(1, Relaxed),
        };
    }

    fn log_output(&self, store: &mut Store<Sandbox>) {
        let (out, err) = store.data_mut().drain_output();
        for line in out.lines().filter(|l| !l.is_empty()) {
            tracing::info!(plugin = %self.spec.name, stream = "stdout", "{line}");
        }
        for line in err.lines().filter(|l| !l.is_empty()) {
            tracing::warn!(plugin = %self.spec.name, stream = "stderr", "{line}");
        }
    }

    /// Recompiles from disk if the file changed (or `force`), checks the kind is the same and
    /// that the new version initializes, then swaps it in. Calls in flight finish first (they
    /// hold the lock); the old version stays when anything fails.
    pub fn reload(&self, force: bool) -> Result<bool, PluginError> {
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| self.reload_here(force))
            }
            _ => self.reload_here(force),
        }
    }

    fn reload_here(&self, force: bool) -> Result<bool, PluginError> {
        let stamp = file_stamp(&self.spec.path);
        if !force && stamp == self.lock().stamp {
            return Ok(false);
        }
        let (kind, mut version) = Self::compile(&self.runtime, &self.spec)?;
        if kind != self.kind {
            return Err(load_err(&self.spec, format!("the new version is a {} plugin, the loaded one a {}", kind.as_str(), self.kind.as_str())));
        }
        self.ensure_live(&mut version)?;
        *self.lock() = version;
        self.stats.reloads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(plugin = %self.spec.name, "plugin reloaded");
        Ok(true)
    }
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
