//! The host side of the `logits` resource: one sequence's logits row, read by a sampler plugin
//! through bounded methods (the row itself never crosses into the guest whole).

use crate::bindings::sampler::mlahost::plugin::logits_access::{Host, HostLogits, TokenLogit};
use crate::sandbox::Sandbox;
use crate::logits_row::LogitsRow;
use wasmtime::component::Resource;

/// Caps on what one method call may return.
const MAX_TOP_K: u32 = 1024;
const MAX_RANGE: u32 = 65536;
const MAX_IDS: usize = 65536;

impl Host for Sandbox {}

impl HostLogits for Sandbox {
    fn vocab_size(&mut self, row: Resource<LogitsRow>) -> u32 {
        self.table.get(&row).map_or(0, |r| r.values().len() as u32)
    }

    fn top_k(&mut self, row: Resource<LogitsRow>, k: u32) -> Vec<TokenLogit> {
        let Ok(r) = self.table.get(&row) else { return Vec::new() };
        let top = mlahost_core_topk(r.values(), k.min(MAX_TOP_K) as usize);
        top.into_iter().map(|id| TokenLogit { id, logit: r.values()[id as usize] }).collect()
    }

    fn read_range(&mut self, row: Resource<LogitsRow>, start: u32, len: u32) -> Vec<f32> {
        let Ok(r) = self.table.get(&row) else { return Vec::new() };
        let start = (start as usize).min(r.values().len());
        let end = start.saturating_add(len.min(MAX_RANGE) as usize).min(r.values().len());
        r.values()[start..end].to_vec()
    }

    fn argmax(&mut self, row: Resource<LogitsRow>) -> u32 {
        self.table.get(&row).map_or(0, |r| mlahost_core_topk(r.values(), 1).first().copied().unwrap_or(0))
    }

    fn logprobs(&mut self, row: Resource<LogitsRow>, ids: Vec<u32>) -> Vec<f32> {
        let Ok(r) = self.table.get(&row) else { return Vec::new() };
        let max = r.values().iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let lse = max + r.values().iter().map(|&l| (l as f64 - max).exp()).sum::<f64>().ln();
        ids.iter()
            .take(MAX_IDS)
            .map(|&i| r.values().get(i as usize).map_or(f32::NEG_INFINITY, |&l| (l as f64 - lse) as f32))
            .collect()
    }

    fn drop(&mut self, row: Resource<LogitsRow>) -> wasmtime::Result<()> {
        self.table.delete(row)?;
        Ok(())
    }
}

/// Indices of the `k` largest values, best first (ties: lower id first).
fn mlahost_core_topk(values: &[f32], k: usize) -> Vec<u32> {
    let k = k.min(values.len());
    if k == 0 {
        return Vec::new();
    }
    let mut idx: Vec<u32> = (0..values.len() as u32).collect();
    let cmp = |a: &u32, b: &u32| values[*b as usize].total_cmp(&values[*a as usize]).then(a.cmp(b));
    idx.select_nth_unstable_by(k - 1, cmp);
    idx.truncate(k);
    idx.sort_by(cmp);
    idx
}
