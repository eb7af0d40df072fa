//! One loaded plugin: its current version (compiled component, prepared instance of its world
//! and a pool of initialized instances) and its statistics. A call takes an instance from the
//! pool, runs one hook under the deadline and gives it back; a trap or overrun drops it (a
//! standby takes its place) and the plugin's failure policy decides the failed call.

use crate::instance::{build, classify, compile, drain_output, file_stamp, load_err, Bound, Live, Stamp};
use crate::kind::PluginKind;
use crate::output::OutputLog;
use crate::pool::{spawn_refiller, Pool};
use crate::runtime::{ticks, Runtime};
use crate::sandbox::Sandbox;
use crate::spec::PluginSpec;
use crate::stats::PluginStats;
use crate::PluginError;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::Store;

struct Version {
    pool: Arc<Pool>,
    stamp: Stamp,
}

pub struct Plugin {
    pub spec: PluginSpec,
    pub kind: PluginKind,
    runtime: Arc<Runtime>,
    current: Mutex<Arc<Version>>,
    pub stats: Arc<PluginStats>,
    output: Arc<OutputLog>,
}

impl Plugin {
    /// Compiles the component, finds its kind from its exports, and runs `init` on a first
    /// instance, so a plugin that cannot start is refused here with the reason. More
    /// instances are prepared in the background.
    pub fn load(runtime: Arc<Runtime>, spec: PluginSpec) -> Result<Self, PluginError> {
        let stats = Arc::new(PluginStats::default());
        let output = Arc::new(OutputLog::default());
        let (kind, version) = start_version(&runtime, &spec, &stats, &output)?;
        Ok(Self { spec, kind, runtime, current: Mutex::new(Arc::new(version)), stats, output })
    }

    fn version(&self) -> Arc<Version> {
        self.current.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn deadline(&self) -> Duration {
        self.spec.deadline.unwrap_or(self.kind.default_deadline())
    }

    /// Instances serving calls and ready standbys.
    pub fn instances(&self) -> (usize, usize) {
        self.version().pool.counts()
    }

    /// Runs one hook on a pooled instance under the plugin's deadline. On a trap, overrun or
    /// host-side panic the instance is dropped; a standby serves the next call.
    pub fn call<R>(&self, hook: &'static str, f: impl FnOnce(&mut Store<Sandbox>, &Bound) -> wasmtime::Result<R>) -> Result<R, PluginError> {
        self.call_in_lane(None, hook, f)
    }

    /// As `call`, preferring the instance that served `lane` last (`pool.rs`).
    pub fn call_in_lane<R>(&self, lane: Option<usize>, hook: &'static str, f: impl FnOnce(&mut Store<Sandbox>, &Bound) -> wasmtime::Result<R>) -> Result<R, PluginError> {
        // WASI's synchronous host calls run on tokio: on a runtime worker thread they must
        // first move off the async scheduler.
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| self.call_here(lane, hook, f))
            }
            _ => self.call_here(lane, hook, f),
        }
    }

    /// Instances this plugin may keep serving at once.
    pub fn max_instances(&self) -> usize {
        self.spec.instances.unwrap_or(self.kind.default_instances())
    }

    fn call_here<R>(&self, lane: Option<usize>, hook: &'static str, f: impl FnOnce(&mut Store<Sandbox>, &Bound) -> wasmtime::Result<R>) -> Result<R, PluginError> {
        let version = self.version();
        let deadline = self.deadline();
        let Some(mut live) = version.pool.take(lane, deadline) else {
            let e = PluginError::Busy { plugin: self.spec.name.clone(), hook, waited_ms: deadline.as_millis() as u64 };
            self.count_failure(&e);
            return Err(e);
        };
        live.store.set_epoch_deadline(ticks(deadline));
        let started = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| f(&mut live.store, &live.bound)));
        self.stats.observe(started.elapsed().as_secs_f64());
        drain_output(&mut live.store, &self.spec.name, &self.output);
        let err = match result {
            Ok(Ok(r)) => {
                self.recycle(&version, live, lane);
                return Ok(r);
            }
            Ok(Err(e)) => classify(&self.spec.name, hook, e, deadline),
            Err(_) => PluginError::Trap { plugin: self.spec.name.clone(), hook, message: "the host panicked while serving the call".into() },
        };
        drop(live);
        version.pool.discard();
        self.count_failure(&err);
        tracing::warn!(plugin = %self.spec.name, hook, error = %err, "plugin call failed; instance dropped");
        Err(err)
    }

    /// Returns a healthy instance to the pool, or retires it once its output buffer is nearly
    /// full (a standby replaces it).
    fn recycle(&self, version: &Version, live: Live, lane: Option<usize>) {
        if live.store.data().output_nearly_full() {
            drop(live);
            version.pool.discard();
        } else {
            version.pool.give_back(live, lane);
        }
    }

    fn count_failure(&self, e: &PluginError) {
        match e {
            PluginError::Timeout { .. } => self.stats.timeouts.fetch_add(1, Relaxed),
            PluginError::Busy { .. } => self.stats.busy.fetch_add(1, Relaxed),
            _ => self.stats.traps.fetch_add(1, Relaxed),
        };
    }

    /// Bytes of plugin output dropped by the log's limits.
    pub fn dropped_output_bytes(&self) -> u64 {
        self.output.dropped_bytes.load(Relaxed)
    }

    /// Recompiles from disk if the file changed (or `force`), checks the kind is the same and
    /// that the new version initializes, then swaps it in. Calls in flight finish on the old
    /// version; the old version stays when anything fails.
    pub fn reload(&self, force: bool) -> Result<bool, PluginError> {
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| self.reload_here(force))
            }
            _ => self.reload_here(force),
        }
    }

    fn reload_here(&self, force: bool) -> Result<bool, PluginError> {
        if !force && file_stamp(&self.spec.path) == self.version().stamp {
            return Ok(false);
        }
        let (kind, version) = start_version(&self.runtime, &self.spec, &self.stats, &self.output)?;
        if kind != self.kind {
            return Err(load_err(&self.spec, format!("the new version is a {} plugin, the loaded one a {}", kind.as_str(), self.kind.as_str())));
        }
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(version);
        self.stats.reloads.fetch_add(1, Relaxed);
        tracing::info!(plugin = %self.spec.name, "plugin reloaded");
        Ok(true)
    }
}

/// Compiles the file, initializes a first instance (refusing the version if it cannot start)
/// and starts the background thread that prepares the others.
fn start_version(runtime: &Arc<Runtime>, spec: &PluginSpec, stats: &Arc<PluginStats>, output: &Arc<OutputLog>) -> Result<(PluginKind, Version), PluginError> {
    let (kind, pre, stamp) = compile(runtime, spec)?;
    let started = Instant::now();
    let first = build(&runtime.engine, &pre, spec, &runtime.vocab, output)?;
    stats.init_seconds.observe(started.elapsed().as_secs_f64());
    let pool = Arc::new(Pool::new(spec.instances.unwrap_or(kind.default_instances()), first));
    let (engine, vocab, pre, spec2, stats, output) = (runtime.engine.clone(), runtime.vocab.clone(), Arc::new(pre), spec.clone(), stats.clone(), output.clone());
    let make = move || -> Result<Live, PluginError> {
        let started = Instant::now();
        let built = build(&engine, &pre, &spec2, &vocab, &output);
        stats.init_seconds.observe(started.elapsed().as_secs_f64());
        if built.is_err() {
            stats.traps.fetch_add(1, Relaxed);
        }
        built
    };
    spawn_refiller(&spec.name, Arc::downgrade(&pool), make).map_err(|e| load_err(spec, format!("cannot start its instance thread: {e}")))?;
    Ok((kind, Version { pool, stamp }))
}
