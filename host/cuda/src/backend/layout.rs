//! Host-side layout of one ragged batch: the order tokens take on the device (decodes first,
//! so they form one launch), per-token metadata, and the attention launches to make.

use crate::kernels::decode::{plan_splits, DecodeKernel, DecodeTarget, SplitPlan};
use mlahost_engine::{LogitsRequest, SeqChunk};

/// One fast-kernel attention launch over sequences whose tokens are contiguous on the device.
pub struct FastLaunch {
    /// First device token and sequence (row of the launch's block-table block).
    pub first_token: usize,
    pub batch: usize,
    pub q_len: usize,
    pub plan: SplitPlan,
    /// Offsets (in i32 elements) of this launch's block table, seq_lens and split offsets in the meta buffer.
    pub block_table_at: usize,
    pub seq_lens_at: usize,
    pub splits_at: usize,
}

pub struct BatchLayout {
    pub tokens: usize,
    /// Batch indices in device order.
    pub order: Vec<usize>,
    pub max_pages: usize,
    /// i32 metadata, uploaded in one copy: token ids, positions, sequence of each token, block
    /// tables of all sequences (device order), logits rows, then the fast launches' tables.
    pub meta: Vec<i32>,
    pub ids_at: usize,
    pub pos_at: usize,
    pub seq_at: usize,
    pub tables_at: usize,
    pub rows_at: usize,
    /// i64 cache slot of every token.
    pub slots: Vec<i64>,
    /// Device token index of each logits row, and per batch entry its row range.
    pub logit_rows: usize,
    pub row_ranges: Vec<std::ops::Range<usize>>,
    pub fast: Vec<FastLaunch>,
}

impl BatchLayout {
    /// `fast`: whether the tiled kernels apply (576-wide bf16 cache); otherwise one generic launch.
    /// `bucket`: for a decode-only batch replayed from a CUDA graph, the length every shape is
    /// planned for (block-table stride and split grid), so the layout depends only on the batch
    /// size and the bucket.
    pub fn new(batch: &[SeqChunk<'_>], page_size: usize, target: &DecodeTarget, heads: usize, fast: bool, fp8: bool, bucket: Option<usize>) -> Self {
        let mut order: Vec<usize> = (0..batch.len()).filter(|&i| batch[i].tokens.len() == 1).collect();
        let decodes = order.len();
        order.extend((0..batch.len()).filter(|&i| batch[i].tokens.len() > 1));
        let tokens: usize = batch.iter().map(|c| c.tokens.len()).sum();
        let needed = batch.iter().map(|c| (c.start_pos + c.tokens.len()).div_ceil(page_size)).max().unwrap_or(1).max(1);
        let max_pages = bucket.map_or(needed, |b| b.div_ceil(page_size).max(needed));
        let mut meta = Vec::with_capacity(tokens * 3 + batch.len() * max_pages + batch.len() * 4);
        let mut slots = Vec::with_capacity(tokens);
        let ids_at = 0;
        for &i in &order {
            meta.extend(batch[i].tokens.iter().map(|&t| t as i32));
        }
        let pos_at = meta.len();
        for &i in &order {
            let c = &batch[i];
            for p in c.start_pos..c.start_pos + c.tokens.len() {
                meta.push(p as i32);
                slots.push(c.block_table[p / page_size] as i64 * page_size as i64 + (p % page_size) as i64);
            }
        }
        let seq_at = meta.len();
        for (d, &i) in order.iter().enumerate() {
            meta.extend(std::iter::repeat_n(d as i32, batch[i].tokens.len()));
        }
        let tables_at = meta.len();
        for &i in &order {
            let bt = batch[i].block_table;
            let used = (batch[i].start_pos + batch[i].tokens.len()).div_ceil(page_size);
            meta.extend(bt[..used].iter().map(|&p| p as i32));
            meta.extend(std::iter::repeat_n(0, max_pages - used));
        }
        // logits rows (device token indices) in batch order
        let mut first_token = vec![0usize; batch.len()];
        let mut t = 0;
        for &i in &order {
            first_token[i] = t;
            t += batch[i].tokens.len();
        }
        let rows_at = meta.len();
        let mut row_ranges = Vec::with_capacity(batch.len());
        let mut logit_rows = 0;
        for (i, c) in batch.iter().enumerate() {
            let n = c.tokens.len();
            let wanted = match c.logits {
                LogitsRequest::None => 0..0,
                LogitsRequest::Last => n - 1..n,
                LogitsRequest::All => 0..n,
            };
            let start = logit_rows;
            for k in wanted {
                meta.push((first_token[i] + k) as i32);
                logit_rows += 1;
            }
            row_ranges.push(start..logit_rows);
        }
        let mut launches = Vec::new();
        if fast {
            let mut add = |first_seq: usize, seqs: &[usize], q_len: usize, meta: &mut Vec<i32>| {
                let lens: Vec<usize> = seqs.iter().map(|&i| batch[i].start_pos + batch[i].tokens.len()).collect();
                let plan = if let (Some(b), 1) = (bucket, q_len) {
                    let uniform = plan_splits(&vec![b; lens.len()], 1, heads, target, fp8);
                    SplitPlan::with_chunk(uniform.kernel, uniform.chunk, uniform.max_splits, &lens)
                } else if q_len == 1 {
                    plan_splits(&lens, 1, heads, target, fp8)
                } else {
                    SplitPlan::single(DecodeKernel::choose(q_len, heads, target.hopper, fp8), &lens)
                };
                let seq_lens_at = meta.len();
                meta.extend(lens.iter().map(|&l| l as i32));
                let splits_at = meta.len();
                meta.extend_from_slice(&plan.offsets);
                launches.push(FastLaunch {
                    first_token: first_token[seqs[0]],
                    batch: seqs.len(),
                    q_len,
                    plan,
                    block_table_at: tables_at + first_seq * max_pages,
                    seq_lens_at,
                    splits_at,
                });
            };
            if decodes > 0 {
                add(0, &order[..decodes], 1, &mut meta);
            }
            for d in decodes..order.len() {
                let i = order[d];
                add(d, &order[d..d + 1], batch[i].tokens.len(), &mut meta);
            }
        }
        Self { tokens, order, max_pages, meta, ids_at, pos_at, seq_at, tables_at, rows_at, slots, logit_rows, row_ranges, fast: launches }
    }

    /// Largest number of split partial slots any fast launch needs.
    pub fn max_partial_slots(&self, heads: usize) -> usize {
        self.fast.iter().filter(|l| l.plan.needs_combine()).map(|l| l.plan.total_splits() * l.q_len * heads).max().unwrap_or(0)
    }
}
