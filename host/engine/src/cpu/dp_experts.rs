//! The MoE layer of one rank under data-parallel attention with expert parallelism: each
//! attention group holds only its own sequences' tokens, while the routed experts are spread
//! over every rank of the instance. Every group's tokens are gathered (from one rank per group,
//! so none is counted twice), each rank runs its experts over all of them, the partial outputs
//! are summed over the instance and each group keeps its own rows. The shared experts stay with
//! the group (sliced over its tensor-parallel ranks) and run over its own tokens only.

use super::ops::Fp8Inputs;
use super::moe;
use crate::comm::Communicator;
use crate::config::MoeConfig;
use crate::weights::Moe;
use crate::{EngineError, Result};
use std::sync::Arc;

/// A rank's place among the instance's attention groups.
pub struct ExpertGroup {
    /// Every rank of the instance.
    pub comm: Arc<dyn Communicator>,
    /// This rank's attention group.
    pub group: usize,
    /// The group's first rank, which contributes the group's tokens.
    pub leader: bool,
}

/// The MoE output for this group's `t` tokens `h` (complete: summed over the instance and the
/// group). `group_comm` is the group's tensor-parallel communicator (none for one rank).
#[allow(clippy::too_many_arguments)]
pub fn moe_over_groups(g: &ExpertGroup, group_comm: Option<&dyn Communicator>, m: &Moe, cfg: &MoeConfig, h: &[f32], t: usize, hidden: usize, fp8: Fp8Inputs) -> Result<Vec<f32>> {
    let (mine, count): (&[f32], &[f32]) = if g.leader { (h, &[t as f32]) } else { (&[], &[]) };
    let all = g.comm.all_gather(mine)?;
    let counts: Vec<usize> = g.comm.all_gather(count)?.iter().map(|&c| c as usize).collect();
    let total = all.len() / hidden;
    if counts.iter().sum::<usize>() != total || counts.get(g.group) != Some(&t) {
        return Err(EngineError::Collective(format!("gathered {total} tokens from groups of {counts:?}; group {} has {t}", g.group)));
    }
    let offset: usize = counts[..g.group].iter().sum();
    let mut routed = moe::routed(m, cfg, &all, total, hidden, fp8);
    g.comm.all_reduce_sum(&mut routed)?;
    let mut out = routed[offset * hidden..(offset + t) * hidden].to_vec();
    if let Some(shared) = &m.shared {
        let mut s = moe::mlp(shared, h, t, fp8);
        if let Some(c) = group_comm {
            c.all_reduce_sum(&mut s)?;
        }
        out.iter_mut().zip(&s).for_each(|(o, s)| *o += s);
    }
    Ok(out)
}
