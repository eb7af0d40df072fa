//! # mlahost-sdk
//!
//! Write [mlahost](https://github.com/) plugins in plain Rust. A plugin is a WebAssembly
//! component that the server loads with `mlahost serve --plugin path.wasm[:CONFIG]` and calls in
//! a sandbox (no files, sockets, environment or clocks; a memory cap; a deadline on every call).
//! There are four kinds, each a trait to implement and a macro to export it:
//!
//! | kind | trait | export macro | called |
//! | --- | --- | --- | --- |
//! | sampler | [`Sampler`] | [`export_sampler!`] | once per decode step, with the sequences that chose it |
//! | router | [`Router`] | [`export_router!`] | once per request, to pick an engine replica |
//! | prefix policy | [`PrefixPolicy`] | [`export_prefix_policy!`] | when prefix-cache pages must be evicted |
//! | admission | [`Admission`] | [`export_admission!`] | per request on arrival, and when it completes |
//!
//! Every kind has `init(config) -> Result<Self, String>`: the host calls it once per instance,
//! before any hook, with the text given after the plugin path (`--plugin p.wasm:'{"k": 1}'`, or
//! `:@file.json` for a file's contents; `""` when none). Its value is the plugin's state for all
//! later calls; an `Err` refuses the plugin with that message. A panic traps: the host drops the
//! instance, makes a fresh one (calling `init` again) and applies the plugin's failure policy.
//!
//! ## A complete plugin
//!
//! `Cargo.toml`:
//!
//! ```toml
//! [package]
//! name = "least_loaded"
//! version = "0.1.0"
//! edition = "2021"
//!
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! mlahost-sdk = { path = "../sdk" }
//! ```
//!
//! `src/lib.rs`:
//!
//! ```
//! use mlahost_sdk::{ReplicaState, RequestSummary, Route, Router};
//!
//! /// Sends each request to the replica with the least work, unless all have more than `max`.
//! struct LeastLoaded {
//!     max: u32,
//! }
//!
//! impl Router for LeastLoaded {
//!     fn init(config: &str) -> Result<Self, String> {
//!         // The config is the text after the path: here a plain number, default 64.
//!         let max = match config.trim() {
//!             "" => 64,
//!             s => s.parse().map_err(|e| format!("least_loaded: bad max {s:?}: {e}"))?,
//!         };
//!         Ok(LeastLoaded { max })
//!     }
//!
//!     fn route(&mut self, _request: &RequestSummary, replicas: &[ReplicaState]) -> Route {
//!         let best = (0..replicas.len()).min_by_key(|&i| (replicas[i].load(), i));
//!         match best {
//!             Some(i) if replicas[i].load() <= self.max => Route::Replica(i as u32),
//!             _ => Route::Reject(format!("every replica has more than {} requests", self.max)),
//!         }
//!     }
//! }
//!
//! mlahost_sdk::export_router!(LeastLoaded);
//! ```
//!
//! Build and load it:
//!
//! ```sh
//! rustup target add wasm32-wasip2
//! cargo build --target wasm32-wasip2 --release
//! mlahost serve --model ./model --plugin target/wasm32-wasip2/release/least_loaded.wasm:16
//! ```
//!
//! Keep the policy in plain functions (or test the trait impl directly: the types are plain
//! structs, and [`SequenceView::local`] fakes a sequence's logits), and `cargo test` runs the
//! tests natively.

#![warn(missing_docs)]

// The generated bindings name the runtime as `::mlahost_sdk::__private::wit_bindgen::rt`, which
// must resolve inside this crate too.
extern crate self as mlahost_sdk;

mod bindings;
mod state;

pub mod admission;
pub mod prefix_policy;
pub mod router;
pub mod sampler;

pub use admission::{Admission, Rejection, RequestInfo, Usage, Verdict};
pub use prefix_policy::{Candidate, EvictionPlan, PrefixPolicy};
pub use router::{ReplicaState, RequestSummary, Route, Router};
pub use sampler::{Decision, Params, Sampler, SequenceView, TokenBias, TokenLogit, Vocabulary, BAN};

/// What the export macros expand to. Not public API: no stability promise.
#[doc(hidden)]
pub mod __private {
    pub use crate::admission::glue::AdmissionExport;
    pub use crate::bindings::admission as admission_bindings;
    pub use crate::bindings::prefix_policy as prefix_policy_bindings;
    pub use crate::bindings::router as router_bindings;
    pub use crate::bindings::sampler as sampler_bindings;
    pub use crate::prefix_policy::glue::PrefixPolicyExport;
    pub use crate::router::glue::RouterExport;
    pub use crate::sampler::glue::SamplerExport;
    pub use crate::state::{State, StateKey};
    pub use wit_bindgen;
}
