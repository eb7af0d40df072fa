//! mlahost's engine runtime: one engine core per replica (scheduler, backend, sampling and
//! stop decisions behind `add` / `step` / `end`), the thread and channel handle the server
//! drives it through, the front end's text side of a request (`output`), and the inline
//! `generate` that the CLI, the tests and the GPU checks use.
//! Every way of running the model goes through `EngineCore`.

mod active;
pub mod backend;
pub mod core;
mod detokenizer;
#[cfg(test)]
mod device_sampling_tests;
#[cfg(test)]
mod emulated_device;
mod error;
pub mod events;
pub mod generate;
pub mod handle;
pub mod metrics;
pub mod output;
#[cfg(test)]
mod panic_tests;
mod plugin_step;
#[cfg(test)]
mod prompt_logprobs_tests;
mod request;
mod step_logits;

pub use backend::{BackendFactory, BackendOptions};
pub use crate::core::{EngineCore, SchedulerFactory, ServingCore};
pub use error::RuntimeError;
pub use generate::{generate, FinishReason as GenerateFinish, GenerateOutput, GenerateRequest};
pub use handle::{spawn, EngineHandle};
pub use events::{EngineEvents, EventSink};
pub use output::{ChoiceEvent, ChoiceText, TextOptions, TokenEvent};
pub use request::{EngineRequest, Event, Failure, FailureCause, FinishReason, PromptLogprob, SampledToken, SamplerChoice, Usage};
