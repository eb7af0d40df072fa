//! The device time of each forward pass (a CUDA event before its first launch and after its
//! last), summed by phase: beside the wall time of the same steps it says how much of a step the
//! GPU spends waiting for the host (scheduling, metadata, launch, reading samples), the figure
//! that decides whether the host must overlap the next step with this one. Graph replays and
//! eager steps alike; two event records a step, read once the step's results have been waited
//! for anyway.

use crate::error::{DriverContext, Result};
use crate::profile::Phase;
use cudarc::driver::{result, sys};
use std::collections::BTreeMap;

pub(crate) struct StepClock {
    start: sys::CUevent,
    end: sys::CUevent,
    /// The phase of a step whose end was recorded and not yet read.
    pending: Option<Phase>,
    /// Steps and device seconds by phase.
    totals: BTreeMap<Phase, (u64, f64)>,
}

// SAFETY: plain event handles of a context the owning Gpu keeps alive; used under its mutex.
unsafe impl Send for StepClock {}

impl StepClock {
    /// Needs the Gpu's context current.
    pub(crate) fn new() -> Result<Self> {
        let flags = sys::CUevent_flags::CU_EVENT_DEFAULT;
        let start = result::event::create(flags).ctx("cuEventCreate")?;
        let end = match result::event::create(flags).ctx("cuEventCreate") {
            Ok(e) => e,
            Err(e) => {
                // SAFETY: created above, destroyed once.
                unsafe {
                    let _ = result::event::destroy(start);
                }
                return Err(e);
            }
        };
        Ok(Self { start, end, pending: None, totals: BTreeMap::new() })
    }

    /// Before a step's first launch on `stream`.
    pub(crate) fn begin(&mut self, stream: sys::CUstream) -> Result<()> {
        self.settle()?;
        // SAFETY: a live event and stream.
        unsafe { result::event::record(self.start, stream) }.ctx("cuEventRecord")
    }

    /// After the step's last launch.
    pub(crate) fn end(&mut self, stream: sys::CUstream, phase: Phase) -> Result<()> {
        // SAFETY: a live event and stream.
        unsafe { result::event::record(self.end, stream) }.ctx("cuEventRecord")?;
        self.pending = Some(phase);
        Ok(())
    }

    /// Adds the last recorded step (waiting for it if it is still running).
    fn settle(&mut self) -> Result<()> {
        let Some(phase) = self.pending.take() else { return Ok(()) };
        // SAFETY: both events were recorded on our stream, start before end.
        let ms = unsafe {
            result::event::synchronize(self.end).ctx("cuEventSynchronize")?;
            result::event::elapsed(self.start, self.end).ctx("cuEventElapsedTime")?
        };
        let t = self.totals.entry(phase).or_default();
        t.0 += 1;
        t.1 += f64::from(ms) / 1e3;
        Ok(())
    }

    /// Steps and device seconds of `phase` so far.
    pub(crate) fn totals(&mut self, phase: Phase) -> Result<(u64, f64)> {
        self.settle()?;
        Ok(self.totals.get(&phase).copied().unwrap_or_default())
    }
}

impl Drop for StepClock {
    fn drop(&mut self) {
        // SAFETY: created in `new`, destroyed once (the Gpu makes its context current first).
        unsafe {
            let _ = result::event::destroy(self.start);
            let _ = result::event::destroy(self.end);
        }
    }
}
