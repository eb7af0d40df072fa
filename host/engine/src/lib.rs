//! The mlahost engine: DeepSeek-V2/V3 (and Kimi-K2) checkpoints in the hub's format, their
//! tokenizer, and the MLA forward pass over a ragged batch and a paged latent cache.

pub mod attention_groups;
pub mod batch;
pub mod capacity;
pub mod checkpoint;
pub mod comm;
pub mod config;
pub mod cpu;
pub mod dummy_weights;
mod error;
pub mod kv_cache_dtype;
pub mod model;
pub mod parallel;
pub mod rendezvous;
pub mod rope;
pub mod logits_processors;
pub mod logprobs;
pub mod sampling;
pub mod sampling_params;
pub mod shapes;
pub mod shard;
pub mod step_bytes;
pub mod step_link;
pub mod tensor;
pub mod tokenizer;
mod token_bytes;
pub mod weights;

pub use batch::{AllowSet, Backend, CacheGeometry, DeviceSample, Logits, LogitsRequest, RoutingTrace, SampleRequest, SeqChunk, TokenRoute, WeightStorage};
pub use config::ModelConfig;
pub use error::{EngineError, Result};
pub use kv_cache_dtype::{KvCacheDtype, KvCacheDtypeArg};
pub use model::{LoadFormat, LoadedModel};
pub use token_bytes::TokenBytes;
pub use tokenizer::Tokenizer;
