//! Activation buffers for one forward pass, sized for a token capacity and grown (to the next
//! power of two) when a batch needs more. Kept between steps so CUDA graphs can replay on them.

use crate::gpu::{DeviceBuffer, Gpu};
use crate::kernels::View;
use crate::Result;
use mlahost_engine::capacity::{self, WorkspaceLayout};
use mlahost_engine::ModelConfig;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capacity {
    pub tokens: usize,
    pub rows: usize,
    pub meta: usize,
    pub partial_rows: usize,
}

impl Capacity {
    pub(crate) fn covers(&self, need: &Capacity) -> bool {
        self.tokens >= need.tokens && self.rows >= need.rows && self.meta >= need.meta && self.partial_rows >= need.partial_rows
    }

    fn grown(&self, need: &Capacity) -> Capacity {
        let up = |have: usize, want: usize| if have >= want { have } else { want.next_power_of_two().max(16) };
        Capacity {
            tokens: up(self.tokens, need.tokens),
            rows: up(self.rows, need.rows),
            meta: up(self.meta, need.meta),
            partial_rows: up(self.partial_rows, need.partial_rows),
        }
    }
}

/// The activation buffers (named by `WorkspaceLayout`, sized by `capacity::workspace_buffers`)
/// and the capacity they were sized for.
pub struct Workspace {
    pub cap: Capacity,
    buffers: WorkspaceLayout<DeviceBuffer>,
}

impl std::ops::Deref for Workspace {
    type Target = WorkspaceLayout<DeviceBuffer>;
    fn deref(&self) -> &Self::Target {
        &self.buffers
    }
}

impl std::ops::DerefMut for Workspace {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.buffers
    }
}

impl Workspace {
    /// Bytes of every buffer.
    pub fn sizes(cfg: &ModelConfig, cap: Capacity) -> WorkspaceLayout<u64> {
        capacity::workspace_buffers(cfg, cap.tokens, cap.rows, cap.meta, cap.partial_rows)
    }

    pub fn new(gpu: &Arc<Gpu>, cfg: &ModelConfig, cap: Capacity) -> Result<Self> {
        let buffers = Self::sizes(cfg, cap).try_map(|bytes| DeviceBuffer::alloc(gpu, bytes as usize))?;
        // The decode kernels' split-arrival words: zeroed here, left zero by every launch.
        buffers.sync.fill_bytes(0)?;
        // The streaming linear's tile counters: the same rule.
        buffers.stream_counters.fill_bytes(0)?;
        Ok(Self { cap, buffers })
    }

    /// Grows the buffers when `need` exceeds the capacity; returns whether they moved.
    pub fn ensure(this: &mut Option<Self>, gpu: &Arc<Gpu>, cfg: &ModelConfig, need: Capacity) -> Result<bool> {
        let cap = match this {
            Some(w) if w.cap.covers(&need) => return Ok(false),
            Some(w) => w.cap.grown(&need),
            None => Capacity::default().grown(&need),
        };
        *this = None; // free the old buffers before allocating the new ones
        *this = Some(Self::new(gpu, cfg, cap)?);
        Ok(true)
    }

    /// A view of the i32 metadata starting at element `at`.
    pub fn meta_at(&self, at: usize) -> View {
        View::of(&self.meta).at(at * 4)
    }
}

/// The capacity the backend starts with for a scheduler budget (the figure `plan` uses).
pub fn initial_capacity(max_batched_tokens: usize, max_seqs: usize) -> Capacity {
    let (tokens, rows) = (max_batched_tokens.max(1), max_seqs.max(1));
    Capacity { tokens, rows, meta: capacity::workspace_meta(tokens, rows), partial_rows: 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_counts_exactly_the_workspace_the_backend_allocates() {
        for name in ["tiny-v2-lite", "tiny-v2", "tiny-v3-fp8"] {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures").join(name);
            let cfg = ModelConfig::from_file(&dir.join("config.json")).expect("config");
            for (t, s) in [(1, 1), (2048, 256), (8192, 64)] {
                let ours: u64 = Workspace::sizes(&cfg, initial_capacity(t, s)).named().into_iter().map(|(_, &b)| b).sum();
                assert_eq!(ours, mlahost_engine::capacity::workspace_bytes(&cfg, t, s), "{name} at {t} tokens, {s} rows");
            }
        }
    }
}
