//! mlahost's plugin runtime: WebAssembly components (wit/plugin.wit) run by wasmtime in a
//! sandbox — no ambient capabilities, no timers, a memory cap per instance and an epoch
//! deadline on every call. Each plugin keeps a small pool of initialized instances, refilled
//! in the background; a trap or overrun drops the instance, a standby takes over, and the
//! plugin's failure policy decides the failed call. Every value a plugin returns is checked
//! before the host uses it.

mod adapters;
mod bindings;
mod compiled_cache;
mod error;
mod hooks;
mod hooks_sampler;
mod host;
mod instance;
mod kind;
mod logits;
mod logits_row;
mod no_wait;
mod output;
mod plugin;
mod pool;
mod runtime;
mod sandbox;
mod spec;
mod stats;
mod vocab;

pub use adapters::{PluginEvictionPolicy, PluginRouter};
pub use error::PluginError;
pub use hooks::{AdmissionInfo, AdmissionUsage, AdmissionVerdict};
pub use hooks_sampler::{SampleDecision, SampleSeq, SamplerParams};
pub use host::PluginHost;
pub use kind::PluginKind;
pub use plugin::Plugin;
pub use spec::{FailurePolicy, PluginSpec, DEFAULT_MEMORY_BYTES, MAX_INSTANCES};
pub use stats::PluginStats;
pub use vocab::Vocabulary;
