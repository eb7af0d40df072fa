//! FP8 linears through cuBLASLt's block-scaled matmul (cuBLAS 12.9+, Hopper only): e4m3
//! weights with one f32 scale per 128 x 128 block (`BLK128x128_32F`), e4m3 activations with one
//! f32 scale per token per 128 channels (`VEC128_32F`), f32 accumulation, bf16 out. Measured
//! beside our own kernels (`kernels/cuda/fp8_gemm.cu`) by `gpu-check --bench-fp8`, so each shape
//! can take the faster.
//!
//! Row-major on our side, column-major in cuBLASLt, and FP8 wants both operands K-major ("TN"):
//! `out[m, n] = x[m, k] · w[n, k]^T` is issued as the column-major `out^T[n, m] = op(W)[n, k] ·
//! X^T[k, m]`, A = the weight (`[k, n]` column-major, transposed), B = the activations (`[k, m]`
//! column-major). Which order each scale tensor must be stored in is what `gpu-check`'s
//! `blas_lt` check finds out against the naive reference (`ScaleOrder`).

use crate::error::{DriverContext, Result};
use crate::gpu::{DeviceBuffer, Gpu};
use crate::CudaError;
use cudarc::cublaslt::result::{self as lt, CublasError};
use cudarc::cublaslt::sys;
use std::ffi::c_void;
use std::sync::Arc;

impl<T> DriverContext<T> for std::result::Result<T, CublasError> {
    fn ctx(self, what: &str) -> Result<T> {
        self.map_err(|e| CudaError::Blas { context: what.to_string(), message: format!("{e:?}") })
    }
}

/// cuBLASLt's workspace (it must not allocate during graph capture).
const WORKSPACE_BYTES: usize = 32 << 20;

pub struct BlockScaledFp8 {
    handle: sys::cublasLtHandle_t,
    workspace: DeviceBuffer,
    gpu: Arc<Gpu>,
}

// SAFETY: the handle is used only on this GPU's stream with its context current, by one
// thread at a time (whoever owns the value).
unsafe impl Send for BlockScaledFp8 {}

/// One FP8 linear: device pointers to `x` (`[m, k]` e4m3) with its per-token-per-128 scales,
/// `w` (`[n, k]` e4m3) with its 128 x 128 block scales, and `out` (`[m, n]` bf16).
#[derive(Debug, Clone, Copy)]
pub struct Fp8Matmul {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub x: u64,
    pub x_scales: u64,
    pub w: u64,
    pub w_scales: u64,
    pub out: u64,
}

impl BlockScaledFp8 {
    /// Unavailable where the library is missing or the GPU is not a Hopper (sm_90).
    pub fn new(gpu: &Arc<Gpu>) -> Result<Self> {
        gpu.bind()?;
        // SAFETY: checks only whether the library can be loaded.
        if !unsafe { sys::is_culib_present() } {
            return Err(CudaError::Unavailable("the cuBLASLt library (libcublasLt.so) is not installed".into()));
        }
        if gpu.info.compute_capability.0 != 9 {
            return Err(CudaError::Unavailable(format!("cuBLASLt's 128-block FP8 scaling runs on Hopper (sm_90) only, not sm_{}{}", gpu.info.compute_capability.0, gpu.info.compute_capability.1)));
        }
        let handle = lt::create_handle().ctx("cublasLtCreate")?;
        let workspace = DeviceBuffer::alloc(gpu, WORKSPACE_BYTES)?;
        Ok(Self { handle, workspace, gpu: gpu.clone() })
    }

    /// `out = x · w^T` on the GPU's stream. The descriptors are made per call (the host cost is
    /// outside a captured graph's replays).
    pub fn matmul(&self, g: &Fp8Matmul) -> Result<()> {
        if g.m == 0 || g.n == 0 {
            return Ok(());
        }
        if g.k % 16 != 0 || g.n % 16 != 0 {
            return Err(CudaError::launch("cublasLt fp8", "n and k must be multiples of 16"));
        }
        let name = || format!("cuBLASLt fp8 n={} k={}", g.n, g.k).into();
        self.gpu.profiled(name, || self.issue(g))
    }

    fn issue(&self, g: &Fp8Matmul) -> Result<()> {
        let e4m3 = sys::cudaDataType::CUDA_R_8F_E4M3;
        let desc = Desc(lt::create_matmul_desc(sys::cublasComputeType_t::CUBLAS_COMPUTE_32F, sys::cudaDataType::CUDA_R_32F).ctx("cublasLtMatmulDescCreate")?);
        let a = Layout(lt::create_matrix_layout(e4m3, g.k as u64, g.n as u64, g.k as i64).ctx("cublasLtMatrixLayoutCreate A")?);
        let b = Layout(lt::create_matrix_layout(e4m3, g.k as u64, g.m as u64, g.k as i64).ctx("cublasLtMatrixLayoutCreate B")?);
        let d = Layout(lt::create_matrix_layout(sys::cudaDataType::CUDA_R_16BF, g.n as u64, g.m as u64, g.n as i64).ctx("cublasLtMatrixLayoutCreate D")?);
        let pref = Pref(lt::create_matmul_pref().ctx("cublasLtMatmulPreferenceCreate")?);
        let set = |attr: sys::cublasLtMatmulDescAttributes_t, value: &[u8]| {
            // SAFETY: a live descriptor; `value` is the attribute's documented type and size.
            unsafe { lt::set_matmul_desc_attribute(desc.0, attr, value.as_ptr() as *const c_void, value.len()) }.ctx("cublasLtMatmulDescSetAttribute")
        };
        use sys::cublasLtMatmulDescAttributes_t as A;
        let trans = cudarc::cublas::sys::cublasOperation_t::CUBLAS_OP_T as i32;
        set(A::CUBLASLT_MATMUL_DESC_TRANSA, &trans.to_ne_bytes())?;
        set(A::CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &(sys::cublasLtMatmulMatrixScale_t::CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F as i32).to_ne_bytes())?;
        set(A::CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &(sys::cublasLtMatmulMatrixScale_t::CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F as i32).to_ne_bytes())?;
        set(A::CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &g.w_scales.to_ne_bytes())?;
        set(A::CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &g.x_scales.to_ne_bytes())?;
        let ws = WORKSPACE_BYTES as u64;
        // SAFETY: a live preference descriptor; the value is a u64 as documented.
        unsafe {
            lt::set_matmul_pref_attribute(pref.0, sys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws as *const u64 as *const c_void, 8)
        }
        .ctx("cublasLtMatmulPreferenceSetAttribute")?;
        // SAFETY: live descriptors and layouts made above.
        let heuristic = unsafe { lt::get_matmul_algo_heuristic(self.handle, desc.0, a.0, b.0, d.0, d.0, pref.0) }.ctx("cublasLtMatmulAlgoGetHeuristic (no algorithm for these scale modes?)")?;
        let (alpha, beta) = (1f32, 0f32);
        // SAFETY: the pointers are live device allocations the caller sized for these shapes;
        // alpha and beta live on the host for the call; the workspace is ours.
        unsafe {
            lt::matmul(
                self.handle,
                desc.0,
                &alpha as *const f32 as *const c_void,
                &beta as *const f32 as *const c_void,
                g.w as *const c_void,
                a.0,
                g.x as *const c_void,
                b.0,
                g.out as *const c_void,
                d.0,
                g.out as *mut c_void,
                d.0,
                &heuristic.algo,
                self.workspace.ptr() as *mut c_void,
                WORKSPACE_BYTES,
                self.gpu.stream as sys::cudaStream_t,
            )
        }
        .ctx("cublasLtMatmul")
    }
}

impl Drop for BlockScaledFp8 {
    fn drop(&mut self) {
        // SAFETY: the handle was created in `new` and is destroyed once.
        let _ = unsafe { lt::destroy_handle(self.handle) };
    }
}

struct Desc(sys::cublasLtMatmulDesc_t);
struct Layout(sys::cublasLtMatrixLayout_t);
struct Pref(sys::cublasLtMatmulPreference_t);

impl Drop for Desc {
    fn drop(&mut self) {
        // SAFETY: created once above, destroyed once here.
        let _ = unsafe { lt::destroy_matmul_desc(self.0) };
    }
}
impl Drop for Layout {
    fn drop(&mut self) {
        // SAFETY: created once above, destroyed once here.
        let _ = unsafe { lt::destroy_matrix_layout(self.0) };
    }
}
impl Drop for Pref {
    fn drop(&mut self) {
        // SAFETY: created once above, destroyed once here.
        let _ = unsafe { lt::destroy_matmul_pref(self.0) };
    }
}
