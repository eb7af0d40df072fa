//! A tensor-parallel group of CPU ranks in one process: the reference the device split is
//! checked against, and the test that a shard's arithmetic matches the whole model. Each rank
//! holds its share of the weights (`shard`) and its own latent cache (under plain tensor
//! parallelism every rank stores every latent: MLA's cache has no head dimension to split), runs
//! the same batch on its own thread, and meets the others at each collective. It is a test
//! backend, not a way to serve faster: the ranks share one machine's cores.

use super::{CpuBackend, CpuOptions};
use crate::batch::{Backend, CacheGeometry, Logits, SeqChunk};
use crate::comm::{Communicator, LocalGroup};
use crate::config::ModelConfig;
use crate::parallel::ParallelLayout;
use crate::shard::{shard, vocab_range};
use crate::weights::ModelWeights;
use crate::{EngineError, Result};
use std::sync::Arc;

pub struct CpuTensorParallel {
    ranks: Vec<CpuBackend>,
    comms: Vec<Arc<dyn Communicator>>,
}

impl CpuTensorParallel {
    /// `layout.tensor_parallel` ranks of the model, each with a cache of `opts.geometry`.
    pub fn new(cfg: &ModelConfig, weights: &ModelWeights, layout: ParallelLayout, opts: CpuOptions) -> Result<Self> {
        let comms: Vec<Arc<dyn Communicator>> = LocalGroup::new(layout.tensor_parallel).into_iter().map(|c| Arc::new(c) as Arc<dyn Communicator>).collect();
        let ranks = comms
            .iter()
            .enumerate()
            .map(|(rank, comm)| {
                let (rank_cfg, rank_weights) = shard(cfg, weights, layout, rank)?;
                CpuBackend::rank(rank_cfg, Arc::new(rank_weights), opts, comm.clone())
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { ranks, comms })
    }

    /// Weight bytes each rank holds.
    pub fn rank_weight_bytes(&self) -> Vec<usize> {
        self.ranks.iter().map(|r| r.weights.bytes()).collect()
    }
}

impl Backend for CpuTensorParallel {
    fn cache_geometry(&self) -> CacheGeometry {
        self.ranks[0].cache_geometry()
    }

    /// Every rank runs the batch; they end with the same logits, rank 0's are returned. A rank
    /// that fails or panics releases the others (the group is then unusable).
    fn forward(&mut self, batch: &[SeqChunk<'_>]) -> Result<Logits> {
        let comms = &self.comms;
        let results: Vec<Result<Logits>> = std::thread::scope(|s| {
            let handles: Vec<_> = self
                .ranks
                .iter_mut()
                .zip(comms)
                .map(|(rank, comm)| {
                    s.spawn(move || {
                        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rank.forward(batch)))
                            .unwrap_or_else(|_| Err(EngineError::Collective("a rank panicked".into())));
                        if out.is_err() {
                            comm.abandon();
                        }
                        out
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(EngineError::Collective("a rank thread died".into())))).collect()
        });
        let mut first = None;
        for r in results {
            match (r, &first) {
                (Err(e), _) => return Err(e),
                (Ok(l), None) => first = Some(l),
                (Ok(_), Some(_)) => {}
            }
        }
        first.ok_or_else(|| EngineError::Collective("a group without ranks".into()))
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
