use crate::{BlockAllocator, CoreError, PageId};

/// The pages one sequence owns, in logical order: token `i` lives in page `pages[i / page_size]`
/// at slot `i % page_size`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockTable {
    pages: Vec<PageId>,
}

impl BlockTable {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn pages(&self) -> &[PageId] {
        &self.pages
    }

    /// Grows the table so it covers `tokens` positions; takes all new pages or none.
    pub fn ensure_capacity(&mut self, alloc: &mut BlockAllocator, tokens: usize) -> Result<(), CoreError> {
        let needed = alloc.pages_for(tokens).saturating_sub(self.pages.len());
        if needed > 0 {
            self.pages.extend(alloc.allocate(needed)?);
        }
        Ok(())
    }

    /// Appends a page the caller already owns a reference to (a prefix-cache hit).
    pub fn push_owned(&mut self, page: PageId) {
        self.pages.push(page);
    }

    /// Returns every page to the allocator, last page first, so that cached prefix pages
    /// become evictable tail-first.
    pub fn release_all(&mut self, alloc: &mut BlockAllocator) -> Result<(), CoreError> {
        for page in self.pages.drain(..).rev() {
            alloc.release(page)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_by_pages_and_releases() {
        let mut a = BlockAllocator::new(8, 4).unwrap();
        let mut t = BlockTable::new();
        t.ensure_capacity(&mut a, 5).unwrap();
        assert_eq!(t.pages().len(), 2);
        t.ensure_capacity(&mut a, 8).unwrap();
        assert_eq!(t.pages().len(), 2);
        t.ensure_capacity(&mut a, 9).unwrap();
        assert_eq!(t.pages().len(), 3);
        assert!(t.ensure_capacity(&mut a, 100).is_err());
        assert_eq!(t.pages().len(), 3, "a failed grow takes nothing");
        t.release_all(&mut a).unwrap();
        assert_eq!(a.num_free(), 8);
    }
}
