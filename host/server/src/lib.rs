//! The serving side of mlahost: the engine loop that owns a replica's scheduler and backend,
//! the OpenAI-compatible HTTP API on tokio + hyper, and Prometheus metrics.

pub mod api;
mod arrival;
mod console;
mod cors;
mod chat_template;
mod default_model;
pub mod engine_loop;
mod error;
mod http;
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
