//! Emulated ranks on one GPU whose collectives can be captured into CUDA graphs, as NCCL's can.
//! The ranks share one context, so each reads and writes its peers' buffers directly. They meet
//! through counters on the device (kernels/cuda/rank_barrier.cu) instead of on the host, and
//! every peer address is read from the group's table at run time: a rank's graph never bakes in
//! another rank's buffer. It checks on one GPU what only NCCL ranks did before: decode steps
//! replayed from graphs with collectives inside (tensor parallelism, data-parallel steps in
//! slots). A test backend like `EmulatedCollective`. A rank's stream waits on the GPU while it
//! meets the others, so every rank needs a hardware queue of its own (CUDA_DEVICE_MAX_CONNECTIONS,
//! which gpu-check raises before the first context). Freeing device memory waits for the whole
//! device, where a peer may be spinning until this rank's next collective: the ranks park the
//! buffers and graphs a step replaces and the group frees them once every rank has issued it
//! (`CudaBackend::park_frees`; the workspace and graphs; FP8 scratch growth is not parked).

use crate::collective::DeviceCollective;
use crate::gpu::{DeviceBuffer, Gpu};
use crate::kernels::View;
use crate::module::{Arg, Kernels};
use crate::Result;
use std::sync::Arc;

/// The group's words on the device.
struct GroupWords {
    /// [arrivals so far, set when a rank gave up]
    words: DeviceBuffer,
    /// Each rank's buffer address for the collective under way.
    table: DeviceBuffer,
}

pub struct GraphEmulatedCollective {
    rank: usize,
    world: usize,
    group: Arc<GroupWords>,
    /// This rank's count of meetings (u64, on the device: graph replays advance it).
    epoch: DeviceBuffer,
}

fn blocks(n: usize) -> u32 {
    n.div_ceil(256).clamp(1, 1024) as u32
}

impl GraphEmulatedCollective {
    /// `world` ranks' ends (rank 0 first), their words allocated on `gpu` (the ranks' device).
    pub fn group(gpu: &Arc<Gpu>, world: usize) -> Result<Vec<Self>> {
        let group = Arc::new(GroupWords { words: DeviceBuffer::from_slice(gpu, &[0i64; 2])?, table: DeviceBuffer::from_slice(gpu, &vec![0i64; world])? });
        (0..world).map(|rank| Ok(Self { rank, world, group: group.clone(), epoch: DeviceBuffer::from_slice(gpu, &[0i64])? })).collect()
    }

    /// Waits on the device until every rank has arrived here, after publishing `buf` as this
    /// rank's buffer when given.
    fn meet(&self, k: &Kernels, buf: Option<u64>) -> Result<()> {
        let table = if buf.is_some() { self.group.table.ptr() } else { 0 };
        let args = [Arg::Ptr(self.group.words.ptr()), Arg::Ptr(self.epoch.ptr()), Arg::Ptr(table), Arg::I32(self.rank as i32), Arg::Ptr(buf.unwrap_or(0)), Arg::I32(self.world as i32)];
        k.launch("rank_meet", (1, 1, 1), 32, 0, &args)
    }

    /// Publish, meet, run `kernel` over the table, meet again.
    fn collective(&self, k: &Kernels, kernel: &'static str, buf: u64, n: usize, threads: usize) -> Result<()> {
        self.meet(k, Some(buf))?;
        let args = [Arg::Ptr(self.group.table.ptr()), Arg::I32(self.rank as i32), Arg::I32(self.world as i32), Arg::I32(n as i32)];
        k.launch(kernel, (blocks(threads), 1, 1), 256, 0, &args)?;
        self.meet(k, None)
    }
}

impl DeviceCollective for GraphEmulatedCollective {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world(&self) -> usize {
        self.world
    }
    fn all_reduce_sum(&self, k: &Kernels, _gpu: &Arc<Gpu>, buf: View, count: usize) -> Result<()> {
        let ptr = buf.need("all_reduce", "buf", count * 4)?;
        // each rank sums its 1/world of the elements
        self.collective(k, "rank_all_reduce", ptr, count, count.div_ceil(self.world))
    }
    fn all_gather(&self, k: &Kernels, _gpu: &Arc<Gpu>, buf: View, count: usize) -> Result<()> {
        let ptr = buf.need("all_gather", "buf", self.world * count * 4)?;
        self.collective(k, "rank_all_gather", ptr, count, count)
    }
    fn reduce_scatter_sum(&self, k: &Kernels, _gpu: &Arc<Gpu>, buf: View, count: usize) -> Result<()> {
        let ptr = buf.need("reduce_scatter", "buf", self.world * count * 4)?;
        self.collective(k, "rank_reduce_scatter", ptr, count, count)
    }
    fn capturable(&self) -> bool {
        true
    }
    /// The others stop waiting for this rank (their step's output is then garbage, and this
    /// rank's error fails the step).
    fn abandon(&self) {
        let _ = self.group.words.write(8, &[1i64]);
    }
    fn gave_up(&self) -> Result<bool> {
        let mut flag = [0i64];
        self.group.words.read(8, &mut flag)?;
        Ok(flag[0] != 0)
    }
}
