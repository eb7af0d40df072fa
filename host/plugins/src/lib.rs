//! mlahost's plugin runtime: WebAssembly components (wit/plugin.wit) run by wasmtime in a
//! sandbox — no ambient capabilities, a memory cap per instance and an epoch deadline on every
//! call. A trap or overrun drops the instance; the next call re-instantiates it from its
//! `InstancePre`, and the plugin's failure policy decides the failed call.

mod adapters;
mod bindings;
mod error;
mod hooks;
mod host;
mod logits;
mod plugin;
mod runtime;
mod sandbox;
mod spec;
mod stats;

pub use adapters::{PluginEvictionPolicy, PluginRouter};
pub use error::PluginError;
pub use hooks::{AdmissionInfo, AdmissionUsage, AdmissionVerdict, SampleDecision, SampleSeq, SamplerParams};
pub use host::PluginHost;
pub use plugin::{Plugin, PluginKind};
pub use spec::{FailurePolicy, PluginSpec, DEFAULT_MEMORY_BYTES};
pub use stats::PluginStats;
