//! The step's logits as the `logits` resource holds them (kept apart from the host methods so
//! the generated bindings can name it without a cycle).

/// Rows of a step's logits, shared without copying: the whole batch behind an `Arc` and each
/// sequence's range in it (a 0.1.0 sampler gets one resource per sequence, one row each).
pub struct LogitsRows {
    pub batch: std::sync::Arc<Vec<f32>>,
    pub rows: Vec<std::ops::Range<usize>>,
}

impl LogitsRows {
    /// Row `i`'s values; empty past the last row.
    pub fn row(&self, i: u32) -> &[f32] {
        self.rows.get(i as usize).and_then(|r| self.batch.get(r.clone())).unwrap_or(&[])
    }

    /// Entries per row (the vocabulary size); 0 without rows.
    pub fn vocab_size(&self) -> u32 {
        self.rows.first().map_or(0, |r| r.len() as u32)
    }
}
