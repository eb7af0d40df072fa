//! A backend that "samples on the device" by running the host's own sampler over the CPU
//! engine's logits: the engine loop's device-sampling path exercised without a GPU. Shared by
//! the runtime's tests and the CLI's grammar test (included there by path), so both emulate
//! the device the same way.

use mlahost_engine::cpu::CpuBackend;
use mlahost_engine::logits_processors::sample_row;
use mlahost_engine::{AllowSet, Backend, CacheGeometry, DeviceSample, Logits, SampleRequest, SeqChunk};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// What the emulated device saw, readable from the test while the loop owns the backend.
#[derive(Clone, Default)]
pub struct DeviceCounts {
    /// Steps sampled "on the device".
    pub calls: Arc<AtomicUsize>,
    /// Rows sampled with an allow-set.
    pub masked_rows: Arc<AtomicUsize>,
    /// Rows whose allow-set was still being computed when the forward pass started.
    pub pending_rows: Arc<AtomicUsize>,
}

impl DeviceCounts {
    pub fn get(counter: &Arc<AtomicUsize>) -> usize {
        counter.load(Ordering::Relaxed)
    }
}

pub struct EmulatedDeviceSampler {
    pub inner: CpuBackend,
    pub counts: DeviceCounts,
}

impl Backend for EmulatedDeviceSampler {
    fn forward(&mut self, batch: &[SeqChunk<'_>]) -> mlahost_engine::Result<Logits> {
        self.inner.forward(batch)
    }

    fn cache_geometry(&self) -> CacheGeometry {
        self.inner.cache_geometry()
    }

    fn forward_sampled(&mut self, batch: &[SeqChunk<'_>], requests: &mut [SampleRequest<'_>]) -> mlahost_engine::Result<Option<Vec<DeviceSample>>> {
        self.counts.calls.fetch_add(1, Ordering::Relaxed);
        let logits = self.inner.forward(batch)?;
        let rows = (0..batch.len()).filter_map(|i| logits.last_of(i));
        let c = &self.counts;
        Ok(Some(
            rows.zip(requests.iter_mut())
                .map(|(row, r)| {
                    if matches!(r.allowed, AllowSet::Pending(_)) {
                        c.pending_rows.fetch_add(1, Ordering::Relaxed);
                    }
                    if r.allowed.get().is_some() {
                        c.masked_rows.fetch_add(1, Ordering::Relaxed);
                    }
                    // the host's own decision (allow-set, processors, penalties, draw)
                    let s = sample_row(row, r.prompt, r.output, r.params, r.allowed.get(), r.top_logprobs, r.rng);
                    DeviceSample { token: s.token, logprob: s.logprob, top: s.top }
                })
                .collect(),
        ))
    }
}
