//! Each token id's bytes, for plugins that constrain output token by token (grammars): a
//! byte-level BPE token's string decoded through GPT-2's byte alphabet, a SentencePiece token
//! with `▁` as a space and `<0xNN>` as its byte, a special token as its text.

use crate::Tokenizer;
use std::collections::HashMap;

/// The model's vocabulary as bytes: `tokens[id]`, the special ids (added control tokens, and
/// ids past the tokenizer's vocabulary, which have no bytes) and the ids that end a sequence.
#[derive(Debug, Clone, Default)]
pub struct TokenBytes {
    pub tokens: Vec<Vec<u8>>,
    pub special: Vec<u32>,
    pub eos: Vec<u32>,
}

impl TokenBytes {
    /// One entry per logit: `model_vocab` is the model's vocabulary size. Usually the tokenizer
    /// has fewer ids (the model pads its embedding); ids it has past the model's vocabulary can
    /// never be sampled and are left out, so a plugin's allow-set is always logits-sized.
    pub fn new(tokenizer: &Tokenizer, model_vocab: usize, mut eos: Vec<u32>) -> Self {
        let decoder = if tokenizer.is_byte_level() { byte_decoder() } else { HashMap::new() };
        let special_ids = tokenizer.special_ids();
        let n = model_vocab;
        eos.retain(|&id| (id as usize) < n);
        let mut tokens = Vec::with_capacity(n);
        let mut special = Vec::new();
        for id in 0..n as u32 {
            let text = tokenizer.id_to_token(id);
            let is_special = special_ids.contains(&id) || text.is_none();
            if is_special {
                special.push(id);
            }
            tokens.push(match text {
                None => Vec::new(),
                Some(t) if is_special => t.into_bytes(),
                Some(t) => token_to_bytes(&t, &decoder),
            });
        }
        Self { tokens, special, eos }
    }
}

/// GPT-2's byte-to-character table, inverted: printable Latin-1 bytes stand for themselves,
/// the other 68 bytes for U+0100 onwards in byte order.
fn byte_decoder() -> HashMap<char, u8> {
    let mut map = HashMap::with_capacity(256);
    let mut shifted = 0u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let c = if printable {
            char::from(b)
        } else {
            shifted += 1;
            char::from_u32(255 + shifted).unwrap_or('\u{FFFD}')
        };
        map.insert(c, b);
    }
    map
}

/// With a byte alphabet (byte-level BPE), every character is one byte; without one (an empty
/// `decoder`), SentencePiece conventions: `<0xNN>` byte fallback, `▁` for a space.
fn token_to_bytes(token: &str, decoder: &HashMap<char, u8>) -> Vec<u8> {
    if !decoder.is_empty() {
        return token.chars().map(|c| decoder.get(&c).copied().unwrap_or(b'?')).collect();
    }
    if let Some(hex) = token.strip_prefix("<0x").and_then(|h| h.strip_suffix('>')) {
        if let Ok(b) = u8::from_str_radix(hex, 16) {
            return vec![b];
        }
    }
    token.replace('\u{2581}', " ").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_and_sentencepiece_tokens_decode_to_their_bytes() {
        let d = byte_decoder();
        assert_eq!(d.len(), 256);
        assert_eq!(token_to_bytes("Ġthe", &d), b" the");
        assert_eq!(token_to_bytes("Ċ", &d), b"\n");
        // "é" in UTF-8 (C3 A9) as byte-level characters.
        assert_eq!(token_to_bytes("Ã©", &d), "é".as_bytes());
        let sp = HashMap::new();
        assert_eq!(token_to_bytes("<0x0A>", &sp), b"\n");
        assert_eq!(token_to_bytes("\u{2581}hello", &sp), b" hello");
    }

    /// The vocabulary has one entry per logit whichever of the tokenizer and the model is larger.
    #[test]
    fn the_vocabulary_is_logits_sized() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-v2-lite");
        let tok = Tokenizer::from_dir(&dir).expect("tokenizer");
        let n = tok.vocab_size();
        let last = n as u32 - 1;
        let smaller = TokenBytes::new(&tok, n - 10, vec![1, last]);
        assert_eq!(smaller.tokens.len(), n - 10);
        assert_eq!(smaller.eos, vec![1]);
        assert!(smaller.special.iter().all(|&id| (id as usize) < n - 10));
        let larger = TokenBytes::new(&tok, n + 7, vec![1]);
        assert_eq!(larger.tokens.len(), n + 7);
        assert!((n as u32..n as u32 + 7).all(|id| larger.special.contains(&id) && larger.tokens[id as usize].is_empty()));
    }
}
