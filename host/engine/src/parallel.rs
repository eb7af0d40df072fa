//! One model instance over several GPUs, with vLLM's names: `--tensor-parallel-size` ranks split
//! the attention heads, the dense and shared MLPs and the vocabulary; `--data-parallel-size`
//! groups each run attention for their own sequences (and own their latent pages);
//! `--enable-expert-parallel` spreads whole routed experts over every rank instead of slicing
//! each expert over the tensor-parallel ranks. This module checks a layout against a model and
//! does its arithmetic: what each GPU stores and what it sends per token. `plan` prints it.

use crate::config::ModelConfig;
use crate::shapes::{self, Split};
use crate::{EngineError, Result};

/// How one model instance is spread: `tensor_parallel x data_parallel` GPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParallelLayout {
    pub tensor_parallel: usize,
    pub data_parallel: usize,
    pub expert_parallel: bool,
}

impl ParallelLayout {
    pub const SINGLE: Self = Self { tensor_parallel: 1, data_parallel: 1, expert_parallel: false };

    /// GPUs one instance takes.
    pub fn world(&self) -> usize {
        self.tensor_parallel * self.data_parallel
    }

    /// vLLM-style name: `TP=8`, `DP=8 + EP=8`, `TP=2 x DP=4 + EP=8`; one GPU per instance is
    /// `replica per GPU`.
    pub fn describe(&self) -> String {
        if *self == Self::SINGLE {
            return "replica per GPU".to_string();
        }
        let mut parts = Vec::new();
        if self.tensor_parallel > 1 || self.data_parallel == 1 {
            parts.push(format!("TP={}", self.tensor_parallel));
        }
        if self.data_parallel > 1 {
            parts.push(format!("DP={}", self.data_parallel));
        }
        let mut s = parts.join(" x ");
        if self.expert_parallel {
            s.push_str(&format!(" + EP={}", self.world()));
        }
        s
    }

    /// Refuses layouts the model cannot be split into, or that need more GPUs than `gpus`.
    pub fn validate(&self, cfg: &ModelConfig, gpus: usize) -> Result<()> {
        let (tp, world) = (self.tensor_parallel, self.world());
        let bad = |m: String| Err(EngineError::Layout(m));
        if tp == 0 || self.data_parallel == 0 {
            return bad("--tensor-parallel-size and --data-parallel-size must be at least 1".into());
        }
        if world > gpus {
            return bad(format!("{} needs {world} GPUs ({tp} x {}), but only {gpus} are given", self.describe(), self.data_parallel));
        }
        let heads = cfg.num_attention_heads;
        if heads % tp != 0 {
            return bad(format!("{heads} attention heads do not split evenly over --tensor-parallel-size {tp}"));
        }
        let dense_inter = cfg.intermediate_size;
        if cfg.num_hidden_layers as u64 > shapes::moe_layer_count(cfg) && dense_inter % tp != 0 {
            return bad(format!("the dense MLP's intermediate size {dense_inter} does not split evenly over --tensor-parallel-size {tp}"));
        }
        if let Some(m) = &cfg.moe {
            let shared = m.moe_intermediate_size * m.n_shared_experts;
            if shared % tp != 0 {
                return bad(format!("the shared experts' intermediate size {shared} does not split evenly over --tensor-parallel-size {tp}"));
            }
            if self.expert_parallel && m.n_routed_experts % world != 0 {
                return bad(format!("{} routed experts do not split evenly over {world} expert-parallel ranks", m.n_routed_experts));
            }
            if !self.expert_parallel && m.moe_intermediate_size % tp != 0 {
                return bad(format!(
                    "the routed experts' intermediate size {} does not split evenly over --tensor-parallel-size {tp} (or use --enable-expert-parallel)",
                    m.moe_intermediate_size
                ));
            }
        } else if self.expert_parallel {
            return bad("--enable-expert-parallel needs a mixture-of-experts model".into());
        }
        Ok(())
    }

    /// Weight bytes one GPU stores (the largest shard where a split is uneven: the vocabulary),
    /// with the linears in block-scaled FP8 (`fp8`) or bf16, counted from the config's shapes.
    /// Data-parallel groups each hold the attention, the dense MLPs and (without expert
    /// parallelism) the routed experts whole or sliced over their own tensor-parallel ranks.
    pub fn weight_bytes_per_gpu(&self, cfg: &ModelConfig, fp8: bool) -> u64 {
        let (tp, world) = (self.tensor_parallel as u64, self.world() as u64);
        let mut bytes = 0u64;
        for l in shapes::linears(cfg) {
            let (rows, cols, count) = match (l.split, self.expert_parallel) {
                (Split::Replicated, _) => (l.rows, l.cols, l.count),
                (Split::OutputTp, _) | (Split::Experts { input: false }, false) => (l.rows / tp, l.cols, l.count),
                (Split::InputTp, _) | (Split::Experts { input: true }, false) => (l.rows, l.cols / tp, l.count),
                (Split::Experts { .. }, true) => (l.rows, l.cols, l.count / world),
            };
            bytes += count * shapes::linear_bytes(rows, cols, fp8 && l.fp8);
        }
        let embeddings = shapes::embedding_parameters(cfg).div_ceil(cfg.vocab_size as u64) * (cfg.vocab_size as u64).div_ceil(tp);
        bytes + 2 * (embeddings + shapes::small_parameters(cfg))
    }

    /// Sequences the instance serves at once when each GPU's pool holds `seqs_per_gpu`: the
    /// ranks of a tensor-parallel group all keep every latent of the group's sequences (MLA's
    /// cache has no head dimension to split), data-parallel groups keep only their own.
    pub fn sequences(&self, seqs_per_gpu: usize) -> usize {
        seqs_per_gpu * self.data_parallel
    }

    /// Bytes each token moves through collectives in one decode step, summed over layers, as the
    /// payload each rank contributes (a ring all-reduce sends about twice that over the wire).
    pub fn collective_bytes_per_token(&self, cfg: &ModelConfig) -> CollectiveVolume {
        let h = cfg.hidden_size as u64 * 2; // bf16 hidden state
        let (tp, dp) = (self.tensor_parallel, self.data_parallel);
        let layers = cfg.num_hidden_layers as u64;
        let moe_layers = shapes::moe_layer_count(cfg);
        let mut v = CollectiveVolume::default();
        if tp > 1 {
            // o_proj and the MLP (dense, shared + routed) are row-parallel: one all-reduce each
            v.all_reduce = 2 * h * layers;
            // vocab-parallel lm_head: each rank's logits shard is gathered (f32)
            v.all_gather = cfg.vocab_size as u64 * 4;
        }
        if dp > 1 && moe_layers > 0 && self.expert_parallel {
            // every rank runs its experts over every group's rows (f32). With one rank per group
            // each owns an equal slot of them: all-gathered in, reduce-scattered out (decode
            // steps; a lopsided prefill packs instead). With several ranks per group the packed
            // rows are summed in and out by an all-reduce each way, twice those bytes on the
            // wire. (A dispatch to only the ranks of a token's k experts would move k/world of
            // it: not built.)
            let row = cfg.hidden_size as u64 * 4 * moe_layers;
            if tp == 1 {
                v.all_gather += row;
                v.reduce_scatter += row;
            } else {
                v.all_reduce += 2 * row;
            }
        }
        // Without expert parallelism each attention group holds every expert (sliced over its
        // tensor-parallel ranks) and runs its own tokens: nothing crosses groups.
        // EP inside one TP group needs nothing more: the MoE input is on every rank already and
        // the MLP's all-reduce combines the experts' outputs.
        v
    }
}

/// Bytes per token per decode step by collective.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CollectiveVolume {
    pub all_reduce: u64,
    pub all_gather: u64,
    pub reduce_scatter: u64,
}

impl CollectiveVolume {
    pub fn total(&self) -> u64 {
        self.all_reduce + self.all_gather + self.reduce_scatter
    }
}
