//! One rank's share of a model under tensor parallelism (and expert parallelism inside the
//! tensor-parallel group), cut from the whole model's weights as `shapes::linears` says each
//! matrix splits: attention heads (q / q_b, kv_b by output rows, o_proj by input columns), the
//! dense and shared MLPs (gate/up by rows, down by columns), the routed experts (each sliced
//! like the MLP, or whole experts spread over the ranks), and the vocabulary (lm_head rows).
//! The rank's config says what its matrices hold (its heads, its MLP widths), so a backend runs
//! a shard unchanged; the row-parallel outputs are summed and the logits gathered across ranks
//! (`comm::Communicator`). The low-rank down-projections, the norms, the router and the
//! embedding stay whole on every rank.

use crate::config::ModelConfig;
use crate::parallel::ParallelLayout;
use crate::tensor::Matrix;
use crate::weights::{AttentionWeights, FeedForward, LayerWeights, Mlp, ModelWeights, Moe, QueryProj};
use crate::{EngineError, Result};
use std::ops::Range;

/// Rank `rank`'s config and weights under `layout`: tensor parallel over the ranks of its
/// attention group (`rank % tensor_parallel` of them), with the routed experts spread whole over
/// every rank of the instance under expert parallelism, or sliced like the dense MLP over the
/// group's ranks without it. With data-parallel attention the groups are ranks
/// `g * tensor_parallel ..`; each holds the attention, the dense and shared MLPs and the
/// vocabulary split over its own ranks.
pub fn shard(cfg: &ModelConfig, w: &ModelWeights, layout: ParallelLayout, rank: usize) -> Result<(ModelConfig, ModelWeights)> {
    let plan = RankShard::plan(cfg, layout, rank)?;
    let weights = ModelWeights {
        embed: w.embed.clone(),
        layers: w.layers.iter().map(|l| plan.layer(l)).collect(),
        norm: w.norm.clone(),
        lm_head: plan.lm_head(&w.lm_head),
    };
    Ok((plan.cfg, weights))
}

/// How one rank's share is cut, layer by layer, so a loader can shard each layer as it reads
/// it (the whole model never in memory at once).
pub struct RankShard {
    /// The rank's config: its heads and MLP widths.
    pub cfg: ModelConfig,
    heads: Heads,
    part: Part,
    experts: Experts,
    vocab: Range<usize>,
}

impl RankShard {
    pub fn plan(cfg: &ModelConfig, layout: ParallelLayout, rank: usize) -> Result<Self> {
        let (tp, world) = (layout.tensor_parallel, layout.world());
        layout.validate(cfg, world)?;
        if rank >= world {
            return Err(EngineError::Layout(format!("rank {rank} of an instance of {world}")));
        }
        let part = Part { rank: rank % tp, of: tp };
        let mut rank_cfg = cfg.clone();
        rank_cfg.num_attention_heads = cfg.num_attention_heads / tp;
        rank_cfg.intermediate_size = cfg.intermediate_size / tp;
        let experts = match (&mut rank_cfg.moe, layout.expert_parallel) {
            (Some(m), true) => Experts::Spread(Part { rank, of: world }.range(m.n_routed_experts)),
            (Some(m), false) => {
                m.moe_intermediate_size /= tp;
                Experts::Sliced
            }
            (None, _) => Experts::Sliced,
        };
        let heads = Heads { part, count: cfg.num_attention_heads, qk: cfg.qk_head_dim(), kv_b: cfg.qk_nope_head_dim + cfg.v_head_dim, v: cfg.v_head_dim };
        Ok(Self { cfg: rank_cfg, heads, part, experts, vocab: part.uneven_range(cfg.vocab_size) })
    }

    /// The rank's share of one layer.
    pub fn layer(&self, l: &LayerWeights) -> LayerWeights {
        shard_layer(l, &self.heads, self.part, &self.experts)
    }

    /// The rank's vocabulary rows of the lm_head.
    pub fn lm_head(&self, m: &Matrix) -> Matrix {
        m.rows_slice(self.vocab.start, self.vocab.len())
    }
}

/// The vocabulary rows rank `rank` of `tp` computes logits for (the last rank's may be fewer).
pub fn vocab_range(vocab: usize, rank: usize, tp: usize) -> Range<usize> {
    Part { rank, of: tp }.uneven_range(vocab)
}

#[derive(Clone, Copy)]
struct Part {
    rank: usize,
    of: usize,
}

impl Part {
    /// This rank's share of `n` items that split evenly.
    fn range(self, n: usize) -> Range<usize> {
        let per = n / self.of;
        self.rank * per..(self.rank + 1) * per
    }

    /// This rank's share of `n` items in ceil-sized parts.
    fn uneven_range(self, n: usize) -> Range<usize> {
        let per = n.div_ceil(self.of);
        (self.rank * per).min(n)..((self.rank + 1) * per).min(n)
    }
}

enum Experts {
    /// Every expert on every rank, each sliced like the dense MLP.
    Sliced,
    /// Whole experts, this range of them on this rank.
    Spread(Range<usize>),
}

struct Heads {
    part: Part,
    count: usize,
    qk: usize,
    /// Rows of kv_b per head (W_UK then W_UV).
    kv_b: usize,
    v: usize,
}

impl Heads {
    /// This rank's heads' rows of a matrix with `per_head` rows per head.
    fn rows(&self, m: &Matrix, per_head: usize) -> Matrix {
        let h = self.part.range(self.count);
        m.rows_slice(h.start * per_head, h.len() * per_head)
    }
}

fn shard_layer(l: &LayerWeights, heads: &Heads, part: Part, experts: &Experts) -> LayerWeights {
    let a = &l.attn;
    let q = match &a.q {
        QueryProj::Direct(m) => QueryProj::Direct(heads.rows(m, heads.qk)),
        QueryProj::LowRank { a: qa, norm, b } => QueryProj::LowRank { a: qa.clone(), norm: norm.clone(), b: heads.rows(b, heads.qk) },
    };
    let own = heads.part.range(heads.count);
    let attn = AttentionWeights {
        q,
        kv_a: a.kv_a.clone(),
        kv_a_norm: a.kv_a_norm.clone(),
        kv_b: heads.rows(&a.kv_b, heads.kv_b),
        o: a.o.cols_slice(own.start * heads.v, own.len() * heads.v),
    };
    let ffn = match &l.ffn {
        FeedForward::Dense(m) => FeedForward::Dense(slice_mlp(m, part)),
        FeedForward::Moe(m) => FeedForward::Moe(shard_moe(m, part, experts)),
    };
    LayerWeights { input_norm: l.input_norm.clone(), post_attention_norm: l.post_attention_norm.clone(), attn, ffn }
}

/// This rank's slice of a gated MLP: its gate rows and its up rows (gate_up stacks the two), and
/// the matching columns of down.
fn slice_mlp(m: &Mlp, part: Part) -> Mlp {
    let inter = m.gate_up.rows / 2;
    let r = part.range(inter);
    let gate = m.gate_up.rows_slice(r.start, r.len());
    let up = m.gate_up.rows_slice(inter + r.start, r.len());
    Mlp { gate_up: gate.stacked_over(up), down: m.down.cols_slice(r.start, r.len()) }
}

fn whole(m: &Mlp) -> Mlp {
    Mlp { gate_up: m.gate_up.clone(), down: m.down.clone() }
}

fn shard_moe(m: &Moe, part: Part, experts: &Experts) -> Moe {
    let (first_expert, routed) = match experts {
        Experts::Sliced => (m.first_expert, m.experts.iter().map(|e| slice_mlp(e, part)).collect()),
        Experts::Spread(r) => (r.start, m.experts[r.start - m.first_expert..r.end - m.first_expert].iter().map(whole).collect()),
    };
    Moe {
        router: m.router.clone(),
        score_bias: m.score_bias.clone(),
        first_expert,
        experts: routed,
        shared: m.shared.as_ref().map(|s| slice_mlp(s, part)),
    }
}
