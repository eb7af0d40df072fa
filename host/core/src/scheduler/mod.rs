//! Continuous batching for one engine replica: each step takes running sequences first (decodes
//! and unfinished prefills), then admits waiting ones, all within a token budget; prompts are
//! prefilled in chunks; when pages run out the lowest-ranked running sequence is preempted and
//! later recomputed from its tokens, so its output does not change. With data-parallel
//! attention the pages are several pools, one per attention rank: each sequence takes all its
//! pages from one pool, chosen at admission (the longest cached prefix, else the most free
//! pages), and a pool that runs out preempts only its own sequences.

mod config;
mod sequence;

pub use config::SchedulerConfig;
pub use sequence::{SeqId, SeqStatus, Sequence};

use crate::{BlockAllocator, CoreError};
use std::collections::HashMap;

/// One sequence's share of a step: tokens `start .. start + len` of its token list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduledChunk {
    pub seq: SeqId,
    pub start: usize,
    pub len: usize,
    /// The chunk reaches the sequence's last token, so its logits pick the next token.
    pub samples: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepPlan {
    pub chunks: Vec<ScheduledChunk>,
    /// Sequences preempted while planning this step (their pages are already free).
    pub preempted: Vec<SeqId>,
}

impl StepPlan {
    pub fn num_tokens(&self) -> usize {
        self.chunks.iter().map(|c| c.len).sum()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedulerStats {
    pub waiting: usize,
    pub running: usize,
    pub pages_used: usize,
    pub pages_total: usize,
    pub preemptions: u64,
    /// Prompt tokens looked up in the prefix cache, and how many of them hit.
    pub prefix_queried_tokens: u64,
    pub prefix_hit_tokens: u64,
    pub prefix_evictions: u64,
    pub prefix_cached_pages: usize,
}

pub struct Scheduler {
    cfg: SchedulerConfig,
    /// One pool per data-parallel attention rank (one without), over one page id space.
    pools: Vec<BlockAllocator>,
    seqs: HashMap<SeqId, Sequence>,
    /// Kept sorted by rank (priority, then arrival).
    waiting: Vec<SeqId>,
    running: Vec<SeqId>,
    next_arrival: u64,
    preemptions: u64,
    prefix_queried: u64,
    prefix_hits: u64,
    /// Virtual tokens served per tenant (fair scheduling).
    counters: HashMap<u32, f64>,
}

impl Scheduler {
    pub fn new(cfg: SchedulerConfig, pages: BlockAllocator) -> Result<Self, CoreError> {
        Self::with_pools(cfg, vec![pages])
    }

    /// A scheduler over several page pools (`BlockAllocator::split`) of equal size.
    pub fn with_pools(cfg: SchedulerConfig, pools: Vec<BlockAllocator>) -> Result<Self, CoreError> {
        if cfg.max_num_batched_tokens == 0 || cfg.max_num_seqs == 0 {
            return Err(CoreError::InvalidGeometry("token budget and sequence cap must be positive".into()));
        }
        let Some(first) = pools.first() else { return Err(CoreError::InvalidGeometry("no page pool".into())) };
        if pools.iter().any(|p| p.num_pages() != first.num_pages() || p.page_size() != first.page_size()) {
            return Err(CoreError::InvalidGeometry("page pools of different sizes".into()));
        }
        Ok(Self {
            cfg,
            pools,
            seqs: HashMap::new(),
            waiting: Vec::new(),
            running: Vec::new(),
            next_arrival: 0,
            preemptions: 0,
            prefix_queried: 0,
            prefix_hits: 0,
            counters: HashMap::new(),
        })
    }

    /// Queues a new sequence; refused when the queue is full or it could never fit the cache.
    pub fn add(&mut self, mut seq: Sequence, max_total_tokens: usize) -> Result<(), CoreError> {
        if self.waiting.len() >= self.cfg.max_queued_requests {
            return Err(CoreError::QueueFull { limit: self.cfg.max_queued_requests });
        }
        if seq.tokens.is_empty() {
            return Err(CoreError::EmptySequence(seq.id));
        }
        let pool = &self.pools[0];
        let needed = pool.pages_for(max_total_tokens.max(seq.tokens.len()));
        if needed > pool.num_pages() {
            return Err(CoreError::OutOfPages { needed, free: pool.num_free(), total: pool.num_pages() });
        }
        if self.seqs.contains_key(&seq.id) {
            return Err(CoreError::DuplicateSequence(seq.id));
        }
        seq.arrival = self.next_arrival;
        self.next_arrival += 1;
        seq.status = SeqStatus::Waiting;
        self.lift_if_newly_backlogged(seq.tenant);
        let id = seq.id;
        self.seqs.insert(id, seq);
        self.enqueue_waiting(id);
        Ok(())
    }

    pub fn get(&self, id: SeqId) -> Option<&Sequence> {
        self.seqs.get(&id)
    }

    pub fn has_work(&self) -> bool {
        !self.waiting.is_empty() || !self.running.is_empty()
    }

    pub fn stats(&self) -> SchedulerStats {
        SchedulerStats {
            waiting: self.waiting.len(),
            running: self.running.len(),
            pages_used: self.pools.iter().map(BlockAllocator::num_used).sum(),
            pages_total: self.pools.iter().map(BlockAllocator::num_pages).sum(),
            preemptions: self.preemptions,
            prefix_queried_tokens: self.prefix_queried,
            prefix_hit_tokens: self.prefix_hits,
            prefix_evictions: self.pools.iter().map(BlockAllocator::evictions).sum(),
            prefix_cached_pages: self.pools.iter().map(BlockAllocator::num_cached).sum(),
        }
    }

    /// The page pools, e.g. to install an eviction policy or a shared prefix index in each.
    pub fn pools_mut(&mut self) -> &mut [BlockAllocator] {
        &mut self.pools
    }

    pub fn pools(&self) -> &[BlockAllocator] {
        &self.pools
    }

    /// Plans the next forward pass.
    pub fn schedule(&mut self) -> StepPlan {
        let mut plan = StepPlan::default();
        let mut budget = self.cfg.max_num_batched_tokens;
        // A chunk's first share: the threshold, and never more than half the step.
        let cap = match self.cfg.long_prefill_token_threshold {
            0 => usize::MAX,
            t => t.min(budget.div_ceil(2)),
        };
        self.running.sort_by_key(|id| self.seqs[id].rank());
        let mut i = 0;
        while i < self.running.len() && budget > 0 {
            let id = self.running[i];
            let seq = &self.seqs[&id];
            let (len, pool) = (seq.pending().min(budget).min(cap), seq.pool);
            let end = seq.num_computed + len;
            if self.reserve(id, end) {
                plan.chunks.push(self.chunk(id, len));
                budget -= len;
                i += 1;
                continue;
            }
            // Out of pages: preempt the lowest-ranked running sequence of this pool (possibly
            // this one, which leaves `i` on the next).
            let victim = self.running.iter().rev().copied().find(|r| self.seqs[r].pool == pool).unwrap_or(id);
            self.preempt(victim);
            plan.preempted.push(victim);
            plan.chunks.retain(|c| c.seq != victim);
        }
        // After a preemption, pages are short: admitting now would only thrash.
        while plan.preempted.is_empty()
            && budget > 0
            && self.running.len() < self.cfg.max_num_seqs
            && !self.waiting.is_empty()
        {
            let at = self.next_waiting();
            let id = self.waiting[at];
            let matched = self.cfg.prefix_caching && self.seqs[&id].reuse_prefix && self.seqs[&id].num_computed == 0;
            self.choose_pool(id, matched);
            if matched {
                self.match_prefix(id);
            }
            let seq = &self.seqs[&id];
            let len = seq.pending().min(budget).min(cap);
            if !self.reserve(id, seq.num_computed + len) {
                if matched {
                    self.unmatch_prefix(id);
                }
                break;
            }
            self.waiting.remove(at);
            let Some(seq) = self.seqs.get_mut(&id) else { break };
            seq.status = SeqStatus::Running;
            if !seq.charged {
                // Prompt tokens are charged once, at admission.
                seq.charged = true;
                *self.counters.entry(seq.tenant).or_insert(0.0) += seq.prompt_len as f64;
            }
            self.running.push(id);
            plan.chunks.push(self.chunk(id, len));
            budget -= len;
        }
        self.top_up_prefills(&mut plan, budget);
        plan
    }

    /// Gives the step's leftover budget to the planned prefills, in plan (rank) order, so the
    /// per-chunk cap costs no throughput when nothing else wants the step.
    fn top_up_prefills(&mut self, plan: &mut StepPlan, mut budget: usize) {
        for i in 0..plan.chunks.len() {
            if budget == 0 {
                break;
            }
            let c = plan.chunks[i];
            let extra = (self.seqs[&c.seq].pending() - c.len).min(budget);
            if extra > 0 && self.reserve(c.seq, c.start + c.len + extra) {
                plan.chunks[i] = self.chunk(c.seq, c.len + extra);
                budget -= extra;
            }
        }
    }

    /// Records a finished step: chunks advance, newly completed pages join the prefix cache,
    /// and sequences that sampled get their token.
    pub fn commit(&mut self, plan: &StepPlan, sampled: &[(SeqId, u32)]) {
        for c in &plan.chunks {
            if let Some(seq) = self.seqs.get_mut(&c.seq) {
                if seq.status == SeqStatus::Running && seq.num_computed == c.start {
                    seq.num_computed += c.len;
                }
            }
            if self.cfg.prefix_caching {
                self.register_full_pages(c.seq);
            }
        }
        for &(id, token) in sampled {
            if let Some(seq) = self.seqs.get_mut(&id) {
                if seq.status == SeqStatus::Running && seq.pending() == 0 {
                    seq.tokens.push(token);
                    *self.counters.entry(seq.tenant).or_insert(0.0) += self.cfg.output_token_weight;
                }
            }
        }
    }

    /// Ends a sequence at any stage (finished, stopped, client gone) and returns its pages.
    pub fn remove(&mut self, id: SeqId) -> Option<Sequence> {
        let mut seq = self.seqs.remove(&id)?;
        self.waiting.retain(|&w| w != id);
        self.running.retain(|&r| r != id);
        give_back(&mut seq.table, &mut self.pools[seq.pool]);
        Some(seq)
    }

    /// A tenant's virtual token counter (prompt tokens + weighted output tokens served).
    pub fn tenant_counter(&self, tenant: u32) -> f64 {
        self.counters.get(&tenant).copied().unwrap_or(0.0)
    }

    /// Index in `waiting` of the next sequence to admit: the highest priority first; within
    /// it, with fair share, the tenant with the smallest counter, then arrival order.
    fn next_waiting(&self) -> usize {
        if !self.cfg.fair_share {
            return 0;
        }
        let top = self.seqs[&self.waiting[0]].priority;
        let mut best = 0;
        for (i, id) in self.waiting.iter().enumerate() {
            let s = &self.seqs[id];
            if s.priority != top {
                break; // `waiting` is sorted by priority first
            }
            let b = &self.seqs[&self.waiting[best]];
            let (cs, cb) = (self.tenant_counter(s.tenant), self.tenant_counter(b.tenant));
            if cs < cb || (cs == cb && s.arrival < b.arrival) {
                best = i;
            }
        }
        best
    }

    /// A tenant with nothing waiting or running that gets a request is lifted to the smallest
    /// counter among the active tenants, so idle time does not bank credit.
    fn lift_if_newly_backlogged(&mut self, tenant: u32) {
        let active: Vec<u32> = self.waiting.iter().chain(&self.running).map(|id| self.seqs[id].tenant).collect();
        if active.contains(&tenant) || active.is_empty() {
            return;
        }
        let floor = active.iter().map(|t| self.tenant_counter(*t)).fold(f64::INFINITY, f64::min);
        let c = self.counters.entry(tenant).or_insert(0.0);
        *c = c.max(floor);
    }

    /// Picks the pool a sequence being admitted takes its pages from: the one caching the
    /// longest run of its leading pages, else the one with the most pages free (the lowest
    /// index on a tie).
    fn choose_pool(&mut self, id: SeqId, match_prefix: bool) {
        if self.pools.len() == 1 {
            return;
        }
        let seq = &self.seqs[&id];
        let ps = self.pools[0].page_size();
        // the prompt's leading page hashes, chained once for every pool's lookup
        let mut hashes: Vec<u64> = Vec::new();
        if match_prefix {
            for i in 0..(seq.tokens.len() - 1) / ps {
                hashes.push(seq.hash_of_page_after(i, ps, hashes.last().copied()));
            }
        }
        let cached = |pool: &BlockAllocator| {
            hashes.iter().enumerate().take_while(|&(i, &h)| pool.lookup(h, seq.salt, &seq.tokens[i * ps..(i + 1) * ps]).is_some()).count()
        };
        let best = (0..self.pools.len()).max_by_key(|&p| (cached(&self.pools[p]), self.pools[p].num_free(), std::cmp::Reverse(p)));
        let Some(seq) = self.seqs.get_mut(&id) else { return };
        seq.pool = best.unwrap_or(0);
    }

    /// Reuses the longest run of cached pages at the start of a fresh sequence. At least the
    /// last prompt token is always computed (its logits pick the first output token).
    fn match_prefix(&mut self, id: SeqId) {
        let ps = self.pools[0].page_size();
        let Some(seq) = self.seqs.get_mut(&id) else { return };
        let pages = &mut self.pools[seq.pool];
        let max_pages = (seq.tokens.len() - 1) / ps;
        self.prefix_queried += seq.tokens.len() as u64;
        seq.page_hashes.clear();
        for i in 0..max_pages {
            let hash = seq.hash_of_page(i, ps);
            let tokens = &seq.tokens[i * ps..(i + 1) * ps];
            let Some(page) = pages.lookup(hash, seq.salt, tokens) else { break };
            pages.acquire_cached(page);
            seq.table.push_owned(page);
            seq.page_hashes.push(hash);
        }
        seq.num_computed = seq.page_hashes.len() * ps;
        if !seq.charged {
            seq.cached_tokens = seq.num_computed;
        }
        self.prefix_hits += seq.num_computed as u64;
    }

    /// Gives back the pages `match_prefix` took when the sequence could not be admitted.
    fn unmatch_prefix(&mut self, id: SeqId) {
        let Some(seq) = self.seqs.get_mut(&id) else { return };
        self.prefix_hits -= seq.num_computed as u64;
        self.prefix_queried -= seq.tokens.len() as u64;
        give_back(&mut seq.table, &mut self.pools[seq.pool]);
        seq.page_hashes.clear();
        seq.num_computed = 0;
    }

    /// Registers every full, computed page of `id` that is not in the cache yet.
    fn register_full_pages(&mut self, id: SeqId) {
        let ps = self.pools[0].page_size();
        let Some(seq) = self.seqs.get_mut(&id) else { return };
        let pages = &mut self.pools[seq.pool];
        while (seq.page_hashes.len() + 1) * ps <= seq.num_computed {
            let i = seq.page_hashes.len();
            let hash = seq.hash_of_page(i, ps);
            let tokens = &seq.tokens[i * ps..(i + 1) * ps];
            pages.register(seq.table.pages()[i], hash, seq.salt, i as u32, tokens);
            seq.page_hashes.push(hash);
        }
    }

    fn chunk(&self, id: SeqId, len: usize) -> ScheduledChunk {
        let seq = &self.seqs[&id];
        ScheduledChunk { seq: id, start: seq.num_computed, len, samples: seq.num_computed + len == seq.tokens.len() }
    }

    /// Grows `id`'s block table to cover `tokens` positions; false when pages are short.
    fn reserve(&mut self, id: SeqId, tokens: usize) -> bool {
        let Some(seq) = self.seqs.get_mut(&id) else { return false };
        seq.table.ensure_capacity(&mut self.pools[seq.pool], tokens).is_ok()
    }

    /// Frees a running sequence's pages and queues it again to recompute its tokens.
    fn preempt(&mut self, id: SeqId) {
        self.running.retain(|&r| r != id);
        let Some(seq) = self.seqs.get_mut(&id) else { return };
        give_back(&mut seq.table, &mut self.pools[seq.pool]);
        seq.num_computed = 0;
        seq.page_hashes.clear();
        seq.status = SeqStatus::Waiting;
        seq.preemptions += 1;
        self.preemptions += 1;
        self.enqueue_waiting(id);
    }

    fn enqueue_waiting(&mut self, id: SeqId) {
        let rank = self.seqs[&id].rank();
        let at = self.waiting.partition_point(|w| self.seqs[w].rank() <= rank);
        self.waiting.insert(at, id);
    }
}

/// Returns a sequence's pages to its pool. A page the pool does not count as allocated would be
/// a bookkeeping bug: debug builds stop on it; a server skips the page rather than stop serving.
fn give_back(table: &mut crate::BlockTable, pool: &mut BlockAllocator) {
    let freed = table.release_all(pool);
    debug_assert!(freed.is_ok(), "{freed:?}");
}

#[cfg(test)]
mod tests;
