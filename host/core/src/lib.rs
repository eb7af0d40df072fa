//! Pure bookkeeping shared by every engine backend: latent-cache pages, the block tables that
//! map a sequence's token positions onto them, the prefix cache over full pages, the
//! continuous-batching scheduler and the replica router. No async runtime, GPU or wasm lives here, so the
//! scheduler and cache logic stay easy to test and reason about.

mod block_allocator;
mod block_table;
mod error;
mod eviction;
mod histogram;
mod prefix_index;
mod prefix_key;
mod router;
mod scheduler;

pub use block_allocator::{BlockAllocator, PageId};
pub use block_table::BlockTable;
pub use error::CoreError;
pub use histogram::Histogram;
pub use eviction::{EvictionCandidate, EvictionDecision, EvictionPolicy, LruPolicy};
pub use prefix_index::PrefixIndex;
pub use prefix_key::{page_hash, page_hashes, salt_of, salt_of_parts, PromptHashes};
pub use router::{PrefixAwareRouter, ReplicaLoad, RoundRobinRouter, RouteDecision, RouteRequest, Router};
pub use scheduler::{ScheduledChunk, Scheduler, SchedulerConfig, SchedulerStats, SeqId, SeqStatus, Sequence, StepPlan};
