//! Pure bookkeeping shared by every engine backend: latent-cache pages and the block tables that
//! map a sequence's token positions onto them. No async runtime, GPU or wasm lives here, so the
//! scheduler and cache logic stay easy to test and reason about.

mod block_allocator;
mod block_table;
mod error;

pub use block_allocator::{BlockAllocator, PageId};
pub use block_table::BlockTable;
pub use error::CoreError;
