//! The CUDA backend with FP8 weights against the CPU engine holding the very weights the GPU
//! holds (each FP8 linear dequantized from the GPU's codes and scales; embeddings, lm_head and
//! kv_b rounded to bf16 as on the GPU) and rounding each FP8 linear's input as the GPU does
//! (bf16, then e4m3 per token per 128 channels: `CpuBackend::emulate_fp8_activations`), so the
//! comparison measures the FP8 GEMMs themselves: teacher-forced greedy agreement and mean
//! |delta logprob| of the fed token, as issue 7's e2e rows. (Against a reference that does not
//! quantize activations, the random test models' small margins turned the quantization into
//! different greedy paths: 67-92% agreement on the first H100 run.)

use super::e2e::{self, lockstep, model_name};
use super::Check;
use mlahost_cuda::quant::{quantize_blocks, WeightQuant, BLOCK};
use mlahost_cuda::Result;
use mlahost_engine::checkpoint::f8e4m3_to_f32;
use mlahost_engine::cpu::{AttentionMode, CpuBackend, CpuOptions};
use mlahost_engine::tensor::Matrix;
use mlahost_engine::weights::{FeedForward, ModelWeights, Mlp, QueryProj};
use mlahost_engine::{CacheGeometry, KvCacheDtype, LoadedModel};
use std::sync::Arc;

/// Bounds of the FP8-weight rows (teacher-forced over every step), measured on H100/H200
/// over fresh random prompts; see kernels/PERFORMANCE.md "FP8".
pub const MIN_AGREEMENT: f64 = 0.85;
pub const MAX_MEAN_DIFF: f64 = 0.15;

/// `m` as the GPU's FP8 copy holds it, dequantized (a matrix the GPU keeps in bf16 is rounded).
fn as_fp8(m: &Matrix) -> Matrix {
    if m.cols % 16 != 0 {
        return e2e::round(m);
    }
    let (codes, scales) = quantize_blocks(&m.to_f32_vec(), m.rows, m.cols);
    let bc = m.cols.div_ceil(BLOCK);
    let data = (0..m.rows * m.cols).map(|i| f8e4m3_to_f32(codes[i]) * scales[(i / m.cols / BLOCK) * bc + (i % m.cols) / BLOCK]).collect();
    Matrix::from_f32(m.rows, m.cols, data)
}

fn mlp(m: &Mlp) -> Mlp {
    Mlp { gate_up: as_fp8(&m.gate_up), down: as_fp8(&m.down) }
}

/// The weights exactly as the FP8 GPU backend holds them.
pub fn fp8_weights(w: &ModelWeights) -> ModelWeights {
    let mut out = e2e::bf16_weights(w);
    for (l, src) in out.layers.iter_mut().zip(&w.layers) {
        l.attn.q = match &src.attn.q {
            QueryProj::Direct(m) => QueryProj::Direct(as_fp8(m)),
            QueryProj::LowRank { a, norm, b } => QueryProj::LowRank { a: as_fp8(a), norm: norm.clone(), b: as_fp8(b) },
        };
        l.attn.kv_a = as_fp8(&src.attn.kv_a);
        l.attn.o = as_fp8(&src.attn.o);
        match (&mut l.ffn, &src.ffn) {
            (FeedForward::Dense(d), FeedForward::Dense(s)) => *d = mlp(s),
            (FeedForward::Moe(d), FeedForward::Moe(s)) => {
                let widths_ok = s.experts.iter().all(|e| e.gate_up.cols % 16 == 0 && e.down.cols % 16 == 0);
                if widths_ok {
                    d.experts = s.experts.iter().map(mlp).collect();
                }
                d.shared = s.shared.as_ref().map(mlp);
            }
            _ => {}
        }
    }
    out
}

/// GPU with FP8 weights (`--quantization fp8`, or an FP8 checkpoint as it is) against the CPU.
pub fn against_cpu(model: &LoadedModel, ordinal: usize, page_size: usize, kv_dtype: KvCacheDtype, seed: u64, steps: usize) -> Result<Check> {
    let (cases, pages) = e2e::random_cases(seed ^ 0xf8, model.config.vocab_size, steps, page_size);
    let mut gpu = e2e::gpu_backend_quant(model, ordinal, page_size, pages, kv_dtype, true, WeightQuant::Fp8)?;
    gpu.record_routes()?;
    let planned = mlahost_engine::capacity::fp8_linears(&model.config).1;
    let held = gpu.fp8_weights().unwrap_or(0);
    let opts = CpuOptions { geometry: CacheGeometry { num_pages: pages, page_size }, attention: AttentionMode::Auto, kv_dtype };
    let mut cpu = CpuBackend::new(model.config.clone(), Arc::new(fp8_weights(&model.weights)), opts)?;
    cpu.record_routes();
    cpu.emulate_fp8_activations();
    let a = lockstep(&mut gpu, &mut cpu, &cases, steps, true)?;
    let agreement = a.all_agree as f64 / a.all_steps.max(1) as f64;
    let ok = agreement >= MIN_AGREEMENT && a.all_mean_diff <= MAX_MEAN_DIFF && planned == held;
    let mut c = e2e::to_check(format!("{} GPU FP8 weights vs CPU (same weights), {} cache, page {page_size}", model_name(model), kv_dtype.as_str()), &a, false);
    c.error = if ok { a.all_mean_diff } else { f64::INFINITY };
    c.tolerance = MAX_MEAN_DIFF;
    c.detail = format!("{}; FP8 linears on the GPU {held} B, planned {planned} B; bounds: agreement >= {MIN_AGREEMENT}, mean <= {MAX_MEAN_DIFF}", c.detail);
    Ok(c)
}

/// The FP8-weight row of `model` cut to its first 1, 2, ... layers (informational): the depth
/// at which the FP8 path parts from its reference, to find which layer kind (the dense first
/// layer, the first MoE layer, ...) brings the difference.
pub fn by_depth(model: &LoadedModel, ordinal: usize, seed: u64, steps: usize) -> Result<Vec<Check>> {
    let mut out = Vec::new();
    for depth in 1..model.config.num_hidden_layers {
        let (mut cfg, mut weights) = mlahost_engine::shard::shard(&model.config, &model.weights, mlahost_engine::parallel::ParallelLayout::SINGLE, 0)?;
        cfg.num_hidden_layers = depth;
        weights.layers.truncate(depth);
        let cut = LoadedModel { config: cfg, weights: Arc::new(weights), ..LoadedModel::load(&model.dir, None)? };
        let mut c = against_cpu(&cut, ordinal, 64, KvCacheDtype::Bf16, seed, steps)?;
        c.name = format!("{} first {depth} layer(s): {}", model_name(model), c.name);
        c.informational = true;
        out.push(c);
    }
    Ok(out)
}
