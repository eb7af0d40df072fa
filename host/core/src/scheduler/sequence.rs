//! One request's tokens and where its latent cache stands.

use crate::{page_hash, BlockTable, PromptHashes};

pub type SeqId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqStatus {
    Waiting,
    Running,
}

#[derive(Debug, Clone)]
pub struct Sequence {
    pub id: SeqId,
    /// Higher runs first; FIFO (by `arrival`) within one priority.
    pub priority: i32,
    pub(crate) arrival: u64,
    pub(crate) prompt_len: usize,
    /// Prompt followed by the generated tokens.
    pub(crate) tokens: Vec<u32>,
    /// Leading tokens whose latents are in the cache.
    pub(crate) num_computed: usize,
    pub(crate) table: BlockTable,
    pub(crate) status: SeqStatus,
    pub(crate) preemptions: u32,
    /// Prefix-cache salt: pages are shared only between sequences with the same salt.
    pub(crate) salt: u64,
    /// Chained hashes of the leading full pages already matched or registered in the cache.
    pub(crate) page_hashes: Vec<u64>,
    /// The prompt's page hashes as admission computed them (empty: computed here).
    pub(crate) prompt_hashes: Option<PromptHashes>,
    /// The tenant, for fair scheduling (0 without tenants).
    pub(crate) tenant: u32,
    /// Whether the prompt was charged to the tenant's counter (once, even if preempted).
    pub(crate) charged: bool,
    /// Whether cached pages may stand in for computing the prompt (off when every prompt
    /// position's logits are wanted).
    pub(crate) reuse_prefix: bool,
    /// Prompt tokens found in the prefix cache when the sequence was first admitted.
    pub(crate) cached_tokens: usize,
    /// The page pool (data-parallel attention rank) its pages come from, chosen at admission.
    pub(crate) pool: usize,
}

impl Sequence {
    pub fn new(id: SeqId, prompt: Vec<u32>, priority: i32) -> Self {
        Self {
            id,
            priority,
            arrival: 0,
            prompt_len: prompt.len(),
            tokens: prompt,
            num_computed: 0,
            table: BlockTable::new(),
            status: SeqStatus::Waiting,
            preemptions: 0,
            salt: 0,
            page_hashes: Vec::new(),
            prompt_hashes: None,
            tenant: 0,
            charged: false,
            reuse_prefix: true,
            cached_tokens: 0,
            pool: 0,
        }
    }

    /// Computes the whole prompt even where the prefix cache holds it (its pages are still
    /// registered for others).
    pub fn without_prefix_reuse(mut self) -> Self {
        self.reuse_prefix = false;
        self
    }

    /// Prompt tokens served from the prefix cache at the first admission.
    pub fn cached_tokens(&self) -> usize {
        self.cached_tokens
    }

    /// Sets the tenant whose fair share this sequence draws on.
    pub fn with_tenant(mut self, tenant: u32) -> Self {
        self.tenant = tenant;
        self
    }

    pub fn tenant(&self) -> u32 {
        self.tenant
    }

    /// The prompt's page hashes, computed once for the router and the scheduler.
    pub fn with_prompt_hashes(mut self, hashes: PromptHashes) -> Self {
        self.prompt_hashes = Some(hashes);
        self
    }

    /// The hash of full page `i` (chained on page `i - 1`'s, already in `page_hashes`).
    pub(crate) fn hash_of_page(&self, i: usize, page_size: usize) -> u64 {
        self.hash_of_page_after(i, page_size, self.page_hashes.last().copied())
    }

    /// The hash of full page `i` given page `i - 1`'s (`None` for the first).
    pub(crate) fn hash_of_page_after(&self, i: usize, page_size: usize, previous: Option<u64>) -> u64 {
        match self.prompt_hashes.as_ref().and_then(|h| h.get(i, self.salt, page_size)) {
            Some(h) => h,
            None => page_hash(previous, self.salt, &self.tokens[i * page_size..(i + 1) * page_size]),
        }
    }

    /// Sets the prefix-cache salt (from the tenant or the request's `cache_salt`).
    pub fn with_salt(mut self, salt: u64) -> Self {
        self.salt = salt;
        self
    }

    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    pub fn prompt_len(&self) -> usize {
        self.prompt_len
    }

    pub fn output(&self) -> &[u32] {
        &self.tokens[self.prompt_len..]
    }

    pub fn num_computed(&self) -> usize {
        self.num_computed
    }

    pub fn status(&self) -> SeqStatus {
        self.status
    }

    /// The page pool (data-parallel attention rank) holding its latents.
    pub fn pool(&self) -> usize {
        self.pool
    }

    pub fn preemptions(&self) -> u32 {
        self.preemptions
    }

    pub fn block_table(&self) -> &[crate::PageId] {
        self.table.pages()
    }

    /// Tokens not yet in the cache: the rest of the prompt, or the last sampled token.
    pub(crate) fn pending(&self) -> usize {
        self.tokens.len() - self.num_computed
    }

    /// Scheduling order: higher priority, then earlier arrival.
    pub(crate) fn rank(&self) -> (std::cmp::Reverse<i32>, u64) {
        (std::cmp::Reverse(self.priority), self.arrival)
    }
}
