//! The layout flags `serve`, `generate` and `plan` share, with vLLM's names (`-tp` and `-dp` are
//! rewritten to the long forms in main.rs).

use clap::Args;
use mlahost_engine::parallel::ParallelLayout;

#[derive(Args, Debug, Clone, Copy)]
pub struct ParallelArgs {
    /// Ranks each model instance splits its attention heads, dense MLPs and routed experts over
    /// (`-tp`). On the CPU the ranks are threads of this process (the reference of the GPU
    /// split, not a way to run faster); on GPUs, one rank per GPU over NCCL.
    #[arg(long, default_value_t = 1)]
    tensor_parallel_size: usize,
    /// Attention data-parallel groups inside one instance (`-dp`): each runs attention for its
    /// own sequences and stores only their latents.
    #[arg(long, default_value_t = 1)]
    data_parallel_size: usize,
    /// Spread whole routed experts over every rank of the instance instead of slicing each
    /// expert over the tensor-parallel ranks.
    #[arg(long)]
    enable_expert_parallel: bool,
}

impl ParallelArgs {
    pub fn layout(&self) -> ParallelLayout {
        ParallelLayout { tensor_parallel: self.tensor_parallel_size, data_parallel: self.data_parallel_size, expert_parallel: self.enable_expert_parallel }
    }
}
