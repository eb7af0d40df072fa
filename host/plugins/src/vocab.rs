//! The model's vocabulary as a sampler plugin's `init` receives it (0.2.0 components).

use crate::bindings::v2::sampler::mlahost::plugin::vocabulary::Vocab;

/// Token id -> bytes (flattened), special ids and end-of-sequence ids, built once per server
/// and handed to every sampler instance's `init`.
#[derive(Debug, Clone)]
pub struct Vocabulary(pub(crate) Vocab);

impl Vocabulary {
    /// `tokens[id]` are token `id`'s bytes; `special` and `eos` are ids below `tokens.len()`.
    pub fn new(tokens: &[Vec<u8>], special: Vec<u32>, eos: Vec<u32>) -> Self {
        let mut bytes = Vec::with_capacity(tokens.iter().map(Vec::len).sum());
        let mut offsets = Vec::with_capacity(tokens.len() + 1);
        offsets.push(0u32);
        for t in tokens {
            bytes.extend_from_slice(t);
            offsets.push(u32::try_from(bytes.len()).unwrap_or(u32::MAX));
        }
        let n = tokens.len() as u32;
        let keep = |ids: Vec<u32>| ids.into_iter().filter(|&id| id < n).collect();
        Self(Vocab { bytes, offsets, special: keep(special), eos: keep(eos) })
    }

    /// No tokens (for plugin hosts without a model, e.g. tools and tests).
    pub fn empty() -> Self {
        Self::new(&[], Vec::new(), Vec::new())
    }

    pub fn len(&self) -> usize {
        self.0.offsets.len().saturating_sub(1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
