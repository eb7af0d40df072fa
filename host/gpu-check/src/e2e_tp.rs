//! Tensor (and expert) parallelism on one GPU: the model split over 2 or 4 ranks that run as threads on the
//! same GPU and sum through staged copies (`RankDevices::EmulatedOnOneGpu`) against the whole
//! model on that GPU, teacher-forced (greedy agreement and mean |delta logprob| of the fed
//! token); and the NCCL path with one rank against no communicator (the same logits, bit for
//! bit: a one-rank sum changes nothing).

use super::e2e::{self, lockstep, model_name};
use super::Check;
use mlahost_cuda::quant::WeightQuant;
use mlahost_cuda::{CudaOptions, CudaRankGroup, RankDevices, Result};
use mlahost_engine::parallel::ParallelLayout;
use mlahost_engine::{KvCacheDtype, LoadedModel};

/// Bounds of the split rows: the ranks add the same bf16 products in another order (per-rank
/// partial sums of o_proj and the MLPs, then the sum over ranks), so the whole model's bounds
/// for the same weights apply (`e2e::MIN_AGREEMENT`, `e2e::MAX_MEAN_DIFF_STRICT`).
pub const MIN_AGREEMENT: f64 = e2e::MIN_AGREEMENT;
pub const MAX_MEAN_DIFF: f64 = e2e::MAX_MEAN_DIFF_STRICT;

fn rank_options(ordinal: usize, page_size: usize, num_pages: usize) -> CudaOptions {
    CudaOptions {
        ordinal,
        page_size,
        num_pages: Some(num_pages),
        gpu_memory_utilization: 0.9,
        kv_dtype: KvCacheDtype::Bf16,
        max_batched_tokens: 1024,
        max_seqs: 16,
        planned_weight_bytes: None,
        cuda_graphs: true,
    }
}

/// `tp` emulated ranks on GPU `ordinal` (the routed experts sliced, or spread whole with `ep`)
/// against the whole model there.
pub fn split_against_whole(model: &LoadedModel, ordinal: usize, tp: usize, ep: bool, seed: u64, steps: usize) -> Result<Check> {
    split_against_whole_dp(model, ordinal, tp, 1, ep, false, seed, steps)
}

/// As `split_against_whole`, with `dp` data-parallel attention groups of `tp` ranks each (each
/// group holds its own sequences' pages; with `ep` the MoE layers exchange rows across groups,
/// in equal per-rank slots where `slots` and the step allows).
#[allow(clippy::too_many_arguments)]
pub fn split_against_whole_dp(model: &LoadedModel, ordinal: usize, tp: usize, dp: usize, ep: bool, slots: bool, seed: u64, steps: usize) -> Result<Check> {
    split_on(model, ordinal, RankDevices::EmulatedOnOneGpu { gpu: ordinal }, tp, dp, ep, slots, seed, steps)
}

/// The same split with rank r on GPU r over NCCL (a node with `tp * dp` GPUs) against the whole
/// model on GPU 0: the real collectives checked the way the emulation is.
pub fn split_over_gpus(model: &LoadedModel, tp: usize, dp: usize, ep: bool, slots: bool, seed: u64, steps: usize) -> Result<Check> {
    let mut c = split_on(model, 0, RankDevices::Nccl { first_gpu: 0 }, tp, dp, ep, slots, seed, steps)?;
    c.name = c.name.replace("emulated on one GPU", "over NCCL, one GPU each");
    Ok(c)
}

/// The same split over NCCL (rank r on GPU r) against its emulation on GPU 0: the same ranks and
/// shards, so only the collectives' implementations (and their summation orders) differ. Issue
/// 23's check of the node against the one-GPU rehearsal; the same bounds.
pub fn nccl_against_emulation(model: &LoadedModel, tp: usize, dp: usize, ep: bool, slots: bool, seed: u64, steps: usize) -> Result<Check> {
    let page_size = 64;
    let (cases, pages) = e2e::random_cases(seed ^ 0xe3u64 ^ (tp as u64) << 5 ^ (dp as u64) << 11, model.config.vocab_size, steps, page_size);
    let layout = ParallelLayout { tensor_parallel: tp, data_parallel: dp, expert_parallel: ep };
    let group = |devices| CudaRankGroup::new(&model.config, &*model.weights()?, layout, rank_options(0, page_size, pages), WeightQuant::Bf16, devices);
    let mut nccl = group(RankDevices::Nccl { first_gpu: 0 })?;
    let mut emulated = group(RankDevices::EmulatedOnOneGpu { gpu: 0 })?;
    nccl.set_slot_exchange(slots);
    emulated.set_slot_exchange(slots);
    let a = lockstep(&mut nccl, &mut emulated, &cases, steps, true)?;
    let agreement = a.all_agree as f64 / a.all_steps.max(1) as f64;
    let ok = agreement >= MIN_AGREEMENT && a.all_mean_diff <= MAX_MEAN_DIFF;
    let mut c = e2e::to_check(format!("{} DP={dp} TP={tp} EP={ep}{} over NCCL vs its one-GPU emulation", model_name(model), if slots { " slots" } else { "" }), &a, false);
    c.error = if ok { a.all_mean_diff } else { f64::INFINITY };
    c.tolerance = MAX_MEAN_DIFF;
    c.detail = format!("{}; bounds: agreement >= {MIN_AGREEMENT}, mean <= {MAX_MEAN_DIFF}", c.detail);
    Ok(c)
}

/// The same split with the emulated ranks meeting on the device (`RankDevices::EmulatedInGraphs`),
/// so that decode steps replay CUDA graphs with the collectives inside, as NCCL ranks' do; the
/// row fails if no rank captured a graph.
#[allow(clippy::too_many_arguments)]
pub fn split_in_graphs(model: &LoadedModel, ordinal: usize, tp: usize, dp: usize, ep: bool, slots: bool, seed: u64, steps: usize) -> Result<Check> {
    let mut c = split_on(model, ordinal, RankDevices::EmulatedInGraphs { gpu: ordinal }, tp, dp, ep, slots, seed, steps)?;
    c.name = c.name.replace("emulated on one GPU", "emulated in CUDA graphs on one GPU");
    Ok(c)
}

#[allow(clippy::too_many_arguments)]
fn split_on(model: &LoadedModel, ordinal: usize, devices: RankDevices, tp: usize, dp: usize, ep: bool, slots: bool, seed: u64, steps: usize) -> Result<Check> {
    let page_size = 64;
    let (cases, pages) = e2e::random_cases(seed ^ (0x7b << tp) ^ ep as u64 ^ (dp as u64) << 9, model.config.vocab_size, steps, page_size);
    let layout = ParallelLayout { tensor_parallel: tp, data_parallel: dp, expert_parallel: ep };
    let mut ranks = match CudaRankGroup::new(&model.config, &*model.weights()?, layout, rank_options(ordinal, page_size, pages), WeightQuant::Bf16, devices) {
        // a layout the GPU kernels cannot take (the tiny fixtures' 64-wide experts over 4 ranks)
        // is refused at start, as `serve` refuses it: recorded, not a failure
        Err(mlahost_cuda::CudaError::Engine(mlahost_engine::EngineError::Layout(why))) => {
            return Ok(Check { name: format!("{} TP={tp} DP={dp} EP={ep}", model_name(model)), error: 0.0, tolerance: 0.0, detail: format!("refused at start: {why}"), informational: true });
        }
        other => other?,
    };
    ranks.set_slot_exchange(slots);
    let mut whole = e2e::gpu_backend(model, ordinal, page_size, pages, KvCacheDtype::Bf16)?;
    let a = lockstep(&mut ranks, &mut whole, &cases, steps, true)?;
    let agreement = a.all_agree as f64 / a.all_steps.max(1) as f64;
    let graphs = ranks.captured_graphs();
    let in_graphs = matches!(devices, RankDevices::EmulatedInGraphs { .. });
    let gave_up = ranks.collective_gave_up()?;
    let ok = agreement >= MIN_AGREEMENT && a.all_mean_diff <= MAX_MEAN_DIFF && (graphs > 0 || !in_graphs) && !gave_up;
    let what = match (dp, ep) {
        (1, true) => format!("TP={tp} EP={tp}"),
        (1, false) => format!("TP={tp}"),
        (_, true) => format!("DP={dp} x TP={tp} attention, EP={} experts{}", dp * tp, match (tp, slots) {
            (1, true) => ", slot exchange",
            (1, false) => ", packed exchange",
            _ => "",
        }),
        (_, false) => format!("DP={dp} x TP={tp}"),
    };
    let mut c = e2e::to_check(format!("{} {what} emulated on one GPU vs the whole model", model_name(model)), &a, false);
    c.error = if ok { a.all_mean_diff } else { f64::INFINITY };
    c.tolerance = MAX_MEAN_DIFF;
    c.detail = format!("{}; bounds: agreement >= {MIN_AGREEMENT}, mean <= {MAX_MEAN_DIFF}; {graphs} decode graphs captured over the ranks{}", c.detail, if gave_up { "; a rank gave up waiting for the others on the device (20 s)" } else { "" });
    Ok(c)
}

/// The NCCL ranks with a world of one on GPU `ordinal` against no communicator: equal logits.
pub fn nccl_single_rank(model: &LoadedModel, ordinal: usize, seed: u64, steps: usize) -> Result<Check> {
    let page_size = 64;
    let (cases, pages) = e2e::random_cases(seed ^ 0x1cc1, model.config.vocab_size, steps, page_size);
    let devices = RankDevices::Nccl { first_gpu: ordinal };
    let mut one = CudaRankGroup::new(&model.config, &*model.weights()?, ParallelLayout::SINGLE, rank_options(ordinal, page_size, pages), WeightQuant::Bf16, devices)?;
    let mut plain = e2e::gpu_backend(model, ordinal, page_size, pages, KvCacheDtype::Bf16)?;
    let a = lockstep(&mut one, &mut plain, &cases, steps, true)?;
    let mut c = e2e::to_check(format!("{} NCCL with one rank vs no communicator", model_name(model)), &a, false);
    let equal = a.all_agree == a.all_steps && a.max_logprob_diff == 0.0;
    c.error = if equal { 0.0 } else { f64::INFINITY };
    c.tolerance = 0.0;
    c.detail = format!("{}; must be equal", c.detail);
    Ok(c)
}
