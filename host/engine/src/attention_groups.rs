//! A batch over data-parallel attention groups: the instance's page ids are split into one
//! range per group (the scheduler keeps each sequence's pages in one pool), so a sequence
//! belongs to the group that owns its pages. Both the CPU and the GPU rank groups split each
//! step's batch this way and put the groups' logits back in batch order.

use crate::batch::{Logits, SeqChunk};
use crate::{EngineError, Result};
use mlahost_core::PageId;

/// Per group, the sequences of `batch` it serves: their index in `batch` and their block table
/// in the group's own page ids (`pages_per_group` pages each, pages of `page_size` tokens).
pub fn split_by_group(batch: &[SeqChunk<'_>], groups: usize, pages_per_group: usize, page_size: usize) -> Result<Vec<Vec<(usize, Vec<PageId>)>>> {
    let per = pages_per_group.max(1);
    let mut out = vec![Vec::new(); groups];
    for (i, c) in batch.iter().enumerate() {
        let used = &c.block_table[..(c.start_pos + c.tokens.len()).div_ceil(page_size).min(c.block_table.len())];
        let group = used.first().map_or(0, |&p| p as usize / per);
        if group >= groups || used.iter().any(|&p| p as usize / per != group) {
            return Err(EngineError::InvalidBatch(format!("sequence {i}: its pages span attention groups of {per} pages")));
        }
        let base = (group * per) as PageId;
        out[group].push((i, c.block_table.iter().map(|p| p.wrapping_sub(base)).collect()));
    }
    Ok(out)
}

/// Each group's share of `batch` as chunks over the group's own page ids.
pub fn group_batches<'a>(batch: &[SeqChunk<'a>], groups: &'a [Vec<(usize, Vec<PageId>)>]) -> Vec<Vec<SeqChunk<'a>>> {
    groups.iter().map(|g| g.iter().map(|(i, table)| SeqChunk { block_table: table, ..batch[*i] }).collect()).collect()
}

/// One `Logits` for the whole batch (`n` sequences) from each group's logits over its own.
pub fn merge_in_batch_order(groups: &[Vec<(usize, Vec<PageId>)>], per_group: Vec<Logits>, n: usize, vocab: usize) -> Logits {
    let mut out = Logits { vocab, data: Vec::new(), rows: vec![0..0; n] };
    let mut parts: Vec<(usize, usize, usize)> = Vec::new(); // (batch index, group, index in group)
    for (g, members) in groups.iter().enumerate() {
        parts.extend(members.iter().enumerate().map(|(j, (i, _))| (*i, g, j)));
    }
    parts.sort_unstable();
    for (i, g, j) in parts {
        let rows = per_group[g].rows[j].clone();
        let start = out.data.len() / vocab;
        out.data.extend_from_slice(&per_group[g].data[rows.start * vocab..rows.end * vocab]);
        out.rows[i] = start..start + rows.len();
    }
    out
}
