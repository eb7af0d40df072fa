//! `generate --profile-kernels` on the GPU: the profiled run must produce exactly what the same
//! eager run produces without the profile, and the profile must count every forward pass and
//! time the attention and the GEMMs of the decode steps.

use super::Check;
use mlahost_cuda::profile::Phase;
use mlahost_cuda::Result;
use mlahost_runtime::generate::{generate, GenerateRequest};
use mlahost_engine::sampling::SamplingParams;
use mlahost_engine::{KvCacheDtype, LoadedModel};

pub fn profile_leaves_the_run_unchanged(model: &LoadedModel, ordinal: usize, seed: u64) -> Result<Check> {
    let mut rng = super::Rng::new(seed);
    let vocab = model.config.vocab_size;
    let (page, steps) = (16usize, 9usize);
    let prompt: Vec<u32> = (0..37).map(|_| rng.below(vocab) as u32).collect();
    let pages = (prompt.len() + steps).div_ceil(page) + 1;
    // the profile runs eagerly; so does its baseline
    let backend = || super::e2e::gpu_backend_with(model, ordinal, page, pages, KvCacheDtype::Bf16, false);
    let request = GenerateRequest {
        prompt: prompt.clone(),
        max_tokens: steps,
        sampling: SamplingParams { temperature: 0.0, ..Default::default() },
        top_logprobs: 0,
        ignore_eos: true,
    };
    let run = |b: &mut mlahost_cuda::CudaBackend| generate(model, b, &request).map_err(|e| mlahost_cuda::CudaError::launch("generate", &e.to_string()));
    let plain = run(&mut backend()?)?;
    let mut profiled_backend = backend()?;
    let gpu = profiled_backend.gpu();
    gpu.set_profiling(true);
    let profiled = run(&mut profiled_backend)?;
    let report = gpu.profile_report()?.ok_or_else(|| mlahost_cuda::CudaError::launch("profile", "profiling was switched off"))?;
    let same = plain.token_ids == profiled.token_ids && plain.logprobs == profiled.logprobs;
    let forwards = |p| report.forwards.get(&p).copied().unwrap_or(0);
    let decode = report.per_forward(Phase::Decode);
    let attention = decode.iter().any(|r| r.0.starts_with("mla_"));
    let gemms = decode.iter().any(|r| r.0.starts_with("cuBLAS gemm"));
    let all_timed = report.totals.values().all(|s| s.micros > 0.0);
    let ok = same && forwards(Phase::Prefill) == 1 && forwards(Phase::Decode) == steps - 1 && attention && gemms && all_timed;
    let step_us: f64 = decode.iter().map(|r| r.2).sum();
    Ok(Check {
        name: format!("{} kernel profile (eager, greedy)", super::e2e::model_name(model)),
        error: if ok { 0.0 } else { f64::INFINITY },
        tolerance: 0.0,
        detail: format!(
            "tokens and logprobs {}; {} prefill + {} decode passes; decode rows {} (attention {attention}, GEMMs {gemms}, all timed {all_timed}), {step_us:.0} µs of kernels per step",
            if same { "identical" } else { "DIFFER" },
            forwards(Phase::Prefill),
            forwards(Phase::Decode),
            decode.len()
        ),
        informational: false,
    })
}
