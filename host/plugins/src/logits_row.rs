//! One sequence's logits row as the `logits` resource holds it (kept apart from the host
//! methods so the generated bindings can name it without a cycle).

/// One row of a step's logits, shared without copying: the whole batch behind an `Arc`.
pub struct LogitsRow {
    pub batch: std::sync::Arc<Vec<f32>>,
    pub range: std::ops::Range<usize>,
}

impl LogitsRow {
    pub fn values(&self) -> &[f32] {
        self.batch.get(self.range.clone()).unwrap_or(&[])
    }
}
