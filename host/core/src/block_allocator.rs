use crate::CoreError;

/// Index of one physical page of the latent cache.
pub type PageId = u32;

/// Hands out fixed-size latent-cache pages and tracks how many owners each has.
///
/// Reference counts exist so that a page can later be shared by several sequences (prefix
/// caching) and is only returned to the free list when its last owner lets go.
#[derive(Debug, Clone)]
pub struct BlockAllocator {
    page_size: usize,
    ref_counts: Vec<u32>,
    free: Vec<PageId>,
}

impl BlockAllocator {
    pub fn new(num_pages: usize, page_size: usize) -> Result<Self, CoreError> {
        if page_size == 0 {
            return Err(CoreError::InvalidGeometry("page size must be at least 1".into()));
        }
        if num_pages > PageId::MAX as usize {
            return Err(CoreError::InvalidGeometry(format!("{num_pages} pages is too many")));
        }
        // Lowest ids are handed out first: pop from the back of a reversed list.
        let free = (0..num_pages as PageId).rev().collect();
        Ok(Self { page_size, ref_counts: vec![0; num_pages], free })
    }

    pub fn page_size(&self) -> usize {
        self.page_size
    }

    pub fn num_pages(&self) -> usize {
        self.ref_counts.len()
    }

    pub fn num_free(&self) -> usize {
        self.free.len()
    }

    pub fn num_used(&self) -> usize {
        self.num_pages() - self.num_free()
    }

    /// Pages needed to hold `tokens` tokens.
    pub fn pages_for(&self, tokens: usize) -> usize {
        tokens.div_ceil(self.page_size)
    }

    /// Takes `n` pages, all or none.
    pub fn allocate(&mut self, n: usize) -> Result<Vec<PageId>, CoreError> {
        if n > self.free.len() {
            return Err(CoreError::OutOfPages { needed: n, free: self.free.len(), total: self.num_pages() });
        }
        let pages = self.free.split_off(self.free.len() - n);
        for &p in &pages {
            self.ref_counts[p as usize] = 1;
        }
        Ok(pages.into_iter().rev().collect())
    }

    /// Adds an owner to an allocated page.
    pub fn retain(&mut self, page: PageId) -> Result<(), CoreError> {
        let count = self.count_mut(page)?;
        *count += 1;
        Ok(())
    }

    /// Drops one owner; the page returns to the free list when none is left.
    pub fn release(&mut self, page: PageId) -> Result<(), CoreError> {
        let count = self.count_mut(page)?;
        *count -= 1;
        if *count == 0 {
            self.free.push(page);
        }
        Ok(())
    }

    pub fn ref_count(&self, page: PageId) -> u32 {
        self.ref_counts.get(page as usize).copied().unwrap_or(0)
    }

    fn count_mut(&mut self, page: PageId) -> Result<&mut u32, CoreError> {
        match self.ref_counts.get_mut(page as usize) {
            Some(c) if *c > 0 => Ok(c),
            _ => Err(CoreError::PageNotAllocated(page)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_all_or_nothing_and_recycles() {
        let mut a = BlockAllocator::new(4, 16).unwrap();
        let p = a.allocate(3).unwrap();
        assert_eq!(p, vec![0, 1, 2]);
        assert_eq!(a.allocate(2), Err(CoreError::OutOfPages { needed: 2, free: 1, total: 4 }));
        assert_eq!(a.num_free(), 1);
        a.release(1).unwrap();
        assert_eq!(a.num_free(), 2);
        assert_eq!(a.release(1), Err(CoreError::PageNotAllocated(1)));
        assert_eq!(a.pages_for(33), 3);
        assert_eq!(a.pages_for(0), 0);
    }

    #[test]
    fn shared_page_frees_on_last_release() {
        let mut a = BlockAllocator::new(2, 8).unwrap();
        let p = a.allocate(1).unwrap()[0];
        a.retain(p).unwrap();
        a.release(p).unwrap();
        assert_eq!(a.num_free(), 1);
        a.release(p).unwrap();
        assert_eq!(a.num_free(), 2);
    }
}
