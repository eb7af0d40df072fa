//! The model's parameters on the GPU: every matrix in bf16 (f16/f32/fp8 checkpoints are
//! converted at upload), norms and the router in f32, experts stacked per layer so the grouped
//! GEMM can index them.

use crate::gpu::{DeviceBuffer, Gpu, Pod};
use crate::Result;
use mlahost_engine::checkpoint::f32_to_bf16;
use mlahost_engine::config::{ModelConfig, RopeLayout};
use mlahost_engine::rope::Rope;
use mlahost_engine::tensor::{Matrix, Storage};
use mlahost_engine::weights::{FeedForward, ModelWeights, Mlp, Moe, QueryProj};
use std::sync::Arc;

/// A row-major `[rows, cols]` bf16 matrix on the device.
pub struct GpuMatrix {
    pub buf: DeviceBuffer,
    pub rows: usize,
    pub cols: usize,
}

pub enum GpuQuery {
    Direct(GpuMatrix),
    LowRank { a: GpuMatrix, norm: DeviceBuffer, b: GpuMatrix },
}

pub struct GpuAttention {
    pub q: GpuQuery,
    pub kv_a: GpuMatrix,
    pub kv_a_norm: DeviceBuffer,
    pub kv_b: GpuMatrix,
    pub o: GpuMatrix,
}

pub struct GpuMlp {
    pub gate_up: GpuMatrix,
    pub down: GpuMatrix,
}

pub struct GpuMoe {
    /// `[E, hidden]` f32 (routing is decided in f32, as on the CPU).
    pub router: DeviceBuffer,
    pub bias: Option<DeviceBuffer>,
    /// `[E, 2 * inter, hidden]` bf16.
    pub gate_up: DeviceBuffer,
    /// `[E, hidden, inter]` bf16.
    pub down: DeviceBuffer,
    pub inter: usize,
    pub shared: Option<GpuMlp>,
}

pub enum GpuFfn {
    Dense(GpuMlp),
    Moe(GpuMoe),
}

pub struct GpuLayer {
    pub input_norm: DeviceBuffer,
    pub post_attention_norm: DeviceBuffer,
    pub attn: GpuAttention,
    pub ffn: GpuFfn,
}

pub struct GpuWeights {
    pub embed: GpuMatrix,
    pub layers: Vec<GpuLayer>,
    pub norm: DeviceBuffer,
    pub lm_head: GpuMatrix,
    pub inv_freq: DeviceBuffer,
    pub attention_factor: f32,
    pub rope_interleaved: bool,
    pub bytes: u64,
}

fn bf16_data(m: &Matrix) -> std::borrow::Cow<'_, [u16]> {
    match &m.data {
        Storage::Bf16(d) => std::borrow::Cow::Borrowed(d),
        Storage::F32(d) => std::borrow::Cow::Owned(d.iter().map(|&x| f32_to_bf16(x)).collect()),
    }
}

struct Uploader<'a> {
    gpu: &'a Arc<Gpu>,
    bytes: u64,
}

impl Uploader<'_> {
    fn buf<T: Pod>(&mut self, data: &[T]) -> Result<DeviceBuffer> {
        self.bytes += std::mem::size_of_val(data) as u64;
        DeviceBuffer::from_slice(self.gpu, data)
    }

    fn matrix(&mut self, m: &Matrix) -> Result<GpuMatrix> {
        Ok(GpuMatrix { buf: self.buf(&bf16_data(m))?, rows: m.rows, cols: m.cols })
    }

    fn mlp(&mut self, m: &Mlp) -> Result<GpuMlp> {
        Ok(GpuMlp { gate_up: self.matrix(&m.gate_up)?, down: self.matrix(&m.down)? })
    }

    fn moe(&mut self, m: &Moe) -> Result<GpuMoe> {
        let inter = m.experts.first().map_or(0, |e| e.down.cols);
        let mut gate_up = Vec::with_capacity(m.experts.len() * 2 * inter * m.router.cols);
        let mut down = Vec::with_capacity(m.experts.len() * inter * m.router.cols);
        for e in &m.experts {
            gate_up.extend_from_slice(&bf16_data(&e.gate_up));
            down.extend_from_slice(&bf16_data(&e.down));
        }
        Ok(GpuMoe {
            router: self.buf(&m.router.to_f32_vec())?,
            bias: m.score_bias.as_deref().map(|b| self.buf(b)).transpose()?,
            gate_up: self.buf(&gate_up)?,
            down: self.buf(&down)?,
            inter,
            shared: m.shared.as_ref().map(|s| self.mlp(s)).transpose()?,
        })
    }
}

impl GpuWeights {
    pub fn upload(gpu: &Arc<Gpu>, cfg: &ModelConfig, w: &ModelWeights) -> Result<Self> {
        let mut up = Uploader { gpu, bytes: 0 };
        let mut layers = Vec::with_capacity(w.layers.len());
        for l in &w.layers {
            let q = match &l.attn.q {
                QueryProj::Direct(m) => GpuQuery::Direct(up.matrix(m)?),
                QueryProj::LowRank { a, norm, b } => GpuQuery::LowRank { a: up.matrix(a)?, norm: up.buf(norm)?, b: up.matrix(b)? },
            };
            let attn = GpuAttention {
                q,
                kv_a: up.matrix(&l.attn.kv_a)?,
                kv_a_norm: up.buf(&l.attn.kv_a_norm)?,
                kv_b: up.matrix(&l.attn.kv_b)?,
                o: up.matrix(&l.attn.o)?,
            };
            let ffn = match &l.ffn {
                FeedForward::Dense(m) => GpuFfn::Dense(up.mlp(m)?),
                FeedForward::Moe(m) => GpuFfn::Moe(up.moe(m)?),
            };
            layers.push(GpuLayer {
                input_norm: up.buf(&l.input_norm)?,
                post_attention_norm: up.buf(&l.post_attention_norm)?,
                attn,
                ffn,
            });
        }
        let rope = Rope::new(cfg);
        Ok(Self {
            embed: up.matrix(&w.embed)?,
            layers,
            norm: up.buf(&w.norm)?,
            lm_head: up.matrix(&w.lm_head)?,
            inv_freq: up.buf(rope.inv_freq())?,
            attention_factor: rope.attention_factor(),
            rope_interleaved: rope.layout() == RopeLayout::Interleaved,
            bytes: up.bytes,
        })
    }
}
