//! The ranks of one model instance as threads of this process: the reference a device split is
//! checked against, and the test that a shard's arithmetic matches the whole model. Each rank
//! holds its share of the weights (`shard`) and its own latent cache, runs on its own thread
//! and meets the others at each collective. Under plain tensor parallelism every rank gets the
//! whole batch and stores every latent (MLA's cache has no head dimension to split). Under
//! data-parallel attention the cache's page ids are split into one pool per attention group
//! (the scheduler keeps each sequence in one pool): a group runs attention only for the
//! sequences whose pages it holds, and stores only their latents. It is a test backend, not a
//! way to serve faster: the ranks share one machine's cores.

use super::dp_experts::ExpertGroup;
use super::{CpuBackend, CpuOptions};
use crate::attention_groups::{merge_in_batch_order, split_by_group};
use crate::batch::{validate_batch, Backend, CacheGeometry, Logits, SeqChunk};
use crate::comm::{Communicator, LocalGroup};
use crate::config::ModelConfig;
use crate::parallel::ParallelLayout;
use crate::shard::{shard, vocab_range};
use crate::weights::ModelWeights;
use crate::{EngineError, Result};
use mlahost_core::PageId;
use std::sync::Arc;

pub struct CpuRankGroup {
    ranks: Vec<CpuBackend>,
    /// Each rank's end of its attention group's collectives (the instance's, without DP).
    comms: Vec<Arc<dyn Communicator>>,
    /// Under data-parallel attention with expert parallelism, each rank's end of the instance's.
    expert_comms: Vec<Arc<dyn Communicator>>,
    layout: ParallelLayout,
    vocab: usize,
}

impl CpuRankGroup {
    /// The ranks of `layout`. Their caches together hold `opts.geometry`'s pages: every rank all
    /// of them without data-parallel attention; with it, each group an equal share (pages that
    /// do not divide evenly are left out).
    pub fn new(cfg: &ModelConfig, weights: &ModelWeights, layout: ParallelLayout, opts: CpuOptions) -> Result<Self> {
        let (tp, dp) = (layout.tensor_parallel, layout.data_parallel);
        layout.validate(cfg, layout.world())?;
        let per_group = opts.geometry.num_pages / dp;
        if per_group == 0 {
            return Err(EngineError::Layout(format!("{} cache pages cannot be shared by {dp} attention groups", opts.geometry.num_pages)));
        }
        let rank_opts = CpuOptions { geometry: CacheGeometry { num_pages: per_group, ..opts.geometry }, ..opts };
        let comms: Vec<Arc<dyn Communicator>> = (0..dp).flat_map(|_| LocalGroup::new(tp)).map(|c| Arc::new(c) as Arc<dyn Communicator>).collect();
        let spread = dp > 1 && layout.expert_parallel;
        let expert_comms: Vec<Arc<dyn Communicator>> = match spread {
            true => LocalGroup::new(layout.world()).into_iter().map(|c| Arc::new(c) as Arc<dyn Communicator>).collect(),
            false => Vec::new(),
        };
        let ranks = comms
            .iter()
            .enumerate()
            .map(|(rank, comm)| {
                let (rank_cfg, rank_weights) = shard(cfg, weights, layout, rank)?;
                let mut b = CpuBackend::rank(rank_cfg, Arc::new(rank_weights), rank_opts, comm.clone())?;
                if let Some(all) = expert_comms.get(rank) {
                    b.join_expert_group(ExpertGroup { comm: all.clone(), group: rank / tp, leader: rank % tp == 0 });
                }
                Ok(b)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { ranks, comms, expert_comms, layout, vocab: cfg.vocab_size })
    }

    /// Weight bytes each rank holds.
    pub fn rank_weight_bytes(&self) -> Vec<usize> {
        self.ranks.iter().map(|r| r.weights.bytes()).collect()
    }

    /// Pages each rank's cache holds.
    pub fn rank_cache_pages(&self) -> Vec<usize> {
        self.ranks.iter().map(|r| r.cache_geometry().num_pages).collect()
    }

    /// Pages each attention group's cache holds.
    fn pages_per_group(&self) -> usize {
        self.ranks[0].cache_geometry().num_pages
    }

    /// Per attention group, the batch's sequences it serves (`attention_groups`).
    fn split_by_group(&self, batch: &[SeqChunk<'_>]) -> Result<Vec<Vec<(usize, Vec<PageId>)>>> {
        split_by_group(batch, self.layout.data_parallel, self.pages_per_group(), self.ranks[0].cache_geometry().page_size)
    }
}

impl Backend for CpuRankGroup {
    fn cache_geometry(&self) -> CacheGeometry {
        let g = self.ranks[0].cache_geometry();
        CacheGeometry { num_pages: g.num_pages * self.layout.data_parallel, ..g }
    }

    fn weight_storage(&self) -> Option<crate::batch::WeightStorage> {
        self.ranks.first().and_then(|r| r.weight_storage())
    }

    fn cache_pools(&self) -> usize {
        self.layout.data_parallel
    }

    /// Every rank runs its group's share of the batch (an empty one too: the collectives need
    /// every rank); the logits come from each group's first rank, in batch order. A rank that
    /// fails or panics releases the others (the ranks are then unusable).
    fn forward(&mut self, batch: &[SeqChunk<'_>]) -> Result<Logits> {
        validate_batch(batch, self.vocab, self.cache_geometry())?;
        // One attention group runs the batch as it is: no page ids to translate, no logits to
        // reorder.
        let single = self.layout.data_parallel == 1;
        let groups = if single { Vec::new() } else { self.split_by_group(batch)? };
        let sub: Vec<Vec<SeqChunk<'_>>> = groups
            .iter()
            .map(|g| g.iter().map(|(i, table)| SeqChunk { block_table: table, ..batch[*i] }).collect())
            .collect();
        let tp = self.layout.tensor_parallel;
        let (comms, expert_comms) = (&self.comms, &self.expert_comms);
        let results: Vec<Result<Logits>> = std::thread::scope(|s| {
            let handles: Vec<_> = self
                .ranks
                .iter_mut()
                .enumerate()
                .map(|(rank, backend)| {
                    let chunks: &[SeqChunk<'_>] = if single { batch } else { &sub[rank / tp] };
                    s.spawn(move || {
                        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| backend.forward(chunks)))
                            .unwrap_or_else(|_| Err(EngineError::Collective("a rank panicked".into())));
                        if out.is_err() {
                            comms[rank].abandon();
                            if let Some(c) = expert_comms.get(rank) {
                                c.abandon();
                            }
                        }
                        out
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(EngineError::Collective("a rank thread died".into())))).collect()
        });
        let mut leaders = Vec::with_capacity(self.layout.data_parallel);
        for (rank, r) in results.into_iter().enumerate() {
            let logits = r?;
            if rank % tp == 0 {
                leaders.push(logits);
            }
        }
        if single {
            return leaders.pop().ok_or_else(|| EngineError::Collective("a group without ranks".into()));
        }
        Ok(merge_in_batch_order(&groups, leaders, batch.len(), self.vocab))
    }
}


/// Rows of vocabulary-parallel logits (`local`: `rows` x this rank's vocabulary range) made
/// whole: every rank's shard gathered and laid out row by row.
pub(super) fn gather_vocab(comm: &dyn Communicator, local: &[f32], rows: usize, vocab: usize) -> Result<Vec<f32>> {
    let world = comm.world();
    let gathered = comm.all_gather(local)?;
    let ranges: Vec<_> = (0..world).map(|r| vocab_range(vocab, r, world)).collect();
    if gathered.len() != rows * vocab {
        return Err(EngineError::Collective(format!("gathered {} logits for {rows} rows of {vocab}", gathered.len())));
    }
    let mut out = vec![0f32; rows * vocab];
    let mut at = 0;
    for range in ranges {
        let w = range.len();
        for row in 0..rows {
            out[row * vocab + range.start..row * vocab + range.end].copy_from_slice(&gathered[at + row * w..at + (row + 1) * w]);
        }
        at += rows * w;
    }
    Ok(out)
}
