//! Latent-cache pages: who owns each, which are free, and which hold a cached prefix page that
//! nobody uses right now (kept for reuse until the space is needed, then evicted).

use crate::eviction::{EvictionCandidate, EvictionPolicy};
use crate::prefix_index::PrefixIndex;
use crate::CoreError;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Index of one physical page of the latent cache.
pub type PageId = u32;

/// What the prefix cache knows about a page it holds.
#[derive(Debug, Clone)]
struct CachedPage {
    hash: u64,
    tokens: Box<[u32]>,
    salt: u64,
    depth: u32,
    hits: u32,
}

/// Hands out fixed-size pages and tracks how many owners each has. Full pages can be
/// registered in the prefix cache; they then outlive their sequence, shared by reference
/// count, and are evicted (LRU by default) only when free pages run out.
pub struct BlockAllocator {
    page_size: usize,
    /// The first page id this pool hands out (its pages are `base .. base + num_pages`).
    base: PageId,
    ref_counts: Vec<u32>,
    /// Pages holding nothing.
    free: Vec<PageId>,
    /// Unreferenced cached pages by last use (oldest first).
    evictable: BTreeMap<u64, PageId>,
    /// Per page: its key in `evictable`, when it is there.
    evictable_at: Vec<Option<u64>>,
    cached: Vec<Option<CachedPage>>,
    by_hash: HashMap<u64, PageId>,
    clock: u64,
    used: usize,
    evictions: u64,
    policy: Option<Box<dyn EvictionPolicy>>,
    shared_index: Option<Arc<PrefixIndex>>,
}

impl BlockAllocator {
    pub fn new(num_pages: usize, page_size: usize) -> Result<Self, CoreError> {
        Self::with_base(num_pages, page_size, 0)
    }

    /// `pools` pools of `num_pages / pools` pages each over one id space, the pool `i` holding
    /// ids from `i * num_pages / pools`: one per data-parallel attention rank, each rank's
    /// latents in its own pages.
    pub fn split(num_pages: usize, page_size: usize, pools: usize) -> Result<Vec<Self>, CoreError> {
        if pools == 0 || num_pages % pools != 0 {
            return Err(CoreError::InvalidGeometry(format!("{num_pages} pages do not split into {pools} equal pools")));
        }
        let per = num_pages / pools;
        (0..pools).map(|i| Self::with_base(per, page_size, (i * per) as PageId)).collect()
    }

    fn with_base(num_pages: usize, page_size: usize, base: PageId) -> Result<Self, CoreError> {
        if page_size == 0 {
            return Err(CoreError::InvalidGeometry("page size must be at least 1".into()));
        }
        if num_pages + base as usize > PageId::MAX as usize {
            return Err(CoreError::InvalidGeometry(format!("{num_pages} pages is too many")));
        }
        Ok(Self {
            page_size,
            base,
            ref_counts: vec![0; num_pages],
            // Lowest ids are handed out first: pop from the back of a reversed list.
            free: (base..base + num_pages as PageId).rev().collect(),
            evictable: BTreeMap::new(),
            evictable_at: vec![None; num_pages],
            cached: vec![None; num_pages],
            by_hash: HashMap::new(),
            clock: 0,
            used: 0,
            evictions: 0,
            policy: None,
            shared_index: None,
        })
    }

    /// Replaces the native LRU choice of which cached pages to evict.
    pub fn set_eviction_policy(&mut self, policy: Box<dyn EvictionPolicy>) {
        self.policy = Some(policy);
    }

    /// Mirrors the cached page hashes into an index other threads can read (for routing).
    pub fn set_shared_index(&mut self, index: Arc<PrefixIndex>) {
        self.shared_index = Some(index);
    }

    pub fn page_size(&self) -> usize {
        self.page_size
    }

    pub fn num_pages(&self) -> usize {
        self.ref_counts.len()
    }

    /// Pages that can be allocated now: free ones plus evictable cached ones.
    pub fn num_free(&self) -> usize {
        self.free.len() + self.evictable.len()
    }

    /// Pages owned by at least one sequence.
    pub fn num_used(&self) -> usize {
        self.used
    }

    /// Pages held by the prefix cache (in use or not).
    pub fn num_cached(&self) -> usize {
        self.by_hash.len()
    }

    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Pages needed to hold `tokens` tokens.
    pub fn pages_for(&self, tokens: usize) -> usize {
        tokens.div_ceil(self.page_size)
    }

    /// Takes `n` pages, all or none: free pages first, then evicted cached ones.
    pub fn allocate(&mut self, n: usize) -> Result<Vec<PageId>, CoreError> {
        if n > self.num_free() {
            return Err(CoreError::OutOfPages { needed: n, free: self.num_free(), total: self.num_pages() });
        }
        let from_free = n.min(self.free.len());
        let mut pages: Vec<PageId> = self.free.split_off(self.free.len() - from_free).into_iter().rev().collect();
        if pages.len() < n {
            pages.extend(self.evict(n - pages.len()));
        }
        for &p in &pages {
            let at = self.slot(p);
            self.ref_counts[at] = 1;
        }
        self.used += n;
        Ok(pages)
    }

    /// Adds an owner to an allocated page.
    pub fn retain(&mut self, page: PageId) -> Result<(), CoreError> {
        let count = self.count_mut(page)?;
        *count += 1;
        Ok(())
    }

    /// Drops one owner. An unowned page returns to the free list, or, if it holds a cached
    /// prefix page, waits among the evictable ones.
    pub fn release(&mut self, page: PageId) -> Result<(), CoreError> {
        let count = self.count_mut(page)?;
        *count -= 1;
        if *count == 0 {
            self.used -= 1;
            if self.cached[self.slot(page)].is_some() {
                let stamp = self.tick();
                self.evictable.insert(stamp, page);
                let at = self.slot(page);
                self.evictable_at[at] = Some(stamp);
            } else {
                self.free.push(page);
            }
        }
        Ok(())
    }

    pub fn ref_count(&self, page: PageId) -> u32 {
        self.ref_counts.get(self.slot(page)).copied().unwrap_or(0)
    }

    /// The cached page with this hash and exactly these tokens and salt, if any.
    pub fn lookup(&self, hash: u64, salt: u64, tokens: &[u32]) -> Option<PageId> {
        let &page = self.by_hash.get(&hash)?;
        let c = self.cached.get(self.slot(page))?.as_ref()?;
        (c.salt == salt && *c.tokens == *tokens).then_some(page)
    }

    /// Takes an owner on a cached page found by `lookup` (reviving it if unowned).
    pub fn acquire_cached(&mut self, page: PageId) {
        let p = self.slot(page);
        if let Some(stamp) = self.evictable_at[p].take() {
            self.evictable.remove(&stamp);
            self.used += 1;
        }
        self.ref_counts[p] += 1;
        if let Some(c) = self.cached[p].as_mut() {
            c.hits += 1;
        }
    }

    /// Registers a full, computed page in the prefix cache. False when an identical page is
    /// already cached (this one then stays private to its sequence).
    pub fn register(&mut self, page: PageId, hash: u64, salt: u64, depth: u32, tokens: &[u32]) -> bool {
        let p = self.slot(page);
        if self.by_hash.contains_key(&hash) || self.cached.get(p).is_none_or(|c| c.is_some()) || self.ref_counts[p] == 0 {
            return false;
        }
        self.cached[p] = Some(CachedPage { hash, tokens: tokens.into(), salt, depth, hits: 0 });
        self.by_hash.insert(hash, page);
        if let Some(index) = &self.shared_index {
            index.insert(hash);
        }
        true
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Removes `n` unowned cached pages from the cache and returns them.
    fn evict(&mut self, n: usize) -> Vec<PageId> {
        let base = self.base;
        let victims: Vec<PageId> = match &mut self.policy {
            None => self.evictable.values().take(n).copied().collect(),
            Some(policy) => {
                let candidates: Vec<EvictionCandidate> = self
                    .evictable
                    .iter()
                    .filter_map(|(&stamp, &page)| {
                        let c = self.cached.get(slot_in(base, page))?.as_ref()?;
                        Some(EvictionCandidate { page, salt: c.salt, last_used: stamp, hits: c.hits, depth: c.depth })
                    })
                    .collect();
                let decision = policy.decide(&candidates, n);
                // A policy may name any id; only unowned cached pages can go.
                let is_candidate = |p: &PageId| self.evictable_at.get(slot_in(base, *p)).is_some_and(Option::is_some);
                let mut chosen: Vec<PageId> = Vec::with_capacity(n);
                let push = |p: PageId, chosen: &mut Vec<PageId>| {
                    if chosen.len() < n && is_candidate(&p) && !chosen.contains(&p) {
                        chosen.push(p);
                    }
                };
                for &p in decision.order.iter().filter(|p| !decision.pinned.contains(p)) {
                    push(p, &mut chosen);
                }
                // Whatever the policy left out, oldest first; pinned pages last.
                for &p in self.evictable.values().filter(|p| !decision.pinned.contains(p)) {
                    push(p, &mut chosen);
                }
                for &p in self.evictable.values() {
                    push(p, &mut chosen);
                }
                chosen
            }
        };
        for &page in &victims {
            self.uncache(page);
            self.evictions += 1;
        }
        victims
    }

    /// Takes an unowned cached page out of the prefix cache (the caller reuses or frees it).
    fn uncache(&mut self, page: PageId) {
        let p = self.slot(page);
        if let Some(stamp) = self.evictable_at[p].take() {
            self.evictable.remove(&stamp);
        }
        if let Some(c) = self.cached[p].take() {
            self.by_hash.remove(&c.hash);
            if let Some(index) = &self.shared_index {
                index.remove(c.hash);
            }
        }
    }

    /// Empties the prefix cache of every page no sequence uses (an operator's reset); pages
    /// in use stay. Returns how many pages were freed.
    pub fn drop_unused_cached(&mut self) -> usize {
        let pages: Vec<PageId> = self.evictable.values().copied().collect();
        for &page in &pages {
            self.uncache(page);
            self.free.push(page);
        }
        pages.len()
    }

    /// Where `page` is in this pool's tables; past their end for a page of another pool.
    fn slot(&self, page: PageId) -> usize {
        slot_in(self.base, page)
    }

    /// Whether `page` is one of this pool's.
    pub fn owns(&self, page: PageId) -> bool {
        self.slot(page) < self.ref_counts.len()
    }

    fn count_mut(&mut self, page: PageId) -> Result<&mut u32, CoreError> {
        let at = self.slot(page);
        match self.ref_counts.get_mut(at) {
            Some(c) if *c > 0 => Ok(c),
            _ => Err(CoreError::PageNotAllocated(page)),
        }
    }
}

/// `page`'s index in the tables of the pool starting at `base`; past their end for a page of
/// another pool.
fn slot_in(base: PageId, page: PageId) -> usize {
    page.wrapping_sub(base) as usize
}

#[cfg(test)]
mod tests;
