use thiserror::Error;

/// Errors from the cache bookkeeping.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CoreError {
    #[error("out of KV cache pages: need {needed}, {free} free of {total}")]
    OutOfPages { needed: usize, free: usize, total: usize },
    #[error("page {0} is not allocated")]
    PageNotAllocated(PageId),
    #[error("the waiting queue is full ({limit} requests)")]
    QueueFull { limit: usize },
    #[error("sequence {0} has no tokens")]
    EmptySequence(SeqId),
    #[error("sequence {0} is already scheduled")]
    DuplicateSequence(SeqId),
    #[error("invalid cache geometry: {0}")]
    InvalidGeometry(String),
}

use crate::{PageId, SeqId};
