//! The device side of a rank's collectives, in place on the rank's stream: its partial residual
//! stream summed with the other ranks', and (data-parallel attention) the MoE rows gathered
//! from every rank and their results summed back to each. Two implementations: NCCL (one GPU per rank; the
//! calls are captured into the decode graphs like kernels), and an emulation that runs several
//! ranks on ONE GPU, so a split can be checked against one device where only one GPU is lent.
//! The emulation stages every rank's buffer in shared device memory and meets the other ranks
//! on the host between copies and sums, so its steps run eagerly; it is a test backend
//! (`collective_graphs.rs` is the one whose steps replay graphs).

use crate::gpu::{DeviceBuffer, Gpu};
use crate::kernels::View;
use crate::module::{Arg, Kernels};
use crate::nccl::NcclComm;
use crate::{CudaError, Result};
use mlahost_engine::comm::Communicator;
use std::sync::{Arc, Mutex, PoisonError};

/// One rank's end of its group's sums.
pub trait DeviceCollective: Send + Sync {
    fn rank(&self) -> usize;
    fn world(&self) -> usize;
    /// `count` f32 at `buf` (on `gpu`) replaced by their sum over the ranks, in the same bits on
    /// every rank.
    fn all_reduce_sum(&self, k: &Kernels, gpu: &Arc<Gpu>, buf: View, count: usize) -> Result<()>;
    /// In place: `buf` holds `world` slots of `count` f32, this rank's filled at slot `rank`;
    /// afterwards every slot holds its rank's, on every rank.
    fn all_gather(&self, k: &Kernels, gpu: &Arc<Gpu>, buf: View, count: usize) -> Result<()>;
    /// In place: `buf` holds `world` slots of `count` f32; afterwards slot `rank` holds the sum
    /// over the ranks of their slot `rank` (the other slots undefined), in the same bits as the
    /// same sum on any rank.
    fn reduce_scatter_sum(&self, k: &Kernels, gpu: &Arc<Gpu>, buf: View, count: usize) -> Result<()>;
    /// Whether the calls may be captured into a CUDA graph.
    fn capturable(&self) -> bool;
    /// Tells the other ranks this one failed, so none waits for it forever (emulation only:
    /// NCCL ranks that lose a peer fail their own calls).
    fn abandon(&self) {}
    /// Whether a rank gave up waiting for the others on the device (`collective_graphs.rs`; the
    /// step's output is then not to be trusted).
    fn gave_up(&self) -> Result<bool> {
        Ok(false)
    }
}

pub struct NcclCollective {
    comm: NcclComm,
    rank: usize,
    world: usize,
}

impl NcclCollective {
    /// Joins group `id` (`nccl::unique_id` on rank 0) on `gpu`; blocks until every rank joins.
    pub fn join(gpu: &Gpu, id: &[u8], rank: usize, world: usize) -> Result<Self> {
        gpu.bind()?;
        Ok(Self { comm: NcclComm::join(id, rank, world)?, rank, world })
    }
}

impl DeviceCollective for NcclCollective {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world(&self) -> usize {
        self.world
    }
    // profiled like kernels: the time from the stream reaching the call to its end, so a rank
    // waiting for a slower one counts that wait as collective time
    fn all_reduce_sum(&self, _k: &Kernels, gpu: &Arc<Gpu>, buf: View, count: usize) -> Result<()> {
        let ptr = buf.need("all_reduce", "buf", count * 4)?;
        gpu.profiled(|| "nccl all_reduce".into(), || self.comm.all_reduce_sum_f32(ptr, count, gpu.stream.cast()))
    }
    fn all_gather(&self, _k: &Kernels, gpu: &Arc<Gpu>, buf: View, count: usize) -> Result<()> {
        let ptr = buf.need("all_gather", "buf", self.world * count * 4)?;
        gpu.profiled(|| "nccl all_gather".into(), || self.comm.all_gather_f32(ptr, count, self.rank, gpu.stream.cast()))
    }
    fn reduce_scatter_sum(&self, _k: &Kernels, gpu: &Arc<Gpu>, buf: View, count: usize) -> Result<()> {
        let ptr = buf.need("reduce_scatter", "buf", self.world * count * 4)?;
        gpu.profiled(|| "nccl reduce_scatter".into(), || self.comm.reduce_scatter_sum_f32(ptr, count, self.rank, gpu.stream.cast()))
    }
    fn capturable(&self) -> bool {
        true
    }
}

/// Ranks on one GPU: each copies its buffer into its slot of a shared staging buffer, they meet,
/// each sums every slot (in rank order) into its own buffer, they meet again.
pub struct EmulatedCollective {
    host: Arc<dyn Communicator>,
    staging: Arc<Mutex<Option<DeviceBuffer>>>,
}

impl EmulatedCollective {
    /// The `world` ranks' ends (rank 0 first), meeting through `host` (one `LocalGroup`).
    pub fn group(host: Vec<Arc<dyn Communicator>>) -> Vec<Self> {
        let staging = Arc::new(Mutex::new(None));
        host.into_iter().map(|h| Self { host: h, staging: staging.clone() }).collect()
    }

    fn meet(&self) -> Result<()> {
        self.host.all_reduce_sum(&mut []).map_err(CudaError::Engine)
    }

    /// Copies `bytes` at `src` into this rank's slot of a shared staging buffer of `total`
    /// bytes (`world` slots) and returns it once every rank has done the same.
    fn stage(&self, gpu: &Arc<Gpu>, total: usize, src: u64, bytes: usize) -> Result<u64> {
        let rank = self.rank();
        // every rank is done with the staging buffer (each synchronised before leaving the last call)
        self.meet()?;
        let staging_ptr = {
            let mut s = self.staging.lock().unwrap_or_else(PoisonError::into_inner);
            if rank == 0 && s.as_ref().is_none_or(|b| b.bytes() < total) {
                *s = None; // free the old one first
                *s = Some(DeviceBuffer::alloc(gpu, total)?);
            }
            drop(s);
            self.meet()?;
            let s = self.staging.lock().unwrap_or_else(PoisonError::into_inner);
            s.as_ref().map(DeviceBuffer::ptr).ok_or_else(|| CudaError::launch("collective", "no staging buffer"))?
        };
        gpu.copy_device(staging_ptr + (rank * bytes) as u64, src, bytes)?;
        gpu.synchronize()?;
        self.meet()?;
        Ok(staging_ptr)
    }
}

/// `out[i] = sum over s < world of slots[s * stride + i]` for i < n (activation.cu).
fn sum_slots(k: &Kernels, slots: u64, out: u64, world: usize, n: usize, stride: usize) -> Result<()> {
    let blocks = n.div_ceil(256).clamp(1, 65535) as u32;
    k.launch("sum_slots", (blocks, 1, 1), 256, 0, &[Arg::Ptr(slots), Arg::Ptr(out), Arg::I32(world as i32), Arg::I32(n as i32), Arg::I32(stride as i32)])
}

impl DeviceCollective for EmulatedCollective {
    fn rank(&self) -> usize {
        self.host.rank()
    }
    fn world(&self) -> usize {
        self.host.world()
    }

    fn all_reduce_sum(&self, k: &Kernels, gpu: &Arc<Gpu>, buf: View, count: usize) -> Result<()> {
        let world = self.world();
        let bytes = count * 4;
        let ptr = buf.need("all_reduce", "buf", bytes)?;
        let staging = self.stage(gpu, world * bytes, ptr, bytes)?;
        sum_slots(k, staging, ptr, world, count, count)?;
        gpu.synchronize()
    }

    fn all_gather(&self, _k: &Kernels, gpu: &Arc<Gpu>, buf: View, count: usize) -> Result<()> {
        let (rank, world) = (self.rank(), self.world());
        let bytes = count * 4;
        let ptr = buf.need("all_gather", "buf", world * bytes)?;
        let staging = self.stage(gpu, world * bytes, ptr + (rank * bytes) as u64, bytes)?;
        gpu.copy_device(ptr, staging, world * bytes)?;
        gpu.synchronize()
    }

    fn reduce_scatter_sum(&self, k: &Kernels, gpu: &Arc<Gpu>, buf: View, count: usize) -> Result<()> {
        let (rank, world) = (self.rank(), self.world());
        let bytes = count * 4;
        let ptr = buf.need("reduce_scatter", "buf", world * bytes)?;
        // every rank's whole buffer staged; this rank sums slot `rank` of each
        let staging = self.stage(gpu, world * world * bytes, ptr, world * bytes)?;
        sum_slots(k, staging + (rank * bytes) as u64, ptr + (rank * bytes) as u64, world, count, world * count)?;
        gpu.synchronize()
    }

    fn capturable(&self) -> bool {
        false
    }

    fn abandon(&self) {
        self.host.abandon();
    }
}
