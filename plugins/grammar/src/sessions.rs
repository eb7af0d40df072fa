//! Compiled grammars cached per constraint, and each request's matcher, advanced by the
//! tokens it generated since the last step.
//!
//! The host may run a step on any instance of the plugin, and a preempted sequence restarts,
//! so a matcher is never trusted blindly: it remembers how many tokens it consumed, catches up
//! from `generated`, and is rebuilt from the cache when `generated` is shorter than that.

use crate::constraint::grammar_for;
use llguidance::{Matcher, ParserFactory};
use std::collections::HashMap;

/// Constraints kept compiled; past this the oldest is dropped.
const MAX_COMPILED: usize = 128;
/// A request not seen for this many calls is forgotten (it finished or moved elsewhere).
const IDLE_CALLS: u64 = 256;

pub struct Sessions {
    factory: ParserFactory,
    compiled: HashMap<String, (Matcher, u64)>,
    live: HashMap<u64, Session>,
    calls: u64,
}

struct Session {
    config: String,
    matcher: Matcher,
    consumed: usize,
    last_call: u64,
}

impl Sessions {
    pub fn new(factory: ParserFactory) -> Self {
        Self { factory, compiled: HashMap::new(), live: HashMap::new(), calls: 0 }
    }

    pub fn vocab_size(&self) -> usize {
        self.factory.tok_env().tok_trie().vocab_size()
    }

    /// A fresh matcher for `config`, compiled once and cloned after.
    pub fn fresh(&mut self, config: &str) -> Result<Matcher, String> {
        self.calls += 1;
        if let Some((m, used)) = self.compiled.get_mut(config) {
            *used = self.calls;
            return Ok(m.deep_clone());
        }
        let grammar = grammar_for(config)?;
        let matcher = Matcher::new(self.factory.create_parser(grammar));
        if let Some(e) = matcher.get_error() {
            return Err(e);
        }
        if self.compiled.len() >= MAX_COMPILED {
            if let Some(oldest) = self.compiled.iter().min_by_key(|(_, (_, used))| *used).map(|(k, _)| k.clone()) {
                self.compiled.remove(&oldest);
            }
        }
        let copy = matcher.deep_clone();
        self.compiled.insert(config.to_string(), (matcher, self.calls));
        Ok(copy)
    }

    /// Starts a call: forgets requests idle for too long.
    pub fn begin_call(&mut self) {
        self.calls += 1;
        let now = self.calls;
        self.live.retain(|_, s| now - s.last_call <= IDLE_CALLS);
    }

    /// The allowed next tokens of request `id` (constraint `config`, tokens `generated` so
    /// far) as a bitset of 64-bit words over the vocabulary.
    pub fn mask(&mut self, id: u64, config: &str, generated: &[u32]) -> Result<Vec<u64>, String> {
        let reusable = self.live.get(&id).is_some_and(|s| s.config == config && s.consumed <= generated.len());
        if !reusable {
            let matcher = self.fresh(config)?;
            self.live.insert(id, Session { config: config.to_string(), matcher, consumed: 0, last_call: 0 });
        }
        let now = self.calls;
        let vocab = self.vocab_size();
        let Some(s) = self.live.get_mut(&id) else { return Err("grammar: session vanished".into()) };
        s.last_call = now;
        let result = advance_and_mask(s, generated, vocab);
        if result.is_err() {
            self.live.remove(&id);
        }
        result
    }
}

fn advance_and_mask(s: &mut Session, generated: &[u32], vocab: usize) -> Result<Vec<u64>, String> {
    let new = &generated[s.consumed..];
    if !new.is_empty() {
        s.matcher.consume_tokens(new).map_err(|e| format!("a generated token breaks the grammar: {e}"))?;
        s.consumed = generated.len();
    }
    let mask = s.matcher.compute_mask_or_eos().map_err(|e| e.to_string())?;
    Ok(to_words(mask.as_slice(), vocab))
}

/// toktrie's 32-bit words as the host's 64-bit ones, cut to the vocabulary.
fn to_words(words32: &[u32], vocab: usize) -> Vec<u64> {
    let mut out: Vec<u64> = (0..vocab.div_ceil(64))
        .map(|i| {
            let lo = words32.get(2 * i).copied().unwrap_or(0) as u64;
            let hi = words32.get(2 * i + 1).copied().unwrap_or(0) as u64;
            lo | hi << 32
        })
        .collect();
    if let (Some(last), r) = (out.last_mut(), vocab % 64) {
        if r != 0 {
            *last &= (1u64 << r) - 1;
        }
    }
    out
}
