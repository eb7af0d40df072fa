//! Incremental detokenization that never splits a multi-byte character, and stop strings that
//! are never emitted (text that could still become a stop string is held back).

use mlahost_engine::Tokenizer;

pub struct Detokenizer {
    tokens: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
    /// Decoded text not yet released.
    pending: String,
    stop: std::sync::Arc<[String]>,
    hold_back: usize,
}

pub enum Step {
    /// Text safe to release now.
    Text(String),
    /// A stop string matched: release this text (before the stop string) and finish.
    Stopped(String),
}

impl Detokenizer {
    pub fn new(stop: std::sync::Arc<[String]>) -> Self {
        let hold_back = stop.iter().map(|s| s.len()).max().unwrap_or(1).saturating_sub(1);
        Self { tokens: Vec::new(), prefix_offset: 0, read_offset: 0, pending: String::new(), stop, hold_back }
    }

    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Step {
        self.tokens.push(id);
        let prefix = tok.decode(&self.tokens[self.prefix_offset..self.read_offset], true).unwrap_or_default();
        let full = tok.decode(&self.tokens[self.prefix_offset..], true).unwrap_or_default();
        if full.len() > prefix.len() && !full.ends_with('\u{FFFD}') {
            if let Some(new) = full.get(prefix.len()..) {
                self.pending.push_str(new);
            }
            self.prefix_offset = self.read_offset;
            self.read_offset = self.tokens.len();
        }
        if let Some(at) = self.stop.iter().filter_map(|s| self.pending.find(s.as_str())).min() {
            let before = self.pending[..at].to_string();
            self.pending.clear();
            return Step::Stopped(before);
        }
        let mut cut = self.pending.len().saturating_sub(self.hold_back);
        while !self.pending.is_char_boundary(cut) {
            cut -= 1;
        }
        let out: String = self.pending.drain(..cut).collect();
        Step::Text(out)
    }

    /// Releases what was held back (generation ended without a stop string).
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn tokenizer() -> Tokenizer {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-v2-lite");
        Tokenizer::from_dir(&dir).unwrap()
    }

    #[test]
    fn multibyte_characters_are_never_split() {
        let tok = tokenizer();
        let text = "Café naïve — 中文字符 and 日本語 🙂🚀 done";
        let ids = tok.encode(text, false).unwrap();
        let mut d = Detokenizer::new(Vec::new().into());
        let mut out = String::new();
        for &id in &ids {
            match d.push(&tok, id) {
                Step::Text(t) => {
                    assert!(!t.contains('\u{FFFD}'), "a piece split a character: {t:?}");
                    out.push_str(&t);
                }
                Step::Stopped(_) => panic!("no stop strings"),
            }
        }
        out.push_str(&d.flush());
        assert_eq!(out, text);
    }

    #[test]
    fn stop_strings_across_tokens_are_not_emitted() {
        let tok = tokenizer();
        let text = "The quick brown fox jumps over the lazy dog.";
        let ids = tok.encode(text, false).unwrap();
        let mut d = Detokenizer::new(vec!["fox jumps".to_string()].into());
        let mut out = String::new();
        for &id in &ids {
            match d.push(&tok, id) {
                Step::Text(t) => out.push_str(&t),
                Step::Stopped(t) => {
                    out.push_str(&t);
                    assert_eq!(out, "The quick brown ");
                    return;
                }
            }
            assert!(!out.contains("fox"), "held-back text leaked: {out:?}");
        }
        panic!("the stop string was not found");
    }
}
