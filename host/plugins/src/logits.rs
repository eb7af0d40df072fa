//! The host side of the `logits` resource of both package versions: bounded reads of a
//! step's rows by a sampler plugin (a row never crosses into the guest whole).

use crate::bindings::{v1, v2};
use crate::logits_row::LogitsRows;
use crate::sandbox::Sandbox;
use wasmtime::component::Resource;

/// Caps on what one method call may return.
const MAX_TOP_K: u32 = 1024;
const MAX_RANGE: u32 = 65536;
const MAX_IDS: usize = 65536;

fn rows<'a>(s: &'a Sandbox, r: &Resource<LogitsRows>) -> Option<&'a LogitsRows> {
    s.table.get(r).ok()
}

fn top_k(values: &[f32], k: u32) -> Vec<(u32, f32)> {
    topk_ids(values, k.min(MAX_TOP_K) as usize).into_iter().map(|id| (id, values[id as usize])).collect()
}

fn read_range(values: &[f32], start: u32, len: u32) -> Vec<f32> {
    let start = (start as usize).min(values.len());
    let end = start.saturating_add(len.min(MAX_RANGE) as usize).min(values.len());
    values[start..end].to_vec()
}

fn argmax(values: &[f32]) -> u32 {
    topk_ids(values, 1).first().copied().unwrap_or(0)
}

fn logprobs(values: &[f32], ids: &[u32]) -> Vec<f32> {
    let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = max + values.iter().map(|&l| (l as f64 - max).exp()).sum::<f64>().ln();
    ids.iter().take(MAX_IDS).map(|&i| values.get(i as usize).map_or(f32::NEG_INFINITY, |&l| (l as f64 - lse) as f32)).collect()
}

impl v2::sampler::mlahost::plugin::logits_access::Host for Sandbox {}
impl v2::sampler::mlahost::plugin::vocabulary::Host for Sandbox {}

impl v2::sampler::mlahost::plugin::logits_access::HostLogits for Sandbox {
    fn vocab_size(&mut self, r: Resource<LogitsRows>) -> u32 {
        rows(self, &r).map_or(0, LogitsRows::vocab_size)
    }

    fn top_k(&mut self, r: Resource<LogitsRows>, row: u32, k: u32) -> Vec<v2::sampler::mlahost::plugin::logits_access::TokenLogit> {
        let Some(l) = rows(self, &r) else { return Vec::new() };
        top_k(l.row(row), k).into_iter().map(|(id, logit)| v2::sampler::mlahost::plugin::logits_access::TokenLogit { id, logit }).collect()
    }

    fn read_range(&mut self, r: Resource<LogitsRows>, row: u32, start: u32, len: u32) -> Vec<f32> {
        rows(self, &r).map_or_else(Vec::new, |l| read_range(l.row(row), start, len))
    }

    fn argmax(&mut self, r: Resource<LogitsRows>, row: u32) -> u32 {
        rows(self, &r).map_or(0, |l| argmax(l.row(row)))
    }

    fn logprobs(&mut self, r: Resource<LogitsRows>, row: u32, ids: Vec<u32>) -> Vec<f32> {
        rows(self, &r).map_or_else(Vec::new, |l| logprobs(l.row(row), &ids))
    }

    fn drop(&mut self, r: Resource<LogitsRows>) -> wasmtime::Result<()> {
        self.table.delete(r)?;
        Ok(())
    }
}

impl v1::sampler::mlahost::plugin::logits_access::Host for Sandbox {}

/// A 0.1.0 sampler's resource is one sequence: row 0.
impl v1::sampler::mlahost::plugin::logits_access::HostLogits for Sandbox {
    fn vocab_size(&mut self, r: Resource<LogitsRows>) -> u32 {
        rows(self, &r).map_or(0, LogitsRows::vocab_size)
    }

    fn top_k(&mut self, r: Resource<LogitsRows>, k: u32) -> Vec<v1::sampler::mlahost::plugin::logits_access::TokenLogit> {
        let Some(l) = rows(self, &r) else { return Vec::new() };
        top_k(l.row(0), k).into_iter().map(|(id, logit)| v1::sampler::mlahost::plugin::logits_access::TokenLogit { id, logit }).collect()
    }

    fn read_range(&mut self, r: Resource<LogitsRows>, start: u32, len: u32) -> Vec<f32> {
        rows(self, &r).map_or_else(Vec::new, |l| read_range(l.row(0), start, len))
    }

    fn argmax(&mut self, r: Resource<LogitsRows>) -> u32 {
        rows(self, &r).map_or(0, |l| argmax(l.row(0)))
    }

    fn logprobs(&mut self, r: Resource<LogitsRows>, ids: Vec<u32>) -> Vec<f32> {
        rows(self, &r).map_or_else(Vec::new, |l| logprobs(l.row(0), &ids))
    }

    fn drop(&mut self, r: Resource<LogitsRows>) -> wasmtime::Result<()> {
        self.table.delete(r)?;
        Ok(())
    }
}

/// Indices of the `k` largest values, best first (ties: lower id first).
fn topk_ids(values: &[f32], k: usize) -> Vec<u32> {
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
