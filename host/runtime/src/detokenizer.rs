//! Incremental detokenization that never splits a multi-byte character, and stop strings that
//! are emitted only when asked (text that could still become a stop string is held back).

use mlahost_engine::Tokenizer;

pub struct Detokenizer {
    tokens: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
    /// Decoded text not yet released.
    pending: String,
    stop: std::sync::Arc<[String]>,
    hold_back: usize,
    /// Emit the stop string that matched (vLLM's `include_stop_str_in_output`).
    include_stop: bool,
    skip_special_tokens: bool,
}

pub enum Step {
    /// Text safe to release now.
    Text(String),
    /// A stop string matched: release this text (up to the stop string, or through it when
    /// asked) and finish.
    Stopped(String),
}

impl Detokenizer {
    pub fn with_options(stop: std::sync::Arc<[String]>, include_stop: bool, skip_special_tokens: bool) -> Self {
        let hold_back = stop.iter().map(|s| s.len()).max().unwrap_or(1).saturating_sub(1);
        Self { tokens: Vec::new(), prefix_offset: 0, read_offset: 0, pending: String::new(), stop, hold_back, include_stop, skip_special_tokens }
    }

    /// Adds a token; stop strings are looked for only when `check_stops` (vLLM skips them
    /// until `min_tokens` are generated).
    pub fn push(&mut self, tok: &Tokenizer, id: u32, check_stops: bool) -> Step {
        self.tokens.push(id);
        let skip = self.skip_special_tokens;
        let prefix = tok.decode(&self.tokens[self.prefix_offset..self.read_offset], skip).unwrap_or_default();
        let full = tok.decode(&self.tokens[self.prefix_offset..], skip).unwrap_or_default();
        if full.len() > prefix.len() && !full.ends_with('\u{FFFD}') {
            if let Some(new) = full.get(prefix.len()..) {
                self.pending.push_str(new);
            }
            self.prefix_offset = self.read_offset;
            self.read_offset = self.tokens.len();
        }
        let first_stop = self.stop.iter().filter_map(|s| Some((self.pending.find(s.as_str())?, s.len()))).min();
        if let Some((at, len)) = first_stop.filter(|_| check_stops) {
            let end = if self.include_stop { at + len } else { at };
            let before = self.pending[..end].to_string();
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
        let mut d = Detokenizer::with_options(Vec::new().into(), false, true);
        let mut out = String::new();
        for &id in &ids {
            match d.push(&tok, id, true) {
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
        let mut d = Detokenizer::with_options(vec!["fox jumps".to_string()].into(), false, true);
        let mut out = String::new();
        for &id in &ids {
            match d.push(&tok, id, true) {
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

    #[test]
    fn stop_strings_can_be_included_or_deferred() {
        let tok = tokenizer();
        let ids = tok.encode("The quick brown fox jumps over the lazy dog.", false).unwrap();
        let run = |include: bool, armed_after: usize| {
            let mut d = Detokenizer::with_options(vec!["fox".to_string(), "dog".to_string()].into(), include, true);
            let mut out = String::new();
            for (i, &id) in ids.iter().enumerate() {
                match d.push(&tok, id, i >= armed_after) {
                    Step::Text(t) => out.push_str(&t),
                    Step::Stopped(t) => return out + &t,
                }
            }
            out + &d.flush()
        };
        assert_eq!(run(true, 0), "The quick brown fox");
        let fox_at = (1..=ids.len()).find(|&n| tok.decode(&ids[..n], true).unwrap().contains("fox")).unwrap();
        assert!(run(false, fox_at).ends_with("lazy "), "stops armed after `fox`: {:?}", run(false, fox_at));
    }
}
