//! The serving side of mlahost: the OpenAI-compatible HTTP API on tokio + hyper over one
//! engine core per replica (mlahost-runtime), tenants, limits, and Prometheus metrics.

pub mod api;
mod arrival;
mod builtin_plugins;
mod console;
mod cors;
mod chat_template;
mod default_model;
mod error;
mod http;
mod respond;
mod http_extra;
pub mod limits;
pub mod metrics;
pub mod metrics_vllm;
pub mod replicas;
mod server;
pub mod tenants;

pub use error::ServerError;
pub use api::Guard;
pub use limits::{HttpLimits, RequestLimits};
pub use server::{serve, LoadProgressHook, RouterChoice, ServeConfig};
