//! Buffers of the FP8 linears, beside the workspace: the quantized activation of the GEMM
//! being run, the split-k partials and the skinny GEMM's tile counters (sized by
//! `capacity::fp8_scratch_bytes`, the plan's figure).

use crate::blas_lt::BlockScaledFp8;
use crate::gpu::{DeviceBuffer, Gpu};
use crate::kernels::fp8::Fp8Act;
use crate::kernels::View;
use crate::Result;
use mlahost_engine::capacity;
use mlahost_engine::ModelConfig;
use std::sync::Arc;

pub struct Fp8Scratch {
    pub tokens: usize,
    pub codes: DeviceBuffer,
    pub scales: DeviceBuffer,
    pub part: DeviceBuffer,
    /// Zero at rest: each split skinny GEMM's last CTA resets its tile's counter.
    pub counters: DeviceBuffer,
    /// cuBLASLt's block-scaled FP8 matmul for the dense linears the skinny kernel does not take:
    /// opt-in (`MLAHOST_FP8_CUBLASLT=1`, on Hopper with the library present) until its forward
    /// path has been checked end to end on a GPU.
    pub lt: Option<BlockScaledFp8>,
}

const _: () = assert!(crate::kernels::fp8::SKINNY_COUNTERS * 4 == capacity::FP8_TILE_COUNTER_BYTES as usize);
const _: () = assert!(crate::blas_lt::WORKSPACE_BYTES == capacity::FP8_LT_WORKSPACE_BYTES as usize);

fn open_lt(gpu: &Arc<Gpu>) -> Option<BlockScaledFp8> {
    if !crate::blas_lt::turned_on() {
        return None;
    }
    match BlockScaledFp8::new(gpu) {
        Ok(lt) => {
            tracing::info!("cuBLASLt FP8 matmul on (MLAHOST_FP8_CUBLASLT=0 turns it off): the dense FP8 linears from 16 rows");
            Some(lt)
        }
        Err(e) => {
            tracing::info!(reason = %e, "cuBLASLt FP8 matmul unavailable: the FP8 linears use mlahost's kernels at every size");
            None
        }
    }
}

impl Fp8Scratch {
    /// Grows to `tokens` (next power of two) when needed; returns whether the buffers moved.
    pub fn ensure(this: &mut Option<Self>, gpu: &Arc<Gpu>, cfg: &ModelConfig, tokens: usize) -> Result<bool> {
        if this.as_ref().is_some_and(|s| s.tokens >= tokens) {
            return Ok(false);
        }
        let tokens = tokens.max(1).next_power_of_two();
        let lt = match this.take() {
            Some(old) => old.lt,
            None => open_lt(gpu),
        };
        // the last entry is cuBLASLt's workspace, which `lt` owns
        let [codes, scales, part, counters, _] = capacity::fp8_scratch_buffers(cfg, tokens);
        let counters = DeviceBuffer::alloc(gpu, counters as usize)?;
        counters.fill_bytes(0)?;
        *this = Some(Self {
            tokens,
            codes: DeviceBuffer::alloc(gpu, codes as usize)?,
            scales: DeviceBuffer::alloc(gpu, scales as usize)?,
            part: DeviceBuffer::alloc(gpu, part as usize)?,
            counters,
            lt,
        });
        Ok(true)
    }

    pub fn act(&self) -> Fp8Act {
        Fp8Act { codes: View::of(&self.codes), scales: View::of(&self.scales) }
    }
}
