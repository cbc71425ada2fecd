//! The shared pool of one size class: its slabs and their free bitmaps.
//!
//! Thread caches take blocks from here in batches (`refill`) and return
//! them in batches (`give_back`); every bitmap change happens under the
//! class lock, so a block is either in exactly one cache, live in the
//! program, or marked free in exactly one slab. A slab whose blocks are all
//! free again is released (its pages go back to the page runs) unless it is
//! the class's last slab with free space.

use super::classes::blocks_per_slab;
use crate::sync::Mutex;
use std::collections::{BTreeSet, HashMap};

/// A block of a slab: the slab's head page and the block's index in it.
pub(crate) type BlockRef = (u64, u32);

/// Flag on an index `refill` hands out (pools that track it): the block
/// has not been handed out since its slab was created.
pub(crate) const UNTOUCHED_IDX: u32 = 1 << 31;

#[derive(Debug)]
pub(crate) struct Slab {
    free: Vec<u64>, // bit set = block free
    nfree: u32,
    cap: u32,
    /// Blocks from this index on have not been handed out since the slab
    /// was created (blocks go out lowest index first, so every block below
    /// it has been).
    untouched_from: u32,
}

impl Slab {
    fn new(cap: u32, all_free: bool) -> Slab {
        let words = cap.div_ceil(64) as usize;
        let mut free = vec![0u64; words];
        if all_free {
            for (w, word) in free.iter_mut().enumerate() {
                let bits = (cap as usize - w * 64).min(64);
                *word = if bits == 64 { u64::MAX } else { (1u64 << bits) - 1 };
            }
        }
        Slab { free, nfree: if all_free { cap } else { 0 }, cap, untouched_from: cap }
    }

    fn is_free(&self, idx: u32) -> bool {
        self.free[idx as usize / 64] & (1 << (idx % 64)) != 0
    }

    fn set_free(&mut self, idx: u32) -> bool {
        let w = &mut self.free[idx as usize / 64];
        let bit = 1u64 << (idx % 64);
        if *w & bit != 0 {
            return false;
        }
        *w |= bit;
        self.nfree += 1;
        true
    }

    /// Take up to `want` free blocks, lowest index first; with `flag`,
    /// untouched ones carry [`UNTOUCHED_IDX`].
    fn take_free(&mut self, want: usize, head: u64, out: &mut Vec<BlockRef>, flag: bool) {
        for (w, word) in self.free.iter_mut().enumerate() {
            while *word != 0 && out.len() < want {
                let b = word.trailing_zeros();
                *word &= !(1 << b);
                self.nfree -= 1;
                let idx = w as u32 * 64 + b;
                let untouched = idx >= self.untouched_from;
                self.untouched_from = self.untouched_from.max(idx + 1);
                out.push((head, if flag && untouched { idx | UNTOUCHED_IDX } else { idx }));
            }
            if out.len() >= want {
                break;
            }
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    slabs: HashMap<u64, Slab>,
    partial: BTreeSet<u64>,
}

/// What `give_back` found.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct GiveBack {
    /// Slabs now entirely free and removed from the class: release their
    /// pages.
    pub released: Vec<u64>,
    /// Blocks that were already free (a double free): ignored.
    pub double_frees: Vec<BlockRef>,
}

/// Occupancy of one class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Occupancy {
    pub slabs: u64,
    pub blocks: u64,
    pub free_blocks: u64,
}

pub(crate) struct ClassPool {
    class: usize,
    inner: Mutex<Inner>,
    /// Whether `refill` flags untouched blocks (the heap zeroes new slabs).
    track_untouched: bool,
}

impl ClassPool {
    pub(crate) fn new(class: usize) -> ClassPool {
        ClassPool { class, inner: Mutex::new(Inner::default()), track_untouched: false }
    }

    /// A pool whose `refill` flags blocks of new slabs not handed out
    /// since (their slabs are zeroed when created).
    pub(crate) fn tracking_untouched(class: usize) -> ClassPool {
        ClassPool { track_untouched: true, ..ClassPool::new(class) }
    }

    /// Move up to `want` free blocks into `out`. When no slab has any,
    /// `new_slab` is asked for a fresh one (its head page); `None` from it
    /// means the heap is full.
    pub(crate) fn refill(&self, want: usize, out: &mut Vec<BlockRef>, mut new_slab: impl FnMut() -> Option<u64>) {
        let target = out.len() + want;
        let mut g = self.inner.lock();
        let inner = &mut *g;
        while out.len() < target {
            let head = match inner.partial.first() {
                Some(&h) => h,
                None => match new_slab() {
                    Some(h) => {
                        let mut slab = Slab::new(blocks_per_slab(self.class), true);
                        slab.untouched_from = 0;
                        inner.slabs.insert(h, slab);
                        inner.partial.insert(h);
                        h
                    }
                    None => return,
                },
            };
            let slab = inner.slabs.get_mut(&head).expect("partial slab exists");
            slab.take_free(target, head, out, self.track_untouched);
            if slab.nfree == 0 {
                inner.partial.remove(&head);
            }
        }
    }

    /// Mark blocks free again.
    pub(crate) fn give_back(&self, blocks: &[BlockRef]) -> GiveBack {
        let mut res = GiveBack::default();
        let mut g = self.inner.lock();
        let inner = &mut *g;
        // Slabs these blocks emptied: only they can be released (scanning
        // every partial slab here made each give-back cost time in
        // proportion to the heap, ~40 µs once deletes had left thousands of
        // slabs partly free). A slab reaches all-free once per call, so
        // each is listed once.
        let mut empty: Vec<u64> = Vec::new();
        for &(head, idx) in blocks {
            let Some(slab) = inner.slabs.get_mut(&head) else {
                res.double_frees.push((head, idx));
                continue;
            };
            if !slab.set_free(idx) {
                res.double_frees.push((head, idx));
                continue;
            }
            if slab.nfree == slab.cap {
                empty.push(head);
            }
            inner.partial.insert(head);
        }
        // Release them, keeping one with free space for the class.
        for h in empty {
            if inner.partial.len() <= 1 {
                break;
            }
            inner.partial.remove(&h);
            inner.slabs.remove(&h);
            res.released.push(h);
        }
        res
    }

    /// Release every slab whose blocks are all free (heap under pressure).
    pub(crate) fn release_empty(&self) -> Vec<u64> {
        let mut g = self.inner.lock();
        let inner = &mut *g;
        let empty: Vec<u64> =
            inner.partial.iter().copied().filter(|h| inner.slabs[h].nfree == inner.slabs[h].cap).collect();
        for h in &empty {
            inner.partial.remove(h);
            inner.slabs.remove(h);
        }
        empty
    }

    /// Install a slab whose live blocks are the bits set in `live` (word
    /// `w` bit `b` is block `64 w + b`; bits past the slab's blocks are
    /// ignored), for recovery and clean open. Returns false if the slab
    /// was already known.
    pub(crate) fn install(&self, head: u64, live: &[u64]) -> bool {
        let mut g = self.inner.lock();
        if g.slabs.contains_key(&head) {
            return false;
        }
        let mut slab = Slab::new(blocks_per_slab(self.class), true);
        for (free, &l) in slab.free.iter_mut().zip(live) {
            *free &= !l;
        }
        slab.nfree = slab.free.iter().map(|w| w.count_ones()).sum();
        if slab.nfree > 0 {
            g.partial.insert(head);
        }
        g.slabs.insert(head, slab);
        true
    }

    /// Every slab's head and its live (not free) blocks, for saving at close
    /// and for audits. Blocks held by thread caches count as live here.
    pub(crate) fn snapshot(&self) -> Vec<(u64, Vec<u32>)> {
        let g = self.inner.lock();
        let mut v: Vec<(u64, Vec<u32>)> =
            g.slabs.iter().map(|(&h, s)| (h, (0..s.cap).filter(|&i| !s.is_free(i)).collect())).collect();
        v.sort_by_key(|(h, _)| *h);
        v
    }

    pub(crate) fn occupancy(&self) -> Occupancy {
        let g = self.inner.lock();
        let mut o = Occupancy::default();
        for s in g.slabs.values() {
            o.slabs += 1;
            o.blocks += s.cap as u64;
            o.free_blocks += s.nfree as u64;
        }
        o
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::heap::classes::class_of;
    use std::collections::BTreeMap;

    #[test]
    fn refill_give_back_release() {
        let c = class_of(4096).unwrap();
        let cap = blocks_per_slab(c) as usize; // 16
        let pool = ClassPool::new(c);
        let mut next = 0u64;
        let mut out = Vec::new();
        pool.refill(cap + 3, &mut out, || {
            next += 16;
            Some(next)
        });
        assert_eq!(out.len(), cap + 3);
        let mut uniq = out.clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!(uniq.len(), out.len(), "no block twice");
        // Everything back: one slab released, one kept.
        let r = pool.give_back(&out);
        assert_eq!(r.released.len(), 1);
        assert!(r.double_frees.is_empty());
        let r = pool.give_back(&out[..1]);
        assert_eq!(r.double_frees.len(), 1);
        assert_eq!(pool.release_empty().len(), 1);
        assert_eq!(pool.occupancy(), Occupancy::default());
    }

    #[test]
    fn give_back_releases_the_slabs_it_empties() {
        let c = class_of(4096).unwrap();
        let cap = blocks_per_slab(c) as usize;
        let pool = ClassPool::new(c);
        let mut next = 0u64;
        let mut out = Vec::new();
        pool.refill(cap * 10, &mut out, || {
            next += 16;
            Some(next)
        });
        let mut by_slab: BTreeMap<u64, Vec<BlockRef>> = BTreeMap::new();
        for &b in &out {
            by_slab.entry(b.0).or_default().push(b);
        }
        assert_eq!(by_slab.len(), 10);
        // Half of every slab first: ten partial slabs, none empty.
        for blocks in by_slab.values() {
            assert!(pool.give_back(&blocks[..cap / 2]).released.is_empty());
        }
        // Then the rest, one slab at a time: each give-back releases the
        // slab it emptied, but the last (kept so the class has free space).
        let heads: Vec<u64> = by_slab.keys().copied().collect();
        for (n, (head, blocks)) in by_slab.iter().enumerate() {
            let r = pool.give_back(&blocks[cap / 2..]);
            let want: Vec<u64> = if n + 1 < heads.len() { vec![*head] } else { vec![] };
            assert_eq!(r.released, want, "slab {n}");
        }
        assert_eq!(pool.occupancy().slabs, 1);
    }

    #[test]
    fn full_heap_gives_what_there_is() {
        let c = class_of(16384).unwrap();
        let pool = ClassPool::new(c);
        let mut out = Vec::new();
        let mut given = false;
        pool.refill(100, &mut out, || {
            if given {
                None
            } else {
                given = true;
                Some(0)
            }
        });
        assert_eq!(out.len(), 4);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::heap::classes::class_of;
    use loom::sync::Arc;

    /// Two threads hand blocks between their caches and the shared class
    /// pool (refill, then give back). No block is ever held by both, and
    /// afterwards every block is free exactly once.
    #[test]
    fn loom_cache_pool_handoff() {
        let c = class_of(16384).unwrap(); // 4 blocks a slab keeps the model small
        loom::model(move || {
            let pool = Arc::new(ClassPool::new(c));
            let held = Arc::new(loom::sync::Mutex::new(std::collections::HashSet::new()));
            let slabs = Arc::new(loom::sync::atomic::AtomicU64::new(0));
            let threads: Vec<_> = (0..2)
                .map(|_| {
                    let (pool, held, slabs) = (pool.clone(), held.clone(), slabs.clone());
                    loom::thread::spawn(move || {
                        let mut cache = Vec::new();
                        pool.refill(3, &mut cache, || {
                            let n = slabs.fetch_add(1, loom::sync::atomic::Ordering::Relaxed);
                            (n < 2).then_some(n * 16)
                        });
                        for b in &cache {
                            assert!(held.lock().unwrap().insert(*b), "block {b:?} handed out twice");
                        }
                        for b in &cache {
                            held.lock().unwrap().remove(b);
                        }
                        let r = pool.give_back(&cache);
                        assert!(r.double_frees.is_empty());
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            let occ = pool.occupancy();
            assert_eq!(occ.free_blocks, occ.blocks, "every block free again");
        });
    }
}
