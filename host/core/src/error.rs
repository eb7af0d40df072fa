use thiserror::Error;

/// Errors from the cache bookkeeping.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CoreError {
    #[error("out of KV cache pages: need {needed}, {free} free of {total}")]
    OutOfPages { needed: usize, free: usize, total: usize },
    #[error("page {0} is not allocated")]
    PageNotAllocated(PageId),
    #[error("invalid cache geometry: {0}")]
    InvalidGeometry(String),
}

use crate::PageId;
