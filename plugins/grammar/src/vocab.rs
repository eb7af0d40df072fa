//! llguidance's token environment from the host's vocabulary: a token trie over each token's
//! bytes, special tokens marked the way toktrie expects (a 0xFF byte before their text).

use llguidance::toktrie::{ApproximateTokEnv, TokEnv, TokRxInfo, TokTrie};
use mlahost_sdk::Vocabulary;
use std::sync::Arc;

pub fn token_env(vocab: &Vocabulary) -> Result<TokEnv, String> {
    let eos = vocab.eos().to_vec();
    let Some(&first_eos) = eos.first() else {
        return Err("grammar: the vocabulary names no end-of-sequence token".into());
    };
    let words: Vec<Vec<u8>> = (0..vocab.len())
        .map(|id| {
            let bytes = vocab.token(id);
            if vocab.is_special(id) && !bytes.is_empty() {
                let mut marked = Vec::with_capacity(bytes.len() + 1);
                marked.push(TokTrie::SPECIAL_TOKEN_MARKER);
                marked.extend_from_slice(bytes);
                marked
            } else {
                bytes.to_vec()
            }
        })
        .collect();
    let info = TokRxInfo::new(vocab.len(), first_eos);
    let trie = TokTrie::from(&info, &words).with_eos_tokens(&eos);
    Ok(Arc::new(ApproximateTokEnv::new(trie)))
}
