//! [`Vocabulary`]: the model's tokens as bytes, given to a sampler's `init`.

/// The model's vocabulary: every token id's bytes, which ids are special, which end a sequence.
///
/// A byte-level BPE token is the bytes it decodes to; a special token (an added or control
/// token such as `<｜end▁of▁sentence｜>`) is its text and is never produced by ordinary text.
/// Ids past the tokenizer's own vocabulary (a model's vocabulary may be padded) have no bytes
/// and count as special.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Vocabulary {
    bytes: Vec<u8>,
    offsets: Vec<u32>,
    special: Vec<u32>,
    eos: Vec<u32>,
}

impl Vocabulary {
    /// A vocabulary from each token's bytes (index = id), the special ids and the
    /// end-of-sequence ids: for tests, or a plugin that builds its own.
    pub fn new(tokens: &[Vec<u8>], special: Vec<u32>, eos: Vec<u32>) -> Vocabulary {
        let mut bytes = Vec::new();
        let mut offsets = Vec::with_capacity(tokens.len() + 1);
        offsets.push(0);
        for t in tokens {
            bytes.extend_from_slice(t);
            offsets.push(bytes.len() as u32);
        }
        Self::from_parts(bytes, offsets, special, eos).unwrap_or_default()
    }

    /// The host's flat form, checked: offsets start at 0, never decrease and end at the byte
    /// count; special and EOS ids are inside the vocabulary.
    pub(crate) fn from_parts(
        bytes: Vec<u8>,
        offsets: Vec<u32>,
        mut special: Vec<u32>,
        eos: Vec<u32>,
    ) -> Result<Vocabulary, String> {
        let ok = offsets.first() == Some(&0)
            && offsets.last().map(|&l| l as usize) == Some(bytes.len())
            && offsets.windows(2).all(|w| w[0] <= w[1]);
        if !ok {
            return Err("mlahost-sdk: the host's vocabulary offsets are inconsistent".into());
        }
        let n = offsets.len() as u32 - 1;
        if let Some(id) = special.iter().chain(&eos).find(|&&id| id >= n) {
            return Err(format!("mlahost-sdk: token id {id} outside the vocabulary of {n}"));
        }
        special.sort_unstable();
        special.dedup();
        Ok(Vocabulary { bytes, offsets, special, eos })
    }

    /// Number of token ids (the model's vocabulary size, as the logits have).
    pub fn len(&self) -> u32 {
        self.offsets.len().saturating_sub(1) as u32
    }

    /// True when there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Token `id`'s bytes (empty for an id outside the vocabulary).
    pub fn token(&self, id: u32) -> &[u8] {
        let i = id as usize;
        match (self.offsets.get(i), self.offsets.get(i + 1)) {
            (Some(&a), Some(&b)) => &self.bytes[a as usize..b as usize],
            _ => &[],
        }
    }

    /// Whether `id` is a special token.
    pub fn is_special(&self, id: u32) -> bool {
        self.special.binary_search(&id).is_ok()
    }

    /// The special token ids, ascending.
    pub fn special(&self) -> &[u32] {
        &self.special
    }

    /// The ids that end a sequence.
    pub fn eos(&self) -> &[u32] {
        &self.eos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_bad_offsets_are_refused() {
        let v = Vocabulary::new(&[b"a".to_vec(), b"".to_vec(), b"<eos>".to_vec()], vec![2], vec![2]);
        assert_eq!((v.len(), v.token(0), v.token(1), v.token(2), v.token(3)), (3, &b"a"[..], &b""[..], &b"<eos>"[..], &b""[..]));
        assert!(v.is_special(2) && !v.is_special(0));
        assert_eq!(v.eos(), &[2]);
        assert!(Vocabulary::from_parts(b"ab".to_vec(), vec![0, 2, 1], vec![], vec![]).is_err());
        assert!(Vocabulary::from_parts(b"ab".to_vec(), vec![0, 2], vec![5], vec![]).is_err());
    }
}
