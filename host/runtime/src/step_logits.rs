//! A step's logits behind an `Arc`, so sampler plugins read rows without copying them.

use mlahost_engine::Logits;
use std::ops::Range;
use std::sync::Arc;

pub struct StepLogits {
    pub data: Arc<Vec<f32>>,
    vocab: usize,
    rows: Vec<Range<usize>>,
}

impl From<Logits> for StepLogits {
    fn from(l: Logits) -> Self {
        Self { data: Arc::new(l.data), vocab: l.vocab, rows: l.rows }
    }
}

impl StepLogits {
    /// Element range of sequence `seq`'s last row, if it asked for logits.
    pub fn last_range(&self, seq: usize) -> Option<Range<usize>> {
        let rows = self.rows.get(seq)?;
        (!rows.is_empty()).then(|| (rows.end - 1) * self.vocab..rows.end * self.vocab)
    }

    /// Row `j` of sequence `seq`'s rows, if it has that many.
    pub fn row_of(&self, seq: usize, j: usize) -> Option<&[f32]> {
        let rows = self.rows.get(seq)?;
        let r = rows.start + j;
        (r < rows.end).then(|| &self.data[r * self.vocab..(r + 1) * self.vocab])
    }

    pub fn last_of(&self, seq: usize) -> Option<&[f32]> {
        self.last_range(seq).map(|r| &self.data[r])
    }
}
