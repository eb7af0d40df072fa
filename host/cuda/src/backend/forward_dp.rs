//! The MoE layer of one rank under data-parallel attention with expert parallelism: each
//! attention group holds only its own sequences' tokens, while the routed experts are spread
//! over every rank of the instance. Every group's MoE input rows are gathered on every rank,
//! each rank runs the experts it holds over all of them, the outputs are summed over the
//! instance and each group's first rank adds its own rows into its residual. With one rank per
//! group and groups of similar size (`DpMoe::slots`, where the rank group allows it), each rank
//! owns an equal slot of rows (its tokens, then zeros): all-gather in, reduce-scatter out. Otherwise the rows are packed: a sum
//! over the instance of a zeroed buffer into which each group's first rank copied its rows at
//! the group's offset, in and out (two all-reduces, twice the bytes). The shared experts stay with the group (its tensor-parallel ranks) and run over its
//! own rows. The CPU reference is `engine/src/cpu/dp_experts.rs`.

use super::dp_moe::DpMoe;
use super::forward::Forward;
use crate::kernels::View;
use crate::module::Arg;
use crate::weights::{GpuFfn, GpuMoe};
use crate::Result;

fn blocks(n: usize) -> u32 {
    n.div_ceil(256).clamp(1, 65535) as u32
}

impl Forward<'_> {
    /// The MoE layer of a rank with `t` tokens of its own (the shared experts first: they read
    /// the group's rows of `ws.h`, which the exchange then overwrites with every group's).
    pub(super) fn moe_dp(&self, l: usize, m: &GpuMoe, dp: DpMoe<'_>) -> Result<()> {
        let t = self.layout.tokens;
        if let Some(shared) = &m.shared {
            self.mlp(shared, t)?;
        }
        self.exchange(l, m, dp, t)
    }

    /// A rank whose group has no tokens this step still meets the others at every MoE layer's
    /// exchange (bringing nothing, adding nothing); attention and the dense layers need no peer
    /// outside the group, whose ranks all skip them alike.
    pub(super) fn exchange_only(&self, dp: DpMoe<'_>) -> Result<()> {
        for (l, layer) in self.w.layers.iter().enumerate() {
            if let GpuFfn::Moe(m) = &layer.ffn {
                self.exchange(l, m, dp, 0)?;
            }
        }
        Ok(())
    }

    fn exchange(&self, l: usize, m: &GpuMoe, dp: DpMoe<'_>, t: usize) -> Result<()> {
        let (ws, hidden) = (self.ws, self.cfg.hidden_size);
        let n = dp.total * hidden;
        let row = |r: usize| (r * hidden * 4) as u64;
        // gather every group's f32 rows, staged in the experts' output buffer (free until the
        // experts run, and at least tokens x hidden f32)
        let stage = &ws.expert_out;
        if dp.slots {
            // this rank's slot: its rows, then zero rows up to the slot's size
            let slot = dp.total / dp.world.world();
            if dp.offset != dp.world.rank() * slot || t > slot {
                return Err(crate::CudaError::launch("moe exchange", format!("rows {t} at {} are not rank {}'s slot of {slot}", dp.offset, dp.world.rank())));
            }
            dp.gpu.zero(stage.ptr() + row(dp.offset + t), (slot - t) * hidden * 4)?;
            if t > 0 {
                dp.gpu.copy_device(stage.ptr() + row(dp.offset), ws.h32.ptr(), t * hidden * 4)?;
            }
            dp.world.all_gather(self.k, dp.gpu, View::of(stage), slot * hidden)?;
        } else {
            dp.gpu.zero(stage.ptr(), n * 4)?;
            if dp.leader && t > 0 {
                dp.gpu.copy_device(stage.ptr() + row(dp.offset), ws.h32.ptr(), t * hidden * 4)?;
            }
            dp.world.all_reduce_sum(self.k, dp.gpu, View::of(stage), n)?;
        }
        dp.gpu.copy_device(ws.h32.ptr(), stage.ptr(), n * 4)?;
        self.k.launch_step("f32_to_bf16_rows", (blocks(n), 1, 1), 256, 0, &[Arg::Ptr(ws.h32.ptr()), Arg::Ptr(ws.h.ptr()), Arg::I32(n as i32)])?;
        // this rank's experts over all of them, into h32 (the router has read it by then)
        self.routed(l, m, dp.total, &ws.h32, Some(dp.gpu), None)?;
        if dp.slots {
            dp.world.reduce_scatter_sum(self.k, dp.gpu, View::of(&ws.h32), dp.total / dp.world.world() * hidden)?;
        } else {
            dp.world.all_reduce_sum(self.k, dp.gpu, View::of(&ws.h32), n)?;
        }
        if dp.leader && t > 0 {
            let mine = t * hidden;
            self.k.launch_step("add_f32", (blocks(mine), 1, 1), 256, 0, &[Arg::Ptr(ws.x.ptr()), Arg::Ptr(ws.h32.ptr() + row(dp.offset)), Arg::I32(mine as i32)])?;
        }
        Ok(())
    }
}
