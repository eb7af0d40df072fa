//! A step of data-parallel attention on GPUs: the batch split by the attention group that owns
//! each sequence's pages (`engine::attention_groups`), every rank running its group's share (an
//! empty one too, when the MoE layers exchange rows across groups), the groups' logits put back
//! in batch order. Sampling runs on the host (the logits come back).

use super::ranks::{all, on_each, CudaRankGroup};
use super::{CudaBackend, DpStep};
use crate::Result;
use mlahost_engine::attention_groups::{group_batches, merge_in_batch_order, split_by_group};
use mlahost_engine::batch::{Logits, SeqChunk};

impl CudaRankGroup {
    pub(super) fn run_groups(&mut self, batch: &[SeqChunk<'_>]) -> Result<Logits> {
        let (tp, dp, exchange) = (self.layout.tensor_parallel, self.layout.data_parallel, self.layout.expert_parallel);
        let geo = self.ranks[0].geometry;
        let vocab = self.ranks[0].cfg.vocab_size;
        let groups = split_by_group(batch, dp, geo.num_pages, geo.page_size)?;
        let subs = group_batches(batch, &groups);
        let counts: Vec<usize> = subs.iter().map(|s| s.iter().map(|c| c.tokens.len()).sum()).collect();
        let total: usize = counts.iter().sum();
        // one slot per rank when every rank is its group's only one and padding the groups to
        // the largest at most doubles the rows (decode steps; a lopsided prefill packs instead)
        let slot = counts.iter().copied().max().unwrap_or(0);
        let slots = self.slot_exchange && tp == 1 && dp * slot <= 2 * total;
        let results = on_each(self.ranks.iter_mut().collect(), &self.collectives, |rank, r: &mut CudaBackend| {
            let (g, leader) = (rank / tp, rank % tp == 0);
            let sub = &subs[g];
            if exchange {
                let step = match slots {
                    true => DpStep { total: dp * slot, offset: g * slot, leader, slots },
                    false => DpStep { total, offset: counts[..g].iter().sum(), leader, slots },
                };
                return r.forward_dp(sub, step, leader);
            }
            // without the exchange each group is a whole model of its own
            match (sub.is_empty(), leader) {
                (true, _) => Ok(None),
                (false, true) => r.forward_checked(sub).map(Some),
                (false, false) => r.forward_discarding(sub).map(|_| None),
            }
        });
        self.release_parked();
        let mut per_group: Vec<Logits> = (0..dp).map(|_| Logits { vocab, ..Logits::default() }).collect();
        for (rank, out) in all(results)?.into_iter().enumerate() {
            if let Some(logits) = out {
                per_group[rank / tp] = logits;
            }
        }
        Ok(merge_in_batch_order(&groups, per_group, batch.len(), vocab))
    }
}
