//! Which unreferenced cached pages leave the prefix cache when pages run short. The native
//! policy is least-recently-used; a prefix-policy plugin can replace it.

use crate::PageId;

/// What a policy knows about a cached page nobody is using.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvictionCandidate {
    pub page: PageId,
    /// The cache salt (per tenant) the page was computed under.
    pub salt: u64,
    /// Logical time of the last use (larger is more recent).
    pub last_used: u64,
    /// How many requests reused the page.
    pub hits: u32,
    /// Position of the page in its prefix chain (0 = first page of a prompt).
    pub depth: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EvictionDecision {
    /// Pages in the order they should go.
    pub order: Vec<PageId>,
    /// Pages to keep while others can go. Pins yield only when nothing else is left.
    pub pinned: Vec<PageId>,
}

pub trait EvictionPolicy: Send {
    /// Orders `candidates` for eviction; `needed` pages are about to be taken.
    fn decide(&mut self, candidates: &[EvictionCandidate], needed: usize) -> EvictionDecision;
}

/// Least recently used first; among equals, deeper pages (prefix tails) first.
#[derive(Debug, Default, Clone, Copy)]
pub struct LruPolicy;

impl EvictionPolicy for LruPolicy {
    fn decide(&mut self, candidates: &[EvictionCandidate], _needed: usize) -> EvictionDecision {
        let mut c = candidates.to_vec();
        c.sort_by_key(|c| (c.last_used, std::cmp::Reverse(c.depth)));
        EvictionDecision { order: c.iter().map(|c| c.page).collect(), pinned: Vec::new() }
    }
}
