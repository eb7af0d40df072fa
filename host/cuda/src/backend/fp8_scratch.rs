//! Buffers of the FP8 linears, beside the workspace: the quantized activation of the GEMM
//! being run, the split-k partials and the skinny GEMM's tile counters (sized by
//! `capacity::fp8_scratch_bytes`, the plan's figure).

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
}

const _: () = assert!(crate::kernels::fp8::SKINNY_COUNTERS * 4 == capacity::FP8_TILE_COUNTER_BYTES as usize);

impl Fp8Scratch {
    /// Grows to `tokens` (next power of two) when needed; returns whether the buffers moved.
    pub fn ensure(this: &mut Option<Self>, gpu: &Arc<Gpu>, cfg: &ModelConfig, tokens: usize) -> Result<bool> {
        if this.as_ref().is_some_and(|s| s.tokens >= tokens) {
            return Ok(false);
        }
        let tokens = tokens.max(1).next_power_of_two();
        *this = None;
        let [codes, scales, part, counters] = capacity::fp8_scratch_buffers(cfg, tokens);
        let counters = DeviceBuffer::alloc(gpu, counters as usize)?;
        counters.fill_bytes(0)?;
        *this = Some(Self {
            tokens,
            codes: DeviceBuffer::alloc(gpu, codes as usize)?,
            scales: DeviceBuffer::alloc(gpu, scales as usize)?,
            part: DeviceBuffer::alloc(gpu, part as usize)?,
            counters,
        });
        Ok(true)
    }

    pub fn act(&self) -> Fp8Act {
        Fp8Act { codes: View::of(&self.codes), scales: View::of(&self.scales) }
    }
}
