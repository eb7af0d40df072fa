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
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex};

impl<T> DriverContext<T> for std::result::Result<T, CublasError> {
    fn ctx(self, what: &str) -> Result<T> {
        self.map_err(|e| CudaError::Blas { context: what.to_string(), message: format!("{e:?}") })
    }
}

/// cuBLASLt's workspace (it must not allocate during graph capture).
pub const WORKSPACE_BYTES: usize = 32 << 20;

/// What one matmul writes: bf16 `out`, f32 `out`, or f32 `out += x · w^T` (the residual stream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LtOut {
    Bf16,
    F32,
    F32Add,
}

/// A shape's descriptors and the algorithm the heuristic chose, made once per shape.
struct Plan {
    desc: Desc,
    a: Layout,
    b: Layout,
    d: Layout,
    algo: sys::cublasLtMatmulAlgo_t,
}

type Key = (usize, usize, usize, LtOut);

pub struct BlockScaledFp8 {
    handle: sys::cublasLtHandle_t,
    workspace: DeviceBuffer,
    gpu: Arc<Gpu>,
    /// Per shape: the plan, or None where cuBLASLt has no algorithm (asked once).
    plans: Mutex<HashMap<Key, Option<Plan>>>,
}

// SAFETY: the handle and the plans' descriptors are only used on this GPU's stream, and only
// while holding the `plans` mutex (`supports`, `plan` and `issue` all run under it), so one call
// at a time whichever thread owns or borrows the value.
unsafe impl Send for BlockScaledFp8 {}
// SAFETY: as above: every use of the handle and the descriptors is serialised by the mutex.
unsafe impl Sync for BlockScaledFp8 {}

/// One FP8 linear: device pointers to `x` (`[m, k]` e4m3) with its per-token-per-128 scales
/// stored K-major (`[k/128][m]`, what cuBLASLt reads: `gpu-check`'s blas_lt rows find it), `w`
/// (`[n, k]` e4m3) with its 128 x 128 block scales (`[n/128][k/128]`), and `out` (`[m, n]`).
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
    pub out_kind: LtOut,
}

/// Whether the forward pass may use it: on unless `MLAHOST_FP8_CUBLASLT=0` (checked end to end
/// on an H100: the fixtures' FP8 rows with it in their prefill, its probe in every output mode).
pub fn turned_on() -> bool {
    std::env::var("MLAHOST_FP8_CUBLASLT").map_or(true, |v| v != "0")
}

/// Shapes cuBLASLt's block scaling takes: k in whole 128-blocks, n in 16s, and at least 16 rows
/// (below that its heuristic has no algorithm on an H100 with CUDA 13).
pub fn shape_ok(m: usize, n: usize, k: usize) -> bool {
    m >= 16 && n % 16 == 0 && k % 128 == 0 && k > 0
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
        Ok(Self { handle, workspace, gpu: gpu.clone(), plans: Mutex::new(HashMap::new()) })
    }

    /// Whether cuBLASLt has an algorithm for this shape (asked once per shape, then remembered).
    pub fn supports(&self, m: usize, n: usize, k: usize, out: LtOut) -> bool {
        if !shape_ok(m, n, k) {
            return false;
        }
        let mut plans = self.plans.lock().unwrap_or_else(|p| p.into_inner());
        plans.entry((m, n, k, out)).or_insert_with(|| self.plan(m, n, k, out).ok()).is_some()
    }

    /// `out (=|+=) x · w^T` on the GPU's stream.
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

    fn plan(&self, m: usize, n: usize, k: usize, out: LtOut) -> Result<Plan> {
        let e4m3 = sys::cudaDataType::CUDA_R_8F_E4M3;
        let d_type = if out == LtOut::Bf16 { sys::cudaDataType::CUDA_R_16BF } else { sys::cudaDataType::CUDA_R_32F };
        let desc = Desc(lt::create_matmul_desc(sys::cublasComputeType_t::CUBLAS_COMPUTE_32F, sys::cudaDataType::CUDA_R_32F).ctx("cublasLtMatmulDescCreate")?);
        let a = Layout(lt::create_matrix_layout(e4m3, k as u64, n as u64, k as i64).ctx("cublasLtMatrixLayoutCreate A")?);
        let b = Layout(lt::create_matrix_layout(e4m3, k as u64, m as u64, k as i64).ctx("cublasLtMatrixLayoutCreate B")?);
        let d = Layout(lt::create_matrix_layout(d_type, n as u64, m as u64, n as i64).ctx("cublasLtMatrixLayoutCreate D")?);
        let pref = Pref(lt::create_matmul_pref().ctx("cublasLtMatmulPreferenceCreate")?);
        use sys::cublasLtMatmulDescAttributes_t as A;
        let trans = cudarc::cublas::sys::cublasOperation_t::CUBLAS_OP_T as i32;
        set_attr(&desc, A::CUBLASLT_MATMUL_DESC_TRANSA, &trans.to_ne_bytes())?;
        set_attr(&desc, A::CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &(sys::cublasLtMatmulMatrixScale_t::CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F as i32).to_ne_bytes())?;
        set_attr(&desc, A::CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &(sys::cublasLtMatmulMatrixScale_t::CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F as i32).to_ne_bytes())?;
        // the heuristic offers no block-scaled algorithm while the scale pointers are unset (an
        // H100 with CUDA 13 answered NOT_SUPPORTED for every shape): any device address serves
        // here, each call sets the real ones
        let placeholder = self.workspace.ptr();
        set_attr(&desc, A::CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &placeholder.to_ne_bytes())?;
        set_attr(&desc, A::CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &placeholder.to_ne_bytes())?;
        let ws = WORKSPACE_BYTES as u64;
        // SAFETY: a live preference descriptor; the value is a u64 as documented.
        unsafe {
            lt::set_matmul_pref_attribute(pref.0, sys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws as *const u64 as *const c_void, 8)
        }
        .ctx("cublasLtMatmulPreferenceSetAttribute")?;
        // SAFETY: live descriptors and layouts made above.
        let heuristic = unsafe { lt::get_matmul_algo_heuristic(self.handle, desc.0, a.0, b.0, d.0, d.0, pref.0) }.ctx("cublasLtMatmulAlgoGetHeuristic (no algorithm for these scale modes?)")?;
        Ok(Plan { desc, a, b, d, algo: heuristic.algo })
    }

    fn issue(&self, g: &Fp8Matmul) -> Result<()> {
        let mut plans = self.plans.lock().unwrap_or_else(|p| p.into_inner());
        let plan = match plans.entry((g.m, g.n, g.k, g.out_kind)) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(Some(self.plan(g.m, g.n, g.k, g.out_kind)?)),
        };
        let Some(plan) = plan.as_ref() else {
            return Err(CudaError::Blas { context: "cublasLtMatmul".into(), message: format!("no block-scaled fp8 algorithm for m={} n={} k={}", g.m, g.n, g.k) });
        };
        use sys::cublasLtMatmulDescAttributes_t as A;
        set_attr(&plan.desc, A::CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &g.w_scales.to_ne_bytes())?;
        set_attr(&plan.desc, A::CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &g.x_scales.to_ne_bytes())?;
        let (alpha, beta) = (1f32, if g.out_kind == LtOut::F32Add { 1f32 } else { 0f32 });
        // SAFETY: the pointers are live device allocations the caller sized for these shapes;
        // alpha and beta live on the host for the call; the workspace is ours; C = D in place.
        unsafe {
            lt::matmul(
                self.handle,
                plan.desc.0,
                &alpha as *const f32 as *const c_void,
                &beta as *const f32 as *const c_void,
                g.w as *const c_void,
                plan.a.0,
                g.x as *const c_void,
                plan.b.0,
                g.out as *const c_void,
                plan.d.0,
                g.out as *mut c_void,
                plan.d.0,
                &plan.algo,
                self.workspace.ptr() as *mut c_void,
                WORKSPACE_BYTES,
                self.gpu.stream as sys::cudaStream_t,
            )
        }
        .ctx("cublasLtMatmul")
    }
}

fn set_attr(desc: &Desc, attr: sys::cublasLtMatmulDescAttributes_t, value: &[u8]) -> Result<()> {
    // SAFETY: a live descriptor; `value` is the attribute's documented type and size.
    unsafe { lt::set_matmul_desc_attribute(desc.0, attr, value.as_ptr() as *const c_void, value.len()) }.ctx("cublasLtMatmulDescSetAttribute")
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
