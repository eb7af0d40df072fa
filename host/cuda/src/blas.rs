//! Dense GEMMs through cuBLAS: bf16 operands, f32 accumulation, bf16 or f32 results.
//!
//! Everything is row-major on our side. cuBLAS is column-major, so `C[m,n] = A[m,k] · W[n,k]^T`
//! (a linear layer, W stored `[out, in]`) is issued as the column-major `C^T = W · A^T`.

use crate::error::{DriverContext, Result};
use crate::gpu::{DeviceBuffer, Gpu};
use cudarc::cublas::{result, sys};
use std::ffi::c_void;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    Bf16,
    F32,
}

impl Dtype {
    fn cuda(self) -> sys::cudaDataType {
        match self {
            Dtype::Bf16 => sys::cudaDataType::CUDA_R_16BF,
            Dtype::F32 => sys::cudaDataType::CUDA_R_32F,
        }
    }
}

/// One operand: a device pointer, its element type and row stride (elements).
#[derive(Debug, Clone, Copy)]
pub struct Operand {
    pub ptr: u64,
    pub dtype: Dtype,
    pub ld: usize,
}

/// `C[m, n] = A[m, k] · W^T + beta * C`: W row-major `[n, k]` (a linear layer), or `[k, n]`
/// in a `Batch` with `w_kn`.
#[derive(Debug, Clone, Copy)]
pub struct Linear {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: Operand,
    pub w: Operand,
    pub c: Operand,
    pub beta: f32,
}

/// `count` GEMMs of one shape, each operand `stride_*` elements after the previous one's.
#[derive(Debug, Clone, Copy)]
pub struct Batch {
    pub stride_a: usize,
    pub stride_w: usize,
    pub stride_c: usize,
    pub count: usize,
    /// W is `[k, n]` instead of `[n, k]`.
    pub w_kn: bool,
}

impl Batch {
    const ONE: Self = Self { stride_a: 0, stride_w: 0, stride_c: 0, count: 1, w_kn: false };
}

pub struct Blas {
    handle: sys::cublasHandle_t,
    _workspace: DeviceBuffer,
    gpu: Arc<Gpu>,
}

// SAFETY: the handle is bound to our one stream and only used with the context current.
unsafe impl Send for Blas {}

/// cuBLAS needs a workspace it does not allocate itself during graph capture.
const WORKSPACE_BYTES: usize = 32 << 20;

impl Blas {
    pub fn new(gpu: &Arc<Gpu>) -> Result<Self> {
        gpu.bind()?;
        // SAFETY: checks only whether the library can be loaded.
        if !unsafe { sys::is_culib_present() } {
            return Err(crate::CudaError::Unavailable("the cuBLAS library (libcublas.so) is not installed".into()));
        }
        let handle = result::create_handle().ctx("cublasCreate")?;
        let workspace = DeviceBuffer::alloc(gpu, WORKSPACE_BYTES)?;
        // SAFETY: a fresh handle, our live stream and a live workspace owned by `self`.
        unsafe {
            result::set_stream(handle, gpu.stream as sys::cudaStream_t).ctx("cublasSetStream")?;
            sys::cublasSetWorkspace_v2(handle, workspace.ptr() as *mut c_void, WORKSPACE_BYTES).result().ctx("cublasSetWorkspace")?;
        }
        Ok(Self { handle, _workspace: workspace, gpu: gpu.clone() })
    }

    /// One `Linear`.
    pub fn linear(&self, g: Linear) -> Result<()> {
        self.batched(g, Batch::ONE)
    }

    /// `b.count` `Linear`s of one shape at strided operands.
    pub fn batched(&self, g: Linear, b: Batch) -> Result<()> {
        let Linear { m, n, k, a, w, c, beta } = g;
        let Batch { stride_a, stride_w, stride_c, count: batch, w_kn } = b;
        if m == 0 || n == 0 || batch == 0 {
            return Ok(());
        }
        let name = || format!("cuBLAS gemm n={n} k={k}{}", if batch > 1 { format!(" x{batch}") } else { String::new() }).into();
        self.gpu.profiled(name, || {
            let alpha = 1f32;
            // Column-major view: C^T[n, m] = op(W)[n, k] · A^T[k, m].
            let op_w = if w_kn { sys::cublasOperation_t::CUBLAS_OP_N } else { sys::cublasOperation_t::CUBLAS_OP_T };
            // SAFETY: pointers come from live device allocations sized by the caller for these shapes
            // (the backend's arena and weights); scalars live on the host for the call.
            unsafe {
                result::gemm_strided_batched_ex(
                    self.handle,
                    op_w,
                    sys::cublasOperation_t::CUBLAS_OP_N,
                    n as i32,
                    m as i32,
                    k as i32,
                    &alpha as *const f32 as *const c_void,
                    w.ptr as *const c_void,
                    w.dtype.cuda(),
                    w.ld as i32,
                    stride_w as i64,
                    a.ptr as *const c_void,
                    a.dtype.cuda(),
                    a.ld as i32,
                    stride_a as i64,
                    &beta as *const f32 as *const c_void,
                    c.ptr as *mut c_void,
                    c.dtype.cuda(),
                    c.ld as i32,
                    stride_c as i64,
                    batch as i32,
                    sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                    sys::cublasGemmAlgo_t::CUBLAS_GEMM_DFALT,
                )
            }
            .ctx("cublasGemmStridedBatchedEx")
        })
    }
}

impl Drop for Blas {
    fn drop(&mut self) {
        let _ = self.gpu.bind();
        // SAFETY: created in `new`, destroyed once.
        unsafe {
            let _ = result::destroy_handle(self.handle);
        }
    }
}
