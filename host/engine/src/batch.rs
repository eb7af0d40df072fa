//! The engine interface shared by the CPU and CUDA backends: one forward pass over a ragged
//! batch, each sequence bringing its own new tokens, positions and block table.

use crate::Result;
use mlahost_core::PageId;
use std::ops::Range;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitsRequest {
    /// Nothing (a prefill chunk that does not end the prompt).
    None,
    /// The last new token's logits (ends a prompt, or a decode step).
    Last,
    /// Every new token's logits (scoring, perplexity, speculative verification).
    All,
}

/// One sequence's share of a forward pass: `tokens` sit at positions
/// `start_pos .. start_pos + tokens.len()`; the block table must cover all of them, and the
/// cache already holds positions `0 .. start_pos`.
#[derive(Debug, Clone, Copy)]
pub struct SeqChunk<'a> {
    pub tokens: &'a [u32],
    pub start_pos: usize,
    pub block_table: &'a [PageId],
    pub logits: LogitsRequest,
}

/// Logits rows for the sequences that asked for them, f32 `[rows, vocab]`.
#[derive(Debug, Clone, Default)]
pub struct Logits {
    pub vocab: usize,
    pub data: Vec<f32>,
    /// Per sequence of the batch, its rows in `data` (empty when it asked for none).
    pub rows: Vec<Range<usize>>,
}

impl Logits {
    pub fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.vocab..(r + 1) * self.vocab]
    }

    /// The last row of sequence `seq`, if it asked for logits.
    pub fn last_of(&self, seq: usize) -> Option<&[f32]> {
        let range = self.rows.get(seq)?;
        (!range.is_empty()).then(|| self.row(range.end - 1))
    }
}

/// Shape of the paged latent cache a backend owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheGeometry {
    pub num_pages: usize,
    pub page_size: usize,
}

/// A model executor. `forward` writes the new tokens' latents into the cache pages named by
/// each block table and returns the requested logits.
pub trait Backend: Send {
    fn forward(&mut self, batch: &[SeqChunk<'_>]) -> Result<Logits>;
    fn cache_geometry(&self) -> CacheGeometry;
}
