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

    pub fn last_of(&self, seq: usize) -> Option<&[f32]> {
        self.last_range(seq).map(|r| &self.data[r])
    }
}
