//! Loaded kernel modules and a checked launch helper.

use crate::compile::compile;
use crate::error::{CudaError, DriverContext, Result};
use crate::gpu::Gpu;
use crate::sources::{Family, ALL};
use cudarc::driver::{result, sys};
use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A kernel argument, passed by value.
#[derive(Debug, Clone, Copy)]
pub enum Arg {
    /// A device pointer (0 for a null pointer).
    Ptr(u64),
    I32(i32),
    F32(f32),
}

impl From<f32> for Arg {
    fn from(v: f32) -> Self {
        Arg::F32(v)
    }
}

/// Every kernel of every family, compiled for one GPU.
pub struct Kernels {
    gpu: Arc<Gpu>,
    modules: Vec<sys::CUmodule>,
    functions: HashMap<String, sys::CUfunction>,
    /// Whether `launch_programmatic` asks for programmatic dependent launch (Hopper; the
    /// benchmark turns it off to measure what it gains).
    programmatic: AtomicBool,
    /// Whether `launch_step` does too: only with `MLAHOST_STEP_PDL=1` until the step's kernels
    /// overlapping their launch with the kernel ahead have been checked and measured on a GPU.
    step_programmatic: AtomicBool,
}

// SAFETY: module and function handles are plain driver handles usable from any thread with the
// context bound; `Kernels` is only used through the backend, which binds first.
unsafe impl Send for Kernels {}
// SAFETY: as above.
unsafe impl Sync for Kernels {}

impl Kernels {
    /// Compiles (or loads from the disk cache) every family for this GPU.
    pub fn load(gpu: &Arc<Gpu>) -> Result<Self> {
        gpu.bind()?;
        let arch = gpu.arch();
        let programmatic = AtomicBool::new(gpu.info.compute_capability.0 >= 9);
        let step_programmatic = AtomicBool::new(programmatic.load(Ordering::Relaxed) && std::env::var("MLAHOST_STEP_PDL").is_ok_and(|v| v == "1"));
        let mut k = Kernels { gpu: gpu.clone(), modules: Vec::new(), functions: HashMap::new(), programmatic, step_programmatic };
        for family in ALL {
            k.load_family(family, &arch)?;
        }
        Ok(k)
    }

    fn load_family(&mut self, family: &Family, arch: &str) -> Result<()> {
        let image = compile(family, arch)?;
        // SAFETY: `image.bytes` is a complete CUBIN from NVRTC (or our cache of one); the driver
        // copies it during the call.
        let module = unsafe { result::module::load_data(image.bytes.as_ptr() as *const c_void) }.ctx(family.file)?;
        self.modules.push(module);
        for name in kernel_names(family.source) {
            let cname = CString::new(name.as_str()).map_err(|_| CudaError::launch("load", "bad kernel name"))?;
            // SAFETY: the module was just loaded; the name is NUL-terminated.
            let f = unsafe { result::module::get_function(module, cname) }.ctx(&format!("{}: {name}", family.file))?;
            self.functions.insert(name, f);
        }
        Ok(())
    }

    /// A `__device__` variable's address and bytes, from whichever family defines it; None where
    /// none does (a development-only trace compiled out).
    pub fn global(&self, name: &str) -> Result<Option<(u64, usize)>> {
        let cname = CString::new(name).map_err(|_| CudaError::launch("global", "bad symbol name"))?;
        self.gpu.bind()?;
        for &m in &self.modules {
            // SAFETY: loaded in `load_family` and unloaded only in Drop; the name is NUL-terminated.
            match unsafe { result::module::get_global(m, cname.clone()) } {
                Ok(found) => return Ok(Some(found)),
                Err(e) if e.0 == sys::cudaError_enum::CUDA_ERROR_NOT_FOUND => continue,
                Err(e) => return Err(e).ctx("cuModuleGetGlobal"),
            }
        }
        Ok(None)
    }

    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    fn function(&self, name: &'static str) -> Result<sys::CUfunction> {
        self.functions.get(name).copied().ok_or_else(|| CudaError::launch(name, "no such kernel in the loaded modules"))
    }

    /// A kernel's registers per thread and the CTAs of `block` threads with `smem` bytes of
    /// dynamic shared memory an SM holds, as this GPU's compiler and driver report them (the
    /// occupancy the launchers' heuristics assume, checked on the machine that runs them).
    pub fn occupancy(&self, name: &'static str, block: u32, smem: u32) -> Result<(i32, i32)> {
        let f = self.function(name)?;
        self.gpu.bind()?;
        // SAFETY: a valid function handle of a loaded module and a documented attribute.
        let regs = unsafe { result::function::get_function_attribute(f, sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_NUM_REGS) }.ctx(name)?;
        if smem > 48 * 1024 {
            // SAFETY: as above; the same opt-in a launch makes.
            unsafe { result::function::set_function_attribute(f, sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, smem as i32) }.ctx(name)?;
        }
        let mut blocks = 0i32;
        // SAFETY: `blocks` is a live i32 the call writes; the handle is valid.
        unsafe { sys::cuOccupancyMaxActiveBlocksPerMultiprocessor(&mut blocks, f, block as i32, smem as usize) }.result().ctx(name)?;
        Ok((regs, blocks))
    }

    /// Launches `name` on the backend's stream. Shared memory above 48 KB is enabled per launch.
    pub fn launch(&self, name: &'static str, grid: (u32, u32, u32), block: u32, smem: u32, args: &[Arg]) -> Result<()> {
        self.launch_with(name, name, grid, block, smem, args, false)
    }

    /// As `launch`, with programmatic dependent launch where the GPU has it (sm_90+): the kernel
    /// may start while the previous one in the stream is still running, so only kernels that call
    /// `griddepcontrol.wait` before reading anything an earlier kernel writes may use this
    /// (mla_decode_common.cuh: `wait_for_prior_grids`).
    pub fn launch_programmatic(&self, name: &'static str, grid: (u32, u32, u32), block: u32, smem: u32, args: &[Arg]) -> Result<()> {
        self.launch_with(name, name, grid, block, smem, args, self.programmatic.load(Ordering::Relaxed))
    }

    /// As `launch_programmatic`, for a step's kernels other than attention's (norms, rope, cache
    /// writes, activations, MoE routing and GEMMs, FP8 GEMMs): each calls `util::await_prior_kernels`
    /// before it touches global memory. Under its own switch (`MLAHOST_STEP_PDL`).
    pub fn launch_step(&self, name: &'static str, grid: (u32, u32, u32), block: u32, smem: u32, args: &[Arg]) -> Result<()> {
        self.launch_step_labeled(name, name, grid, block, smem, args)
    }

    /// `launch_step` profiled under `label` (one kernel serving two jobs, e.g. the FP8 GEMM over
    /// expert tiles, is then told apart in `--profile-kernels`).
    pub fn launch_step_labeled(&self, name: &'static str, label: &'static str, grid: (u32, u32, u32), block: u32, smem: u32, args: &[Arg]) -> Result<()> {
        self.launch_with(name, label, grid, block, smem, args, self.step_programmatic.load(Ordering::Relaxed))
    }

    /// Turns programmatic dependent launch on or off (off below sm_90 whatever is asked).
    pub fn set_programmatic(&self, on: bool) {
        self.programmatic.store(on && self.gpu.info.compute_capability.0 >= 9, Ordering::Relaxed);
    }

    /// Turns `launch_step`'s programmatic launch on or off (off below sm_90 whatever is asked);
    /// returns what it was.
    pub fn set_step_programmatic(&self, on: bool) -> bool {
        self.step_programmatic.swap(on && self.gpu.info.compute_capability.0 >= 9, Ordering::Relaxed)
    }

    pub fn programmatic(&self) -> bool {
        self.programmatic.load(Ordering::Relaxed)
    }

    #[allow(clippy::too_many_arguments)]
    fn launch_with(&self, name: &'static str, label: &'static str, grid: (u32, u32, u32), block: u32, smem: u32, args: &[Arg], programmatic: bool) -> Result<()> {
        if grid.0 == 0 || grid.1 == 0 || grid.2 == 0 {
            return Ok(()); // nothing to do (an empty batch part)
        }
        self.gpu.profiled(|| label.into(), || self.launch_now(name, grid, block, smem, args, programmatic))
    }

    fn launch_now(&self, name: &'static str, grid: (u32, u32, u32), block: u32, smem: u32, args: &[Arg], programmatic: bool) -> Result<()> {
        let f = self.function(name)?;
        if smem > 48 * 1024 {
            // SAFETY: a valid function handle and a documented attribute.
            unsafe {
                result::function::set_function_attribute(
                    f,
                    sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    smem as i32,
                )
            }
            .ctx(name)?;
        }
        let mut values: Vec<u64> = args
            .iter()
            .map(|a| match *a {
                Arg::Ptr(p) => p,
                Arg::I32(v) => v as u32 as u64,
                Arg::F32(v) => v.to_bits() as u64,
            })
            .collect();
        let mut params: Vec<*mut c_void> = values.iter_mut().map(|v| v as *mut u64 as *mut c_void).collect();
        if !programmatic {
            // SAFETY: each parameter points at 8 bytes whose low bytes hold the value (little-endian),
            // which is how the driver reads 4- and 8-byte parameters; the values outlive the call,
            // which copies them. Pointer arguments come from live allocations of this context.
            return unsafe { result::launch_kernel(f, grid, (block, 1, 1), smem, self.gpu.stream, &mut params) }.ctx(name);
        }
        // SAFETY: an all-zero attribute is a valid value of this plain C struct; id and value are
        // then set to a documented pair.
        let mut attr: sys::CUlaunchAttribute = unsafe { std::mem::zeroed() };
        attr.id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
        attr.value.programmaticStreamSerializationAllowed = 1;
        let config = sys::CUlaunchConfig {
            gridDimX: grid.0,
            gridDimY: grid.1,
            gridDimZ: grid.2,
            blockDimX: block,
            blockDimY: 1,
            blockDimZ: 1,
            sharedMemBytes: smem,
            hStream: self.gpu.stream,
            attrs: &mut attr,
            numAttrs: 1,
        };
        // SAFETY: as for `launch_kernel` above; `config` points at `attr`, both alive for the call.
        unsafe { sys::cuLaunchKernelEx(&config, f, params.as_mut_ptr(), std::ptr::null_mut()) }.result().ctx(name)
    }
}

impl Drop for Kernels {
    fn drop(&mut self) {
        let _ = self.gpu.bind();
        for m in self.modules.drain(..) {
            // SAFETY: loaded in `load_family`, unloaded once.
            unsafe {
                let _ = result::module::unload(m);
            }
        }
    }
}

/// The `extern "C" __global__` kernels a source defines, by name.
fn kernel_names(source: &str) -> Vec<String> {
    let mut names = Vec::new();
    for part in source.split("extern \"C\" __global__").skip(1) {
        // `void [__launch_bounds__(..)] name(`
        let head = &part[..part.find('(').map_or(0, |i| i)];
        let head = if head.contains("__launch_bounds__") {
            let after = &part[part.find(')').map_or(0, |i| i + 1)..];
            &after[..after.find('(').unwrap_or(0)]
        } else {
            head
        };
        if let Some(name) = head.split_whitespace().last() {
            names.push(name.to_string());
        }
    }
    names
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_kernel_names_with_and_without_launch_bounds() {
        let src = "extern \"C\" __global__ void __launch_bounds__(256, 2) alpha(int x) {}\n\
                   extern \"C\" __global__ void beta(const float* __restrict__ p) {}";
        assert_eq!(super::kernel_names(src), vec!["alpha", "beta"]);
        let all: usize = crate::sources::ALL.iter().map(|f| super::kernel_names(f.source).len()).sum();
        assert!(all >= 14, "found {all} kernels");
    }
}
