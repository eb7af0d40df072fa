//! CUDA graphs: capture what a closure launches on the backend's stream, replay it later with
//! one launch (decode steps are many small kernels; a graph removes the gaps between them).

use crate::error::{DriverContext, Result};
use crate::gpu::Gpu;
use cudarc::driver::{result, sys};
use std::sync::Arc;

pub struct Graph {
    exec: sys::CUgraphExec,
    graph: sys::CUgraph,
    gpu: Arc<Gpu>,
}

// SAFETY: graph handles are plain driver handles; used only with the context bound.
unsafe impl Send for Graph {}

impl Graph {
    /// Records every launch `body` makes on the stream (nothing runs while capturing).
    pub fn capture(gpu: &Arc<Gpu>, body: impl FnOnce() -> Result<()>) -> Result<Self> {
        gpu.bind()?;
        // SAFETY: our live stream; global mode so no other thread can sneak work into it.
        unsafe { result::stream::begin_capture(gpu.stream, sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL) }
            .ctx("cuStreamBeginCapture")?;
        let recorded = body();
        // SAFETY: ends the capture begun above on the same stream, whatever `body` returned.
        let graph = unsafe { result::stream::end_capture(gpu.stream) }.ctx("cuStreamEndCapture");
        recorded?;
        let graph = graph?;
        // SAFETY: `graph` was just captured; the exec is destroyed in Drop.
        let exec = unsafe { result::graph::instantiate(graph, sys::CUgraphInstantiate_flags(0)) }.ctx("cuGraphInstantiate")?;
        Ok(Self { exec, graph, gpu: gpu.clone() })
    }

    pub fn launch(&self) -> Result<()> {
        // SAFETY: a live instantiated graph on our stream.
        unsafe { result::graph::launch(self.exec, self.gpu.stream) }.ctx("cuGraphLaunch")
    }
}

impl Drop for Graph {
    fn drop(&mut self) {
        let _ = self.gpu.bind();
        // SAFETY: created in `capture`, destroyed once.
        unsafe {
            let _ = result::graph::exec_destroy(self.exec);
            let _ = result::graph::destroy(self.graph);
        }
    }
}

/// Device-side timing with events.
pub struct Timer {
    start: sys::CUevent,
    end: sys::CUevent,
    gpu: Arc<Gpu>,
}

impl Timer {
    pub fn new(gpu: &Arc<Gpu>) -> Result<Self> {
        gpu.bind()?;
        let flags = sys::CUevent_flags::CU_EVENT_DEFAULT;
        Ok(Self { start: result::event::create(flags).ctx("cuEventCreate")?, end: result::event::create(flags).ctx("cuEventCreate")?, gpu: gpu.clone() })
    }

    /// Milliseconds the work `body` enqueues takes on the device.
    pub fn time(&self, body: impl FnOnce() -> Result<()>) -> Result<f32> {
        // SAFETY: events and stream are alive; elapsed is read after synchronizing on `end`.
        unsafe {
            result::event::record(self.start, self.gpu.stream).ctx("cuEventRecord")?;
            body()?;
            result::event::record(self.end, self.gpu.stream).ctx("cuEventRecord")?;
            result::event::synchronize(self.end).ctx("cuEventSynchronize")?;
            result::event::elapsed(self.start, self.end).ctx("cuEventElapsedTime")
        }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        // SAFETY: created in `new`, destroyed once.
        unsafe {
            let _ = result::event::destroy(self.start);
            let _ = result::event::destroy(self.end);
        }
    }
}

/// Device-to-device copy bandwidth (bytes read + written per second) over `bytes`.
pub fn copy_bandwidth(gpu: &Arc<Gpu>, bytes: usize) -> Result<f64> {
    let a = crate::DeviceBuffer::alloc(gpu, bytes)?;
    let b = crate::DeviceBuffer::alloc(gpu, bytes)?;
    a.fill_bytes(1)?;
    let timer = Timer::new(gpu)?;
    let mut times = Vec::new();
    for _ in 0..10 {
        // SAFETY: two live allocations of `bytes` each, on our stream.
        times.push(timer.time(|| unsafe { result::memcpy_dtod_async(b.ptr(), a.ptr(), bytes, gpu.stream) }.ctx("cuMemcpyDtoDAsync"))?);
    }
    times.sort_by(f32::total_cmp);
    Ok(2.0 * bytes as f64 / (times[times.len() / 2] as f64 * 1e-3))
}
