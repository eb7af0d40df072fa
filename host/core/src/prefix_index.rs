//! The set of page hashes a replica has cached, readable from other threads so a router can
//! estimate each replica's cached prefix for a prompt without asking its engine loop.

use crate::prefix_key::PromptHashes;
use std::collections::HashSet;
use std::sync::RwLock;

#[derive(Debug, Default)]
pub struct PrefixIndex {
    hashes: RwLock<HashSet<u64>>,
}

impl PrefixIndex {
    pub fn new() -> Self {
        Self::default()
    }

    pub(crate) fn insert(&self, hash: u64) {
        self.hashes.write().unwrap_or_else(|p| p.into_inner()).insert(hash);
    }

    pub(crate) fn remove(&self, hash: u64) {
        self.hashes.write().unwrap_or_else(|p| p.into_inner()).remove(&hash);
    }

    /// Forgets every hash (the engine rebuilt its cache).
    pub fn clear(&self) {
        self.hashes.write().unwrap_or_else(|p| p.into_inner()).clear();
    }

    pub fn len(&self) -> usize {
        self.hashes.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Leading prompt tokens covered by cached full pages (hash chain only: an estimate for
    /// routing; the scheduler re-checks tokens before reusing a page).
    pub fn cached_prefix_tokens(&self, prompt: &PromptHashes) -> usize {
        let set = self.hashes.read().unwrap_or_else(|p| p.into_inner());
        prompt.hashes.iter().take_while(|h| set.contains(h)).count() * prompt.page_size
    }
}
