//! Pure bookkeeping shared by every engine backend: latent-cache pages, the block tables that
//! map a sequence's token positions onto them, and the continuous-batching scheduler. No async runtime, GPU or wasm lives here, so the
//! scheduler and cache logic stay easy to test and reason about.

mod block_allocator;
mod block_table;
mod error;
mod scheduler;

pub use block_allocator::{BlockAllocator, PageId};
pub use block_table::BlockTable;
pub use error::CoreError;
pub use scheduler::{ScheduledChunk, Scheduler, SchedulerConfig, SchedulerStats, SeqId, SeqStatus, Sequence, StepPlan};
