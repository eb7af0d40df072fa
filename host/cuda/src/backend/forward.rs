//! One forward pass over a laid-out batch: embedding, the layers, the final norm and lm_head.

use super::fp8_scratch::Fp8Scratch;
use super::layout::BatchLayout;
use super::workspace::Workspace;
use crate::blas::{Batch, Blas, Dtype, Linear, Operand};
use crate::collective::DeviceCollective;
use crate::gpu::{DeviceBuffer, Gpu};
use crate::kernels::fp8::{self, OutMode};
use crate::kernels::absorb;
use crate::kernels::decode::{self, DecodeIo, DecodeShape, GenericIo, GenericShape};
use crate::kernels::layers::{self, CacheWrite, RmsNorm, RopeArgs, RopeQuery};
use crate::kernels::moe::{self, Dispatch, Grouped, RouteParams};
use crate::kernels::moe_router;
use crate::kernels::stream;
use crate::kernels::View;
use crate::module::Kernels;
use crate::weights::{GpuAttention, GpuFfn, GpuLayer, GpuMatrix, GpuMlp, GpuMoe, GpuQuery, GpuWeights};
use crate::Result;
use mlahost_engine::config::ModelConfig;
use mlahost_engine::CacheGeometry;

/// q_a_layernorm and kv_a_layernorm use the default eps in the reference code (as on the CPU).
const LATENT_NORM_EPS: f32 = 1e-6;

pub struct Forward<'a> {
    pub cfg: &'a ModelConfig,
    pub k: &'a Kernels,
    pub blas: &'a Blas,
    pub w: &'a GpuWeights,
    pub ws: &'a Workspace,
    pub cache: &'a [DeviceBuffer],
    pub geometry: CacheGeometry,
    pub fp8: bool,
    pub layout: &'a BatchLayout,
    /// Where each MoE layer's expert ids are copied (`RouteLog`), when routes are recorded.
    pub route_log: Option<&'a RouteLog>,
    /// The FP8 linears' scratch (present when the weights are FP8).
    pub quant: Option<&'a Fp8Scratch>,
    pub num_sms: usize,
    /// Set for one rank of a tensor-parallel group: its attention and MLP outputs are partial
    /// sums over its heads and MLP columns, summed with the other ranks' into the residual.
    pub tp: Option<TpRank<'a>>,
    /// Set under data-parallel attention with expert parallelism: the MoE layers exchange rows
    /// with the other attention groups (`forward_dp`).
    pub dp: Option<super::dp_moe::DpMoe<'a>>,
}

/// A rank's collectives and the GPU its stream belongs to.
#[derive(Clone, Copy)]
pub struct TpRank<'a> {
    pub coll: &'a dyn DeviceCollective,
    pub gpu: &'a std::sync::Arc<Gpu>,
}

/// The expert ids of every MoE layer of the last forward, `[layer][token capacity][top-k]` i32
/// (device token order), for the end-to-end checks' routing comparison.
pub struct RouteLog {
    pub buf: DeviceBuffer,
    pub tokens: usize,
}

fn bf16(buf: &DeviceBuffer, ld: usize) -> Operand {
    Operand { ptr: buf.ptr(), dtype: Dtype::Bf16, ld }
}
fn f32op(buf: &DeviceBuffer, ld: usize) -> Operand {
    Operand { ptr: buf.ptr(), dtype: Dtype::F32, ld }
}
fn weight(m: &GpuMatrix) -> Operand {
    Operand { ptr: m.buf.ptr(), dtype: Dtype::Bf16, ld: m.cols }
}
fn v(buf: &DeviceBuffer) -> View {
    View::of(buf)
}

impl Forward<'_> {
    pub fn run(&self) -> Result<()> {
        let (cfg, ws, t) = (self.cfg, self.ws, self.layout.tokens);
        let hidden = cfg.hidden_size;
        layers::embedding(self.k, ws.meta_at(self.layout.ids_at), v(&self.w.embed.buf), cfg.vocab_size, v(&ws.x), t, hidden)?;
        // whether ws.h already holds the layer's input norm (written by the layer before's combine)
        let mut normed = false;
        for (l, layer) in self.w.layers.iter().enumerate() {
            let next_norm = self.w.layers.get(l + 1).map(|n| &n.input_norm);
            normed = self.layer(l, layer, normed, next_norm)?;
        }
        let rows = self.layout.logit_rows;
        if rows == 0 {
            return Ok(());
        }
        let gathered = Some((ws.meta_at(self.layout.rows_at), t));
        layers::rmsnorm_residual(self.k, RmsNorm { rows: gathered, ..RmsNorm::rows(v(&ws.x), v(&self.w.norm), v(&ws.final_h), rows, hidden, cfg.rms_norm_eps) })?;
        let (n, k) = (cfg.vocab_size, hidden);
        match self.tp {
            // Vocabulary-parallel lm_head: each rank writes its rows' logits into its columns of
            // a zeroed buffer and the sum over the ranks assembles the whole (x + 0 is exact).
            Some(tp) if self.w.lm_head.rows < n => {
                let own = mlahost_engine::shard::vocab_range(n, tp.coll.rank(), tp.coll.world());
                if own.len() != self.w.lm_head.rows {
                    return Err(crate::CudaError::launch("lm_head", "this rank's vocabulary rows do not match its share"));
                }
                tp.gpu.zero(ws.logits.ptr(), rows * n * 4)?;
                let c = Operand { ptr: ws.logits.ptr() + (own.start * 4) as u64, dtype: Dtype::F32, ld: n };
                if !own.is_empty() {
                    self.blas.linear(Linear { m: rows, n: own.len(), k, a: bf16(&ws.final_h, k), w: weight(&self.w.lm_head), c, beta: 0.0 })?;
                }
                tp.coll.all_reduce_sum(self.k, tp.gpu, v(&ws.logits), rows * n)
            }
            _ => self.blas.linear(Linear { m: rows, n, k, a: bf16(&ws.final_h, k), w: weight(&self.w.lm_head), c: f32op(&ws.logits, n), beta: 0.0 }),
        }
    }

    /// One layer; `normed`: ws.h already holds its input norm. Returns whether it wrote the next
    /// layer's (`next_norm`) into ws.h.
    fn layer(&self, l: usize, layer: &GpuLayer, normed: bool, next_norm: Option<&DeviceBuffer>) -> Result<bool> {
        let (cfg, ws, t) = (self.cfg, self.ws, self.layout.tokens);
        let hidden = cfg.hidden_size;
        let moe = matches!(layer.ffn, GpuFfn::Moe(_));
        if !normed {
            layers::rmsnorm_residual(self.k, RmsNorm::rows(v(&ws.x), v(&layer.input_norm), v(&ws.h), t, hidden, cfg.rms_norm_eps))?;
        }
        self.attention(l, &layer.attn)?;
        let h32 = moe.then(|| v(&ws.h32));
        let norm = RmsNorm::rows(v(&ws.x), v(&layer.post_attention_norm), v(&ws.h), t, hidden, cfg.rms_norm_eps);
        layers::rmsnorm_residual(self.k, RmsNorm { out_f32: h32, ..norm })?;
        self.begin_partial()?;
        let next_normed = match &layer.ffn {
            GpuFfn::Dense(m) => self.mlp(m, t).map(|_| false)?,
            GpuFfn::Moe(m) => match self.dp {
                Some(dp) => self.moe_dp(l, m, dp).map(|_| false)?,
                None => self.moe(l, m, next_norm)?,
            },
        };
        self.end_partial()?;
        Ok(next_normed)
    }

    /// Before a rank adds its partial output into the residual: every rank but 0 starts from
    /// zero, so summing the ranks' residuals (`end_partial`) adds the residual once and every
    /// rank's part. Nothing reads the residual between the two (the norm before them did).
    fn begin_partial(&self) -> Result<()> {
        match self.tp {
            Some(tp) if tp.coll.rank() != 0 => tp.gpu.zero(self.ws.x.ptr(), self.layout.tokens * self.cfg.hidden_size * 4),
            _ => Ok(()),
        }
    }

    /// The ranks' residuals summed in place on every rank.
    fn end_partial(&self) -> Result<()> {
        match self.tp {
            Some(tp) => tp.coll.all_reduce_sum(self.k, tp.gpu, v(&self.ws.x), self.layout.tokens * self.cfg.hidden_size),
            None => Ok(()),
        }
    }

    /// `c[m, :] (mode) a[m, :] · w^T` for a contiguous bf16 `a`: cuBLAS for bf16 weights; for FP8
    /// ones as `fp8::choose_path` says: cuBLASLt's block-scaled matmul (where it is on and has an
    /// algorithm), the skinny kernel for large weights at up to 16 rows (it quantizes inside),
    /// else `a` quantized per row per 128 channels and our tiled FP8 GEMM.
    fn linear(&self, m: usize, a: &DeviceBuffer, w: &GpuMatrix, c: &DeviceBuffer, mode: OutMode) -> Result<()> {
        let (n, k) = (w.rows, w.cols);
        match (w.fp8(), self.quant) {
            (Some(fw), Some(q)) => {
                let lt = q.lt.as_ref().filter(|lt| lt.supports(m, n, k, mode.lt()));
                match (fp8::choose_path(m, n, k, lt.is_some()), lt) {
                    (fp8::Fp8Path::CublasLt, Some(lt)) => fp8::lt_linear(self.k, lt, v(a), q.act(), fw, v(c), mode, m, n, k),
                    (fp8::Fp8Path::Skinny, _) => {
                        let splits = fp8::skinny_splits(false, m, n, k, self.num_sms, q.part.bytes());
                        let (part, counters) = (v(&q.part), v(&q.counters));
                        fp8::skinny(self.k, fp8::Skinny { x: fp8::SkinnyInput::Bf16(v(a)), w: fw, c: v(c), mode, part, counters, splits, m, n, k })
                    }
                    _ => {
                        fp8::quant_act(self.k, v(a), false, q.act(), m, k)?;
                        let splits = fp8::splits_for(m, n, k, self.num_sms, q.part.bytes());
                        fp8::gemm(self.k, fp8::Gemm { a: q.act(), w: fw, c: v(c), mode, part: v(&q.part), splits, m, n, k })
                    }
                }
            }
            (Some(_), None) => Err(crate::CudaError::launch("fp8_gemm", "FP8 weights without the FP8 scratch")),
            (None, _) if stream::use_for(m) => {
                let splits = stream::splits_for(m, n, k, self.num_sms, self.ws.stream_part.bytes());
                let (part, counters) = (v(&self.ws.stream_part), v(&self.ws.stream_counters));
                stream::linear(self.k, stream::Linear { a: v(a), w: v(&w.buf), c: v(c), mode, second: None, glu: false, part, counters, splits, m, n, k })
            }
            (None, _) => {
                let (out, beta) = match mode {
                    OutMode::Bf16 => (bf16(c, n), 0.0),
                    OutMode::F32 => (f32op(c, n), 0.0),
                    OutMode::F32Add => (f32op(c, n), 1.0),
                };
                self.blas.linear(Linear { m, n, k, a: bf16(a, k), w: weight(w), c: out, beta })
            }
        }
    }

    /// Two linears of the same bf16 rows `a` in one `linear_stream` launch, where the forward
    /// pass streams linears of `m` rows and both weights are bf16; false (nothing launched)
    /// otherwise.
    fn linear_pair(&self, m: usize, a: &DeviceBuffer, first: (&GpuMatrix, &DeviceBuffer, OutMode), second: (&GpuMatrix, &DeviceBuffer, OutMode)) -> Result<bool> {
        let ((w1, c1, mode1), (w2, c2, mode2)) = (first, second);
        if !stream::use_for(m) || w1.fp8().is_some() || w2.fp8().is_some() || w1.cols != w2.cols {
            return Ok(false);
        }
        let k = w1.cols;
        let s = stream::Second { w: v(&w2.buf), c: v(c2), mode: mode2, n: w2.rows };
        let mut g = stream::Linear { a: v(a), w: v(&w1.buf), c: v(c1), mode: mode1, second: Some(s), glu: false, part: v(&self.ws.stream_part), counters: v(&self.ws.stream_counters), splits: 1, m, n: w1.rows, k };
        g.splits = stream::splits_for(m, g.columns(), k, self.num_sms, self.ws.stream_part.bytes());
        stream::linear(self.k, g)?;
        Ok(true)
    }

    fn rope(&self) -> RopeArgs {
        RopeArgs {
            inv_freq: v(&self.w.inv_freq),
            attention_factor: self.w.attention_factor,
            rope_dim: self.cfg.qk_rope_head_dim,
            interleaved: self.w.rope_interleaved,
        }
    }

    fn attention(&self, l: usize, a: &GpuAttention) -> Result<()> {
        let (cfg, ws, t, k) = (self.cfg, self.ws, self.layout.tokens, self.k);
        let (heads, qk, nope, vd) = (cfg.num_attention_heads, cfg.qk_head_dim(), cfg.qk_nope_head_dim, cfg.v_head_dim);
        let (kv_lora, d) = (cfg.kv_lora_rank, cfg.latent_dim());
        // queries (or their low-rank half) and the new tokens' latents, both from h: one launch
        // where both stream
        let (wq, q_out, q_mode) = match &a.q {
            GpuQuery::Direct(wq) => (wq, &ws.q_in, OutMode::Bf16),
            GpuQuery::LowRank { a: wa, .. } => (wa, &ws.qa, OutMode::F32),
        };
        let paired = self.linear_pair(t, &ws.h, (wq, q_out, q_mode), (&a.kv_a, &ws.kv, OutMode::F32))?;
        if !paired {
            self.linear(t, &ws.h, wq, q_out, q_mode)?;
        }
        if let GpuQuery::LowRank { a: wa, norm, b: wb } = &a.q {
            layers::rmsnorm_residual(k, RmsNorm::rows(v(&ws.qa), v(norm), v(&ws.qa_n), t, wa.rows, LATENT_NORM_EPS))?;
            self.linear(t, &ws.qa_n, wb, &ws.q_in, OutMode::Bf16)?;
        }
        if !paired {
            self.linear(t, &ws.h, &a.kv_a, &ws.kv, OutMode::F32)?;
        }
        // the new tokens' latents into the cache
        let pos = self.ws.meta_at(self.layout.pos_at);
        let cache = v(&self.cache[l]);
        let slots = self.geometry.num_pages * self.geometry.page_size;
        let cache_write = CacheWrite {
            kv: v(&ws.kv),
            norm_weight: v(&a.kv_a_norm),
            pos,
            slots: v(&ws.slots),
            rope: self.rope(),
            cache,
            cache_slots: slots,
            tokens: t,
            kv_lora,
            eps: LATENT_NORM_EPS,
            fp8: self.fp8,
        };
        // absorbed query: q_lat[t, h] = q_nope[t, h] · W_UK[h]  (W_UK[h] = kv_b rows h*(nope+vd) .. +nope),
        // and its rope part; where a few tokens stream, one launch (absorb.cu) that also writes
        // the new tokens' latents into the cache
        let per_head = (nope + vd) * kv_lora;
        let absorbed = absorb::Heads { tokens: t, heads, nope, vd, kv_lora };
        let absorb_here = stream::use_for(t) && absorbed.fits();
        if absorb_here {
            absorb::query(k, absorbed, v(&ws.q_in), v(&a.kv_b.buf), v(&ws.q_full), pos, self.rope(), Some(cache_write))?;
        } else {
            layers::latent_cache_write(k, cache_write)?;
            self.blas.batched(
                Linear { m: t, n: kv_lora, k: nope, a: bf16(&ws.q_in, heads * qk), w: weight(&a.kv_b), c: bf16(&ws.q_full, heads * d), beta: 0.0 },
                Batch { stride_a: qk, stride_w: per_head, stride_c: d, count: heads, w_kn: true },
            )?;
            layers::rope_query(k, RopeQuery {
                q: v(&ws.q_in),
                out: v(&ws.q_full),
                pos,
                rope: self.rope(),
                tokens: t,
                heads,
                q_stride: qk,
                rope_offset: nope,
                out_stride: d,
                out_offset: kv_lora,
            })?;
        }
        // attention over the latent cache
        let scale = cfg.softmax_scale();
        if self.layout.fast.is_empty() {
            let io = GenericIo {
                q: v(&ws.q_full),
                cache,
                block_tables: ws.meta_at(self.layout.tables_at),
                token_seq: ws.meta_at(self.layout.seq_at),
                token_pos: pos,
                out: v(&ws.att),
                lse: View::NULL,
            };
            let shape = GenericShape {
                tokens: t,
                seqs: self.layout.order.len(),
                heads,
                kv_lora,
                rope: cfg.qk_rope_head_dim,
                page_size: self.geometry.page_size,
                max_pages: self.layout.max_pages,
                cache_pages: self.geometry.num_pages,
                scale,
                fp8: self.fp8,
            };
            decode::mla_attention_generic(k, &io, &shape)?;
        }
        for launch in &self.layout.fast {
            let tok = launch.first_token;
            let io = DecodeIo {
                q: v(&ws.q_full).at(tok * heads * d * 2),
                cache,
                block_table: ws.meta_at(launch.block_table_at),
                seq_lens: ws.meta_at(launch.seq_lens_at),
                split_offsets: ws.meta_at(launch.splits_at),
                out: v(&ws.att).at(tok * heads * kv_lora * 2),
                lse: v(&ws.lse).at(tok * heads * 4),
                part_o: v(&ws.part_o),
                part_lse: v(&ws.part_lse),
                sync: v(&ws.sync),
                arrivals: None,
            };
            let shape = DecodeShape {
                batch: launch.batch,
                q_len: launch.q_len,
                heads,
                page_size: self.geometry.page_size,
                max_pages: self.layout.max_pages,
                cache_pages: self.geometry.num_pages,
                scale,
            };
            decode::mla_decode(k, &io, &shape, &launch.plan)?;
        }
        // values: ov[t, h] = W_UV[h] · o_lat[t, h], then o_proj added into the residual
        if absorb_here {
            absorb::value(k, absorbed, v(&ws.att), v(&a.kv_b.buf), v(&ws.ov))?;
        } else {
            let w_uv = Operand { ptr: a.kv_b.buf.ptr() + (nope * kv_lora * 2) as u64, dtype: Dtype::Bf16, ld: kv_lora };
            self.blas.batched(
                Linear { m: t, n: vd, k: kv_lora, a: bf16(&ws.att, heads * kv_lora), w: w_uv, c: bf16(&ws.ov, heads * vd), beta: 0.0 },
                Batch { stride_a: kv_lora, stride_w: per_head, stride_c: vd, count: heads, w_kn: false },
            )?;
        }
        self.begin_partial()?;
        self.linear(t, &ws.ov, &a.o, &ws.x, OutMode::F32Add)?;
        self.end_partial()
    }

    /// Dense SiLU MLP over the first `t` rows of `h`, added into the residual. Where the linears
    /// stream, SiLU-and-mul is the gate/up launch's epilogue.
    pub(super) fn mlp(&self, m: &GpuMlp, t: usize) -> Result<()> {
        let ws = self.ws;
        let inter = m.down.cols;
        if stream::use_for(t) && m.gate_up.fp8().is_none() && inter % 32 == 0 && m.gate_up.rows == 2 * inter {
            let (n, k) = (m.gate_up.rows, m.gate_up.cols);
            let splits = stream::splits_for(t, n, k, self.num_sms, ws.stream_part.bytes());
            let (part, counters) = (v(&ws.stream_part), v(&ws.stream_counters));
            let g = stream::Linear { a: v(&ws.h), w: v(&m.gate_up.buf), c: v(&ws.act), mode: OutMode::Bf16, second: None, glu: true, part, counters, splits, m: t, n, k };
            stream::linear(self.k, g)?;
        } else {
            self.linear(t, &ws.h, &m.gate_up, &ws.gate_up, OutMode::Bf16)?;
            layers::silu_mul(self.k, v(&ws.gate_up), v(&ws.act), t, inter)?;
        }
        self.linear(t, &ws.act, &m.down, &ws.x, OutMode::F32Add)
    }

    /// The MoE layer on one GPU or under tensor parallelism. Returns whether it also wrote the
    /// next layer's input norm (`next_norm`) into ws.h: with `MLAHOST_COMBINE_NORM=1` and no
    /// ranks to sum over first, the shared experts run first and the routed experts' combine
    /// ends the layer with that norm (`moe_combine_norm`), one launch fewer.
    fn moe(&self, l: usize, m: &GpuMoe, next_norm: Option<&DeviceBuffer>) -> Result<bool> {
        let t = self.layout.tokens;
        if let (Some(norm), true, None) = (next_norm, moe::combine_norm_on(), self.tp) {
            if let Some(shared) = &m.shared {
                self.mlp(shared, t)?;
            }
            self.routed(l, m, t, &self.ws.x, None, Some(norm))?;
            return Ok(true);
        }
        self.routed(l, m, t, &self.ws.x, None, None)?;
        if let Some(shared) = &m.shared {
            self.mlp(shared, t)?;
        }
        Ok(false)
    }

    /// The routed experts this GPU holds over `t` rows of `ws.h32` (f32, for the router) and
    /// `ws.h` (bf16, for the experts), their weighted outputs added into `out` (`[t, hidden]`
    /// f32), which `zero_first` (its GPU) clears just before (it may be `ws.h32` itself: the
    /// router has read it by then).
    pub(super) fn routed(&self, l: usize, m: &GpuMoe, t: usize, out: &DeviceBuffer, zero_first: Option<&std::sync::Arc<Gpu>>, next_norm: Option<&DeviceBuffer>) -> Result<()> {
        let (cfg, ws, k) = (self.cfg, self.ws, self.k);
        let mc = cfg.moe.as_ref().ok_or_else(|| crate::CudaError::launch("moe", "MoE weights without MoE config"))?;
        let (hidden, e, top_k, inter) = (cfg.hidden_size, mc.n_routed_experts, mc.num_experts_per_tok, m.inter);
        let pairs = t * top_k;
        let params = RouteParams::from_config(mc);
        let d = Dispatch {
            expert_offsets: v(&ws.expert_offsets),
            sorted_pairs: v(&ws.sorted_pairs),
            pair_pos: v(&ws.pair_pos),
            tiles: v(&ws.tiles),
            num_tiles: v(&ws.num_tiles),
            tile_rows: moe::tile_rows_for(t),
        };
        if stream::use_for(t) && moe_router::fits(t, hidden, &params) {
            // router GEMM, routing and dispatch in one launch (the streaming linears' scratch)
            let counters = v(&ws.stream_counters).at(stream::COUNTERS * 4);
            let r = moe_router::Router { h: v(&ws.h32), w: v(&m.router), bias: m.bias.as_ref().map(v), logits: v(&ws.router), ids: v(&ws.topk_ids), weights: v(&ws.topk_w), part: v(&ws.stream_part), counters, tokens: t, hidden };
            moe_router::route(k, r, &params, m.local.clone(), &d)?;
        } else {
            let router = Operand { ptr: m.router.ptr(), dtype: Dtype::F32, ld: hidden };
            self.blas.linear(Linear { m: t, n: e, k: hidden, a: f32op(&ws.h32, hidden), w: router, c: f32op(&ws.router, e), beta: 0.0 })?;
            moe::moe_route(k, v(&ws.router), m.bias.as_ref().map(v), v(&ws.topk_ids), v(&ws.topk_w), t, &params)?;
            moe::moe_align(k, v(&ws.topk_ids), pairs, e, m.local.clone(), &d)?;
        }
        if let Some(log) = self.route_log {
            log.buf.copy_from_device(l * log.tokens * top_k * 4, ws.topk_ids.ptr(), pairs * 4)?;
        }
        let held = m.local.len();
        // The first GEMM gathers each pair's token row; the second reads pairs in sorted order.
        let gathered = Some((v(&ws.sorted_pairs), top_k));
        match (&m.scales, self.quant) {
            (Some((gu_s, down_s)), Some(_)) if moe::streams(k, &d) => {
                // decode sizes: bf16 rows quantized inside the streaming kernel
                let w = |codes: &DeviceBuffer, scales: &DeviceBuffer| fp8::Fp8Weight { codes: v(codes), scales: v(scales) };
                let gate_up = Grouped { a: v(&ws.h), a_total_rows: t, a_rows: gathered, w: w(&m.gate_up, gu_s), experts: held, pairs, c: v(&ws.expert_gate_up), n: 2 * inter, k: hidden };
                fp8::grouped_stream(k, &d, gate_up, OutMode::Bf16)?;
                layers::silu_mul(k, v(&ws.expert_gate_up), v(&ws.expert_act), pairs, inter)?;
                let down = Grouped { a: v(&ws.expert_act), a_total_rows: pairs, a_rows: None, w: w(&m.down, down_s), experts: held, pairs, c: v(&ws.expert_out), n: hidden, k: inter };
                fp8::grouped_stream(k, &d, down, OutMode::F32)?;
            }
            (Some((gu_s, down_s)), Some(q)) => {
                let w = |codes: &DeviceBuffer, scales: &DeviceBuffer| fp8::Fp8Weight { codes: v(codes), scales: v(scales) };
                fp8::quant_act(k, v(&ws.h), false, q.act(), t, hidden)?;
                let gate_up = Grouped { a: q.act(), a_total_rows: t, a_rows: gathered, w: w(&m.gate_up, gu_s), experts: held, pairs, c: v(&ws.expert_gate_up), n: 2 * inter, k: hidden };
                fp8::grouped_gemm(k, &d, gate_up, OutMode::Bf16)?;
                layers::silu_mul(k, v(&ws.expert_gate_up), v(&ws.expert_act), pairs, inter)?;
                fp8::quant_act(k, v(&ws.expert_act), false, q.act(), pairs, inter)?;
                let down = Grouped { a: q.act(), a_total_rows: pairs, a_rows: None, w: w(&m.down, down_s), experts: held, pairs, c: v(&ws.expert_out), n: hidden, k: inter };
                fp8::grouped_gemm(k, &d, down, OutMode::F32)?;
            }
            (Some(_), None) => return Err(crate::CudaError::launch("fp8_grouped_gemm", "FP8 experts without the FP8 scratch")),
            (None, _) => {
                if moe::streams(k, &d) && inter % 32 == 0 {
                    // SiLU-and-mul in the streaming kernel's epilogue
                    let gate_up = Grouped { a: v(&ws.h), a_total_rows: t, a_rows: gathered, w: v(&m.gate_up), experts: held, pairs, c: v(&ws.expert_act), n: 2 * inter, k: hidden };
                    moe::moe_gemm_glu(k, &d, gate_up)?;
                } else {
                    let gate_up = Grouped { a: v(&ws.h), a_total_rows: t, a_rows: gathered, w: v(&m.gate_up), experts: held, pairs, c: v(&ws.expert_gate_up), n: 2 * inter, k: hidden };
                    moe::moe_gemm(k, &d, gate_up, false)?;
                    layers::silu_mul(k, v(&ws.expert_gate_up), v(&ws.expert_act), pairs, inter)?;
                }
                let down = Grouped { a: v(&ws.expert_act), a_total_rows: pairs, a_rows: None, w: v(&m.down), experts: held, pairs, c: v(&ws.expert_out), n: hidden, k: inter };
                moe::moe_gemm(k, &d, down, true)?;
            }
        }
        if let Some(gpu) = zero_first {
            gpu.zero(out.ptr(), t * hidden * 4)?;
        }
        match next_norm {
            Some(w) => moe::moe_combine_norm(k, v(&ws.expert_out), v(&ws.pair_pos), v(&ws.topk_w), v(out), t, top_k, hidden, v(w), v(&ws.h), cfg.rms_norm_eps),
            None => moe::moe_combine(k, v(&ws.expert_out), v(&ws.pair_pos), v(&ws.topk_w), v(out), t, top_k, hidden),
        }
    }
}
