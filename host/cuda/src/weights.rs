//! The model's parameters on the GPU: the linear layers in bf16, or in block-scaled FP8 (e4m3
//! codes + one f32 scale per 128x128 block, `quant.rs`) when FP8 weights are chosen; embeddings,
//! lm_head and kv_b_proj always in bf16 (kv_b is split per head for the absorbed attention, as
//! vLLM does); norms and the router in f32; experts stacked per layer so the grouped GEMMs can
//! index them.

use crate::gpu::{DeviceBuffer, Gpu, Pod};
use crate::kernels::fp8::Fp8Weight;
use crate::kernels::View;
use crate::quant::{quantize_blocks, BLOCK};
use crate::Result;
use mlahost_engine::checkpoint::f32_to_bf16;
use mlahost_engine::config::{ModelConfig, RopeLayout};
use mlahost_engine::rope::Rope;
use mlahost_engine::tensor::{Matrix, Storage};
use mlahost_engine::weights::{FeedForward, LayerWeights, ModelEnds, ModelWeights, Mlp, Moe, QueryProj, TensorSource};
use std::sync::Arc;

/// A row-major `[rows, cols]` matrix on the device: bf16, or e4m3 codes with `scales`
/// (`[ceil(rows/128), ceil(cols/128)]` f32) when it is stored in FP8.
pub struct GpuMatrix {
    pub buf: DeviceBuffer,
    pub rows: usize,
    pub cols: usize,
    pub scales: Option<DeviceBuffer>,
}

impl GpuMatrix {
    /// The FP8 codes and scales, when stored in FP8.
    pub fn fp8(&self) -> Option<Fp8Weight> {
        self.scales.as_ref().map(|s| Fp8Weight { codes: View::of(&self.buf), scales: View::of(s) })
    }
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
    /// `[L, 2 * inter, hidden]` bf16 or e4m3, for the L experts this GPU holds (`local`).
    pub gate_up: DeviceBuffer,
    /// `[L, hidden, inter]` bf16 or e4m3.
    pub down: DeviceBuffer,
    /// FP8 block scales `[L, ceil(2 inter/128), ceil(hidden/128)]` and `[L, ceil(hidden/128), ceil(inter/128)]`.
    pub scales: Option<(DeviceBuffer, DeviceBuffer)>,
    pub inter: usize,
    /// The router's expert ids whose weights are here: all of them, or an expert-parallel
    /// rank's share.
    pub local: std::ops::Range<usize>,
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
    /// Whether the linear layers (attention projections but kv_b, MLPs, experts) are FP8.
    pub fp8: bool,
    /// Bytes of the FP8 linears (codes + scales); the rest of `bytes` is bf16 / f32.
    pub fp8_bytes: u64,
}

fn bf16_data(m: &Matrix) -> std::borrow::Cow<'_, [u16]> {
    match &m.data {
        Storage::Bf16(d) => std::borrow::Cow::Borrowed(d),
        Storage::F32(d) => std::borrow::Cow::Owned(d.iter().map(|&x| f32_to_bf16(x)).collect()),
        Storage::Fp8(_) => std::borrow::Cow::Owned(m.to_f32_vec().iter().map(|&x| f32_to_bf16(x)).collect()),
    }
}

/// `m` in the GPU's FP8 block format: the checkpoint's own codes and scales when it kept them
/// in 128 x 128 blocks, else quantized here from its values.
fn fp8_blocks(m: &Matrix) -> (std::borrow::Cow<'_, [u8]>, std::borrow::Cow<'_, [f32]>) {
    match &m.data {
        Storage::Fp8(f) if (f.block_rows, f.block_cols) == (BLOCK, BLOCK) => (std::borrow::Cow::Borrowed(&f.codes), std::borrow::Cow::Borrowed(&f.scales)),
        _ => {
            let (codes, scales) = quantize_blocks(&m.to_f32_vec(), m.rows, m.cols);
            (std::borrow::Cow::Owned(codes), std::borrow::Cow::Owned(scales))
        }
    }
}

struct Uploader<'a> {
    gpu: &'a Arc<Gpu>,
    bytes: u64,
    fp8: bool,
    fp8_bytes: u64,
}

impl Uploader<'_> {
    fn buf<T: Pod>(&mut self, data: &[T]) -> Result<DeviceBuffer> {
        self.bytes += std::mem::size_of_val(data) as u64;
        DeviceBuffer::from_slice(self.gpu, data)
    }

    /// Always bf16.
    fn matrix(&mut self, m: &Matrix) -> Result<GpuMatrix> {
        Ok(GpuMatrix { buf: self.buf(&bf16_data(m))?, rows: m.rows, cols: m.cols, scales: None })
    }

    /// FP8 when FP8 weights are chosen, else bf16.
    fn linear(&mut self, m: &Matrix) -> Result<GpuMatrix> {
        if !self.fp8 || m.cols % 16 != 0 {
            return self.matrix(m); // the FP8 GEMM reads 16-byte chunks of each row
        }
        let (codes, scales) = fp8_blocks(m);
        let before = self.bytes;
        let out = GpuMatrix { buf: self.buf(&codes)?, rows: m.rows, cols: m.cols, scales: Some(self.buf(&scales)?) };
        self.fp8_bytes += self.bytes - before;
        Ok(out)
    }

    fn mlp(&mut self, m: &Mlp) -> Result<GpuMlp> {
        Ok(GpuMlp { gate_up: self.linear(&m.gate_up)?, down: self.linear(&m.down)? })
    }

    /// The experts' `pick` matrices stacked: bf16, or FP8 codes and their scales stacked alike.
    fn experts(&mut self, m: &Moe, pick: fn(&Mlp) -> &Matrix) -> Result<(DeviceBuffer, Option<DeviceBuffer>)> {
        let count = m.experts.iter().map(|e| pick(e).rows * pick(e).cols).sum();
        let widths_ok = m.experts.iter().all(|e| e.gate_up.cols % 16 == 0 && e.down.cols % 16 == 0);
        if !self.fp8 || !widths_ok {
            let mut all = Vec::with_capacity(count);
            for e in &m.experts {
                all.extend_from_slice(&bf16_data(pick(e)));
            }
            return Ok((self.buf(&all)?, None));
        }
        let (mut codes, mut scales) = (Vec::with_capacity(count), Vec::new());
        for e in &m.experts {
            let (c, s) = fp8_blocks(pick(e));
            codes.extend_from_slice(&c);
            scales.extend_from_slice(&s);
        }
        let before = self.bytes;
        let out = (self.buf(&codes)?, Some(self.buf(&scales)?));
        self.fp8_bytes += self.bytes - before;
        Ok(out)
    }

    fn moe(&mut self, m: &Moe) -> Result<GpuMoe> {
        if m.experts.is_empty() || m.first_expert + m.experts.len() > m.router.rows {
            return Err(crate::CudaError::Engine(mlahost_engine::EngineError::Layout(format!(
                "experts {}..{} of a router over {}",
                m.first_expert,
                m.first_expert + m.experts.len(),
                m.router.rows
            ))));
        }
        let inter = m.experts.first().map_or(0, |e| e.down.cols);
        let (gate_up, gate_up_scales) = self.experts(m, |e| &e.gate_up)?;
        let (down, down_scales) = self.experts(m, |e| &e.down)?;
        Ok(GpuMoe {
            router: self.buf(&m.router.to_f32_vec())?,
            bias: m.score_bias.as_deref().map(|b| self.buf(b)).transpose()?,
            gate_up,
            down,
            scales: gate_up_scales.zip(down_scales),
            inter,
            local: m.first_expert..m.first_expert + m.experts.len(),
            shared: m.shared.as_ref().map(|s| self.mlp(s)).transpose()?,
        })
    }
}

impl Uploader<'_> {
    fn layer(&mut self, l: &LayerWeights) -> Result<GpuLayer> {
        let q = match &l.attn.q {
            QueryProj::Direct(m) => GpuQuery::Direct(self.linear(m)?),
            QueryProj::LowRank { a, norm, b } => GpuQuery::LowRank { a: self.linear(a)?, norm: self.buf(norm)?, b: self.linear(b)? },
        };
        let attn = GpuAttention {
            q,
            kv_a: self.linear(&l.attn.kv_a)?,
            kv_a_norm: self.buf(&l.attn.kv_a_norm)?,
            kv_b: self.matrix(&l.attn.kv_b)?,
            o: self.linear(&l.attn.o)?,
        };
        let ffn = match &l.ffn {
            FeedForward::Dense(m) => GpuFfn::Dense(self.mlp(m)?),
            FeedForward::Moe(m) => GpuFfn::Moe(self.moe(m)?),
        };
        Ok(GpuLayer { input_norm: self.buf(&l.input_norm)?, post_attention_norm: self.buf(&l.post_attention_norm)?, attn, ffn })
    }

    fn finish(mut self, cfg: &ModelConfig, layers: Vec<GpuLayer>, ends: Ends<'_>) -> Result<GpuWeights> {
        let rope = Rope::new(cfg);
        Ok(GpuWeights {
            embed: self.matrix(ends.embed)?,
            layers,
            norm: self.buf(ends.norm)?,
            lm_head: self.matrix(ends.lm_head)?,
            inv_freq: self.buf(rope.inv_freq())?,
            attention_factor: rope.attention_factor(),
            rope_interleaved: rope.layout() == RopeLayout::Interleaved,
            bytes: self.bytes,
            fp8: self.fp8,
            fp8_bytes: self.fp8_bytes,
        })
    }
}

/// The parameters outside the layers, borrowed from wherever they are held (ranks share the
/// embedding and norm, and each has its own lm_head rows).
#[derive(Clone, Copy)]
pub struct Ends<'a> {
    pub embed: &'a Matrix,
    pub norm: &'a [f32],
    pub lm_head: &'a Matrix,
}

impl<'a> From<&'a ModelEnds> for Ends<'a> {
    fn from(e: &'a ModelEnds) -> Self {
        Self { embed: &e.embed, norm: &e.norm, lm_head: &e.lm_head }
    }
}

impl<'a> From<&'a ModelWeights> for Ends<'a> {
    fn from(w: &'a ModelWeights) -> Self {
        Self { embed: &w.embed, norm: &w.norm, lm_head: &w.lm_head }
    }
}

/// Builds one GPU's weights a layer at a time, so a loader can hand each layer over (and drop
/// its host copy) before reading the next.
pub struct WeightsBuilder<'a> {
    up: Uploader<'a>,
    layers: Vec<GpuLayer>,
}

impl<'a> WeightsBuilder<'a> {
    /// `fp8`: store the linear layers in block-scaled FP8 (the checkpoint's blocks when it
    /// kept them, quantized here otherwise).
    pub fn new(gpu: &'a Arc<Gpu>, fp8: bool) -> Self {
        Self { up: Uploader { gpu, bytes: 0, fp8, fp8_bytes: 0 }, layers: Vec::new() }
    }

    pub fn push_layer(&mut self, l: &LayerWeights) -> Result<()> {
        let layer = self.up.layer(l)?;
        self.layers.push(layer);
        Ok(())
    }

    pub fn finish(self, cfg: &ModelConfig, ends: Ends<'_>) -> Result<GpuWeights> {
        self.up.finish(cfg, self.layers, ends)
    }
}

impl GpuWeights {
    /// From the whole model in host memory.
    pub fn upload(gpu: &Arc<Gpu>, cfg: &ModelConfig, w: &ModelWeights, fp8: bool) -> Result<Self> {
        let mut b = WeightsBuilder::new(gpu, fp8);
        for l in &w.layers {
            b.push_layer(l)?;
        }
        b.finish(cfg, w.into())
    }

    /// Read from `src` a layer at a time (host memory holds one layer, not the model).
    pub fn stream(gpu: &Arc<Gpu>, cfg: &ModelConfig, src: &dyn TensorSource, fp8: bool) -> Result<Self> {
        let mut b = WeightsBuilder::new(gpu, fp8);
        for i in 0..cfg.num_hidden_layers {
            b.push_layer(&ModelWeights::load_layer(src, cfg, i)?)?;
        }
        b.finish(cfg, (&ModelEnds::load(src, cfg)?).into())
    }
}
