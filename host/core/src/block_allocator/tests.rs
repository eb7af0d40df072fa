use super::*;
use crate::eviction::{EvictionDecision, LruPolicy};

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

#[test]
fn cached_pages_outlive_their_owner_until_space_is_needed() {
    let index = Arc::new(PrefixIndex::new());
    let mut a = BlockAllocator::new(3, 2).unwrap();
    a.set_shared_index(index.clone());
    let p = a.allocate(2).unwrap();
    assert!(a.register(p[0], 11, 0, 0, &[1, 2]));
    assert!(a.register(p[1], 12, 0, 1, &[3, 4]));
    assert!(!a.register(p[1], 12, 0, 1, &[3, 4]), "one page per hash");
    assert_eq!(index.len(), 2);
    a.release(p[1]).unwrap();
    a.release(p[0]).unwrap();
    assert_eq!((a.num_used(), a.num_free(), a.num_cached()), (0, 3, 2));
    // A hit re-checks tokens and salt, then revives the page.
    assert_eq!(a.lookup(11, 0, &[1, 2]), Some(p[0]));
    assert_eq!(a.lookup(11, 0, &[1, 3]), None);
    assert_eq!(a.lookup(11, 7, &[1, 2]), None);
    a.acquire_cached(p[0]);
    assert_eq!((a.num_used(), a.num_free()), (1, 2));
    // The free page goes first, then the evictable cached one.
    let q = a.allocate(2).unwrap();
    assert_eq!(q.len(), 2);
    assert!(!q.contains(&p[0]), "a referenced cached page is never evicted");
    assert_eq!(a.evictions(), 1);
    assert_eq!(a.lookup(12, 0, &[3, 4]), None);
    assert_eq!(index.len(), 1);
    assert_eq!(a.allocate(1), Err(CoreError::OutOfPages { needed: 1, free: 0, total: 3 }));
}

#[test]
fn eviction_never_touches_pages_in_use_under_random_load() {
    let mut a = BlockAllocator::new(16, 4).unwrap();
    let mut rng = 0x1234_5678_u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut owned: Vec<PageId> = Vec::new();
    let mut hash = 100;
    for _ in 0..5000 {
        match next() % 4 {
            0 | 1 => {
                let n = (next() % 3 + 1) as usize;
                if let Ok(pages) = a.allocate(n) {
                    for p in pages {
                        assert_eq!(a.ref_count(p), 1);
                        hash += 1;
                        if next() % 2 == 0 {
                            a.register(p, hash, 0, 0, &[hash as u32; 4]);
                        }
                        owned.push(p);
                    }
                }
            }
            2 if !owned.is_empty() => {
                let i = (next() % owned.len() as u64) as usize;
                a.release(owned.swap_remove(i)).unwrap();
            }
            _ => {
                // Reuse a random cached page as a prefix hit.
                let h = 100 + next() % (hash - 99);
                if let Some(p) = a.lookup(h, 0, &[h as u32; 4]) {
                    a.acquire_cached(p);
                    owned.push(p);
                }
            }
        }
        assert_eq!(a.num_used() + a.num_free(), 16, "every page is used, free or evictable");
        let distinct: std::collections::HashSet<_> = owned.iter().collect();
        assert_eq!(a.num_used(), distinct.len());
    }
    for p in owned.drain(..) {
        a.release(p).unwrap();
    }
    assert_eq!(a.num_used(), 0);
}

/// Pins the first page it sees; otherwise LRU.
struct PinFirst(Option<PageId>);

impl EvictionPolicy for PinFirst {
    fn decide(&mut self, candidates: &[EvictionCandidate], needed: usize) -> EvictionDecision {
        let mut d = LruPolicy.decide(candidates, needed);
        let pin = *self.0.get_or_insert(candidates[0].page);
        d.pinned.push(pin);
        d
    }
}

#[test]
fn a_policy_orders_and_pins_but_pins_yield_when_nothing_else_is_left() {
    let mut a = BlockAllocator::new(3, 1).unwrap();
    a.set_eviction_policy(Box::new(PinFirst(None)));
    let p = a.allocate(3).unwrap();
    for (i, &page) in p.iter().enumerate() {
        a.register(page, i as u64, 0, 0, &[i as u32]);
    }
    for &page in &p {
        a.release(page).unwrap();
    }
    let first = a.allocate(1).unwrap()[0];
    assert_ne!(first, p[0], "the pinned (oldest) page stays while others can go");
    assert_eq!(first, p[1]);
    let rest = a.allocate(2).unwrap();
    assert!(rest.contains(&p[0]), "a pin yields when nothing else is left");
}

#[test]
fn a_policy_naming_pages_that_do_not_exist_cannot_break_eviction() {
    struct Hostile;
    impl crate::EvictionPolicy for Hostile {
        fn decide(&mut self, _c: &[crate::EvictionCandidate], _n: usize) -> EvictionDecision {
            EvictionDecision { order: vec![u32::MAX, 7_000_000], pinned: vec![u32::MAX - 1] }
        }
    }
    let mut a = BlockAllocator::new(4, 2).unwrap();
    a.set_eviction_policy(Box::new(Hostile));
    let p = a.allocate(4).unwrap();
    for (i, &page) in p.iter().enumerate() {
        assert!(a.register(page, 100 + i as u64, 0, i as u32, &[i as u32, 0]));
        a.release(page).unwrap();
    }
    // Every id the policy named is ignored; the oldest cached pages go instead.
    assert_eq!(a.allocate(2).unwrap(), vec![p[0], p[1]]);
    assert_eq!(a.evictions(), 2);
}

#[test]
fn reset_drops_unused_cached_pages_and_keeps_those_in_use() {
    let mut a = BlockAllocator::new(3, 2).unwrap();
    let p = a.allocate(2).unwrap();
    assert!(a.register(p[0], 1, 0, 0, &[1, 2]));
    assert!(a.register(p[1], 2, 0, 1, &[3, 4]));
    a.release(p[1]).unwrap();
    assert_eq!(a.drop_unused_cached(), 1);
    assert_eq!((a.num_cached(), a.num_free(), a.num_used()), (1, 2, 1));
    assert_eq!(a.lookup(2, 0, &[3, 4]), None);
    assert_eq!(a.lookup(1, 0, &[1, 2]), Some(p[0]));
}

#[test]
fn split_pools_hand_out_their_own_ids_and_refuse_others() {
    let mut pools = BlockAllocator::split(8, 4, 2).unwrap();
    let a = pools[0].allocate(4).unwrap();
    let b = pools[1].allocate(4).unwrap();
    assert_eq!(a, [0, 1, 2, 3]);
    assert_eq!(b, [4, 5, 6, 7]);
    assert!(pools[0].owns(3) && !pools[0].owns(4) && pools[1].owns(4));
    assert!(pools[0].release(5).is_err(), "a page of another pool");
    assert_eq!(pools[1].ref_count(1), 0);
    pools[1].release(6).unwrap();
    assert_eq!(pools[1].allocate(1).unwrap(), [6]);
    assert!(BlockAllocator::split(9, 4, 2).is_err(), "9 pages do not split in two");
}
