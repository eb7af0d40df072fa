//! One launcher per kernel: each checks shapes and sizes against the buffers it is given and
//! returns an error instead of launching out of bounds.

pub mod absorb;
pub mod decode;
mod decode_kernel;
pub mod fp8;
pub mod layers;
pub mod moe;
pub mod moe_router;
pub mod sampling;
pub mod stream;

use crate::error::{CudaError, Result};

/// A device tensor view: pointer plus the number of bytes behind it (for bounds checks).
#[derive(Debug, Clone, Copy)]
pub struct View {
    pub ptr: u64,
    pub bytes: usize,
}

impl View {
    pub fn of(buf: &crate::DeviceBuffer) -> Self {
        Self { ptr: buf.ptr(), bytes: buf.bytes() }
    }

    pub const NULL: View = View { ptr: 0, bytes: 0 };

    /// A view starting `offset` bytes in.
    pub fn at(self, offset: usize) -> Self {
        Self { ptr: self.ptr + offset as u64, bytes: self.bytes.saturating_sub(offset) }
    }

    pub(crate) fn need(self, kernel: &'static str, what: &str, bytes: usize) -> Result<u64> {
        if self.bytes < bytes {
            return Err(CudaError::launch(kernel, format!("{what} holds {} bytes, needs {bytes}", self.bytes)));
        }
        Ok(self.ptr)
    }
}

pub(crate) fn ensure(kernel: &'static str, ok: bool, message: impl FnOnce() -> String) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(CudaError::launch(kernel, message()))
    }
}
