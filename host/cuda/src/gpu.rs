//! One GPU: its context, the stream everything runs on, and owned device allocations.
//! Built on cudarc's thin `result` layer: the backend manages its own memory (one arena for the
//! activations, one pool for the cache), so it needs raw pointers rather than tracked slices.

use crate::error::{CudaError, DriverContext, Result};
use crate::profile::{KernelProfile, Phase, ProfileReport};
use crate::step_clock::StepClock;
use cudarc::driver::{result, sys};
use std::borrow::Cow;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// What a device reports about itself.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    pub ordinal: usize,
    pub name: String,
    pub compute_capability: (i32, i32),
    pub multiprocessors: i32,
    pub total_memory: u64,
}

pub struct Gpu {
    pub info: DeviceInfo,
    ctx: sys::CUcontext,
    device: sys::CUdevice,
    pub(crate) stream: sys::CUstream,
    /// Per-kernel timing of eager forward passes, when switched on (`set_profiling`).
    profile: Mutex<Option<KernelProfile>>,
    /// Device time of each forward pass, when switched on (`set_step_clock`).
    clock: Mutex<Option<StepClock>>,
}

// SAFETY: a CUDA context and stream may be used from any thread once the context is made
// current there (`bind`); the backend calls `bind` before every use from a new thread.
unsafe impl Send for Gpu {}
// SAFETY: as above; the driver API is thread-safe for these handles.
unsafe impl Sync for Gpu {}

/// Whether the CUDA driver library can be loaded at all (false on machines without a GPU).
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen the driver library; no CUDA call is made.
    unsafe { sys::is_culib_present() }
}

/// How many GPUs the driver sees (0 without a driver).
pub fn device_count() -> usize {
    if !driver_present() || result::init().is_err() {
        return 0;
    }
    result::device::get_count().map_or(0, |n| n.max(0) as usize)
}

impl Gpu {
    /// Opens `cuda:ordinal` with its primary context and a fresh non-blocking stream.
    pub fn open(ordinal: usize) -> Result<Arc<Self>> {
        if !driver_present() {
            return Err(CudaError::Unavailable("the CUDA driver library (libcuda.so) is not installed".into()));
        }
        result::init().ctx("cuInit")?;
        let count = result::device::get_count().ctx("cuDeviceGetCount")?;
        if ordinal as i32 >= count {
            return Err(CudaError::Unavailable(format!("cuda:{ordinal} requested but {count} device(s) found")));
        }
        let device = result::device::get(ordinal as i32).ctx("cuDeviceGet")?;
        // SAFETY: `device` is a valid handle from cuDeviceGet; the context is released in Drop.
        let ctx = unsafe { result::primary_ctx::retain(device) }.ctx("cuDevicePrimaryCtxRetain")?;
        // SAFETY: ctx was just retained and is valid.
        unsafe { result::ctx::set_current(ctx) }.ctx("cuCtxSetCurrent")?;
        let stream = result::stream::create(result::stream::StreamKind::NonBlocking).ctx("cuStreamCreate")?;
        let attr = |a| {
            // SAFETY: a valid device handle and a plain attribute query.
            unsafe { result::device::get_attribute(device, a) }.ctx("cuDeviceGetAttribute")
        };
        let info = DeviceInfo {
            ordinal,
            name: result::device::get_name(device).ctx("cuDeviceGetName")?,
            compute_capability: (
                attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?,
                attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?,
            ),
            multiprocessors: attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?,
            // SAFETY: valid device handle.
            total_memory: unsafe { result::device::total_mem(device) }.ctx("cuDeviceTotalMem")? as u64,
        };
        Ok(Arc::new(Self { info, ctx, device, stream, profile: Mutex::new(None), clock: Mutex::new(None) }))
    }

    fn profile(&self) -> MutexGuard<'_, Option<KernelProfile>> {
        self.profile.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn clock(&self) -> MutexGuard<'_, Option<StepClock>> {
        self.clock.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts (with empty totals) or stops timing each forward pass on the device.
    pub fn set_step_clock(&self, on: bool) -> Result<()> {
        self.bind()?;
        *self.clock() = if on { Some(StepClock::new()?) } else { None };
        Ok(())
    }

    /// Before a forward pass's first launch (a no-op unless `set_step_clock`).
    pub(crate) fn step_begin(&self) -> Result<()> {
        self.clock().as_mut().map_or(Ok(()), |c| c.begin(self.stream))
    }

    /// After a forward pass's last launch.
    pub(crate) fn step_end(&self, phase: Phase) -> Result<()> {
        self.clock().as_mut().map_or(Ok(()), |c| c.end(self.stream, phase))
    }

    /// Forward passes of `phase` timed so far and their device seconds (None without the clock).
    pub fn step_device_time(&self, phase: Phase) -> Result<Option<(u64, f64)>> {
        self.bind()?;
        self.clock().as_mut().map(|c| c.totals(phase)).transpose()
    }

    /// Starts (with empty totals) or stops timing every kernel launch and cuBLAS call.
    pub fn set_profiling(&self, on: bool) {
        *self.profile() = on.then(KernelProfile::new);
    }

    pub fn profiling(&self) -> bool {
        self.profile().is_some()
    }

    /// Runs `launch` between two events when profiling and the stream is not being captured.
    pub(crate) fn profiled(&self, name: impl FnOnce() -> Cow<'static, str>, launch: impl FnOnce() -> Result<()>) -> Result<()> {
        let mut guard = self.profile();
        let Some(p) = guard.as_mut() else { return launch() };
        // SAFETY: a plain query on our live stream.
        let capturing = unsafe { result::stream::is_capturing(self.stream) }.ctx("cuStreamIsCapturing")?;
        if capturing != sys::CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE {
            return launch();
        }
        let start = p.mark(self.stream)?;
        if let Err(e) = launch() {
            p.recycle(start);
            return Err(e);
        }
        let end = p.mark(self.stream)?;
        p.push(name(), start, end);
        Ok(())
    }

    /// Counts a forward pass of `phase`; what is launched from now on belongs to it.
    pub(crate) fn profile_forward(&self, phase: Phase) {
        if let Some(p) = self.profile().as_mut() {
            p.phase = phase;
            *p.report.forwards.entry(phase).or_default() += 1;
        }
    }

    /// Waits for the stream and adds the launches timed so far to the totals.
    pub(crate) fn profile_collect(&self) -> Result<()> {
        if !self.profiling() {
            return Ok(());
        }
        self.synchronize()?;
        self.profile().as_mut().map_or(Ok(()), |p| p.collect())
    }

    /// The totals so far (None when not profiling).
    pub fn profile_report(&self) -> Result<Option<ProfileReport>> {
        self.profile_collect()?;
        Ok(self.profile().as_ref().map(|p| p.report.clone()))
    }

    /// Makes this GPU's context current on the calling thread.
    pub fn bind(&self) -> Result<()> {
        // SAFETY: the context is alive for as long as `self`.
        unsafe { result::ctx::set_current(self.ctx) }.ctx("cuCtxSetCurrent")
    }

    pub fn synchronize(&self) -> Result<()> {
        // SAFETY: the stream belongs to this context and is alive.
        unsafe { result::stream::synchronize(self.stream) }.ctx("cuStreamSynchronize (an earlier kernel may have failed)")
    }

    /// Queues a copy of `bytes` from device address `src` to `dst` on this GPU's stream. Both
    /// must be live allocations of this device's context (`DeviceBuffer::ptr` plus an offset).
    pub fn copy_device(&self, dst: u64, src: u64, bytes: usize) -> Result<()> {
        // SAFETY: the caller passes ranges inside live allocations of this context.
        unsafe { result::memcpy_dtod_async(dst, src, bytes, self.stream) }.ctx("cuMemcpyDtoDAsync")
    }

    /// Queues zeroing `bytes` at device address `ptr` (inside a live allocation of this context).
    pub fn zero(&self, ptr: u64, bytes: usize) -> Result<()> {
        // SAFETY: the caller passes a range inside a live allocation of this context.
        unsafe { result::memset_d8_async(ptr, 0, bytes, self.stream) }.ctx("cuMemsetD8Async")
    }

    /// (free, total) device memory in bytes.
    pub fn mem_info(&self) -> Result<(u64, u64)> {
        self.bind()?;
        let (free, total) = result::mem_get_info().ctx("cuMemGetInfo")?;
        Ok((free as u64, total as u64))
    }

    /// Architecture name for NVRTC: sm_90a on Hopper (wgmma), sm_XY elsewhere.
    pub fn arch(&self) -> String {
        let (major, minor) = self.info.compute_capability;
        if (major, minor) == (9, 0) {
            "sm_90a".into()
        } else {
            format!("sm_{major}{minor}")
        }
    }

    pub fn is_hopper(&self) -> bool {
        self.info.compute_capability == (9, 0)
    }
}

impl Drop for Gpu {
    fn drop(&mut self) {
        // SAFETY: the stream and the primary context were created in `open` and are released once.
        unsafe {
            let _ = result::ctx::set_current(self.ctx);
            drop(self.profile.get_mut().unwrap_or_else(PoisonError::into_inner).take()); // its events, while the context is current
            drop(self.clock.get_mut().unwrap_or_else(PoisonError::into_inner).take());
            let _ = result::stream::synchronize(self.stream);
            let _ = result::stream::destroy(self.stream);
            let _ = result::primary_ctx::release(self.device);
        }
    }
}

/// Plain old data that may be copied to and from the device byte for byte.
pub trait Pod: Copy + Default + 'static {}
impl Pod for u8 {}
impl Pod for u16 {}
impl Pod for i32 {}
impl Pod for u32 {}
impl Pod for i64 {}
impl Pod for f32 {}

/// An owned device allocation, freed on drop.
pub struct DeviceBuffer {
    ptr: sys::CUdeviceptr,
    bytes: usize,
    gpu: Arc<Gpu>,
}

impl DeviceBuffer {
    pub fn alloc(gpu: &Arc<Gpu>, bytes: usize) -> Result<Self> {
        gpu.bind()?;
        // SAFETY: a plain allocation of `bytes` (at least 1) in the current context.
        let ptr = unsafe { result::malloc_sync(bytes.max(1)) }.map_err(|e| {
            CudaError::OutOfMemory(format!("allocating {:.2} GiB: {e:?}", bytes as f64 / (1u64 << 30) as f64))
        })?;
        Ok(Self { ptr, bytes, gpu: gpu.clone() })
    }

    pub fn from_slice<T: Pod>(gpu: &Arc<Gpu>, data: &[T]) -> Result<Self> {
        let buf = Self::alloc(gpu, std::mem::size_of_val(data))?;
        buf.write(0, data)?;
        Ok(buf)
    }

    pub fn ptr(&self) -> u64 {
        self.ptr
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Synchronous copy of `data` to byte offset `offset` (on the backend's stream, then waited for).
    pub fn write<T: Pod>(&self, offset: usize, data: &[T]) -> Result<()> {
        let n = std::mem::size_of_val(data);
        if offset + n > self.bytes {
            return Err(CudaError::launch("memcpy", format!("write of {n} bytes at {offset} past a {}-byte buffer", self.bytes)));
        }
        if n == 0 {
            return Ok(());
        }
        // SAFETY: bounds checked above; `data` is plain data and outlives the call, which waits.
        unsafe {
            result::memcpy_htod_async(self.ptr + offset as u64, data, self.gpu.stream).ctx("cuMemcpyHtoDAsync")?;
        }
        self.gpu.synchronize()
    }

    /// Copies the first `out.len()` elements back (waits for the stream first).
    pub fn read<T: Pod>(&self, offset: usize, out: &mut [T]) -> Result<()> {
        let n = std::mem::size_of_val(out);
        if offset + n > self.bytes {
            return Err(CudaError::launch("memcpy", format!("read of {n} bytes at {offset} past a {}-byte buffer", self.bytes)));
        }
        if n == 0 {
            return Ok(());
        }
        // SAFETY: bounds checked; the copy completes before the synchronize returns.
        unsafe {
            result::memcpy_dtoh_async(out, self.ptr + offset as u64, self.gpu.stream).ctx("cuMemcpyDtoHAsync")?;
        }
        self.gpu.synchronize()
    }

    pub fn to_vec<T: Pod>(&self, len: usize) -> Result<Vec<T>> {
        let mut v = vec![T::default(); len];
        self.read(0, &mut v)?;
        Ok(v)
    }

    /// Copies `bytes` from `src` (a device address of this context) to `offset` in this buffer,
    /// on the stream (so a CUDA graph may capture it).
    pub fn copy_from_device(&self, offset: usize, src: u64, bytes: usize) -> Result<()> {
        if offset + bytes > self.bytes {
            return Err(CudaError::launch("copy", format!("{bytes} bytes at {offset} overrun a buffer of {}", self.bytes)));
        }
        // SAFETY: the destination range lies inside this allocation (checked above); the caller
        // passes a source range of a live allocation of this context; both on our stream.
        unsafe { result::memcpy_dtod_async(self.ptr + offset as u64, src, bytes, self.gpu.stream) }.ctx("cuMemcpyDtoDAsync")
    }

    /// Fills the buffer with one byte value (poisoning outputs in tests, zeroing pools).
    pub fn fill_bytes(&self, value: u8) -> Result<()> {
        // SAFETY: the whole allocation, on our stream.
        unsafe { result::memset_d8_async(self.ptr, value, self.bytes, self.gpu.stream) }.ctx("cuMemsetD8Async")?;
        self.gpu.synchronize()
    }
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        // SAFETY: allocated by malloc_sync in `alloc` and freed exactly once; the stream is
        // synchronized so no kernel still uses it.
        unsafe {
            let _ = self.gpu.bind();
            let _ = result::stream::synchronize(self.gpu.stream);
            let _ = result::free_sync(self.ptr);
        }
    }
}
