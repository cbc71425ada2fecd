//! The point cache: a DRAM hash table from a key's hash to the pool offset
//! of its current record. A get that hits reads one DRAM line and then the
//! record, instead of walking the index, reading the leaf's version word,
//! its fingerprints and a slot, and then the record.
//!
//! It holds no data of its own and is never persisted: it is empty at every
//! open, writes and gets fill it, and an entry may be dropped at any time.
//! A bucket is one cache line: a stamp word (bit 0: locked; the rest counts
//! changes) and [`WAYS`] entries, each `tag << 48 | record offset` (0: empty). A hit
//! is an entry with the key's tag whose record holds the key.
//!
//! What makes a hit correct is one invariant: *an entry for key K names K's
//! current record*, except for the moment between a writer publishing a
//! change to K in the pool (under K's leaf lock) and that writer calling
//! [`Hot::replace`] (before it unlocks): until `replace` the writer's
//! operation has not returned, so reading the old record is still a read
//! that precedes the write. `replace` swaps or removes K's entry and bumps
//! the bucket's stamp. Every change to a key goes through it: puts,
//! deletes, and the writes of transactions and batches. It runs after the
//! change is durable, so no reader sees through the cache a value that a
//! crash could still take back. A record is retired only after its entry
//! is gone, so a reader pinned before the retire may still read it.
//!
//! Writers fill the cache with the records they write (`replace` caches a
//! new record; a one-drain insert of a new key caches it later, with the
//! stamp it read before publishing, through [`Hot::insert`] as below: see
//! `local`), and so do gets that miss: such a get takes the bucket's
//! stamp *before* looking in the bucket, finds the record through the
//! tree, and inserts it only if the stamp is still the one it took (an
//! insert bumps it too): a writer that changed any key of the bucket
//! meanwhile — perhaps this one, after the tree read — makes the insert
//! give up. An absent key is never cached.
//!
//! A transaction calls `replace` twice per key before it unlocks: first to
//! forget every replaced record, then to cache every new one. Between the
//! two passes a reader finds none of its keys in the cache and goes to the
//! tree, whose leaves are still locked; so nobody reads a new value
//! through the cache while an old value of the same commit is still there.
//! New leaves that the commit links (when a leaf overflows) join the index
//! only after the second pass, still before it unlocks: no lock covers
//! them, and a reader finding a new record there earlier could cache it
//! before the second pass cached it again.
//!
//! `check` audits the cache: every entry names a record a leaf holds,
//! under that record's key, once.

use crate::sync::{AtomicU64, Ordering, spin};

/// Entries per bucket (the eighth word of the line is the stamp).
pub(crate) const WAYS: usize = 7;
const LINE_WORDS: usize = WAYS + 1;
const OFF_MASK: u64 = (1 << 48) - 1;

/// What a lookup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Probe {
    /// The key's current record.
    Hit(u64),
    /// Not cached; the bucket's stamp as it was before the lookup, for
    /// [`Hot::insert`].
    Miss(u64),
}

/// The point cache (see the module docs).
pub(crate) struct Hot {
    words: Words,
    /// Index of bucket 0's stamp word (the first one on a 64-byte line).
    base: usize,
    /// log2 of the bucket count (0 buckets: `words` is empty).
    bits: u32,
}

impl std::fmt::Debug for Hot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hot").field("buckets", &self.buckets()).finish()
    }
}

#[cfg(not(loom))]
type Words = daxkv_alloc::ZeroedWords;

/// The table's words, or none if they cannot be had (the cache is off).
/// A large table's pages are faulted in by a background thread, so that
/// the first writes and gets after open do not each take a page fault.
#[cfg(not(loom))]
fn zeroed(n: usize) -> Words {
    let words = Words::new(n).unwrap_or_else(|e| {
        log::warn!("point cache of {n} words not mapped ({e}): running without it");
        Words::new(0).expect("an empty table maps nothing")
    });
    if n * 8 >= 4 << 20 {
        words.populate_in_background();
    }
    words
}

#[cfg(loom)]
type Words = Box<[AtomicU64]>;

#[cfg(loom)]
fn zeroed(n: usize) -> Words {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

impl Hot {
    /// A cache of at most `bytes` of DRAM (rounded down to a power of two
    /// of 64-byte buckets); below one bucket it is off and every lookup
    /// misses.
    pub(crate) fn new(bytes: u64) -> Hot {
        let buckets = Hot::buckets_for(bytes);
        if buckets == 0 {
            return Hot { words: zeroed(0), base: 0, bits: 0 };
        }
        let bits = buckets.trailing_zeros();
        let n = buckets * LINE_WORDS;
        // One line of slack so bucket 0 can start on a line boundary.
        let words = zeroed(n + LINE_WORDS);
        if words.is_empty() {
            return Hot { words, base: 0, bits: 0 };
        }
        let misalign = (words.as_ptr() as usize / 8) % LINE_WORDS;
        let base = (LINE_WORDS - misalign) % LINE_WORDS;
        Hot { words, base, bits }
    }

    /// The bucket count of a cache of at most `bytes` (see [`Hot::new`]).
    pub(crate) fn buckets_for(bytes: u64) -> usize {
        let lines = bytes / 64;
        if lines == 0 { 0 } else { 1 << (63 - lines.leading_zeros()) }
    }

    /// A cache that caches nothing.
    pub(crate) fn off() -> Hot {
        Hot::new(0)
    }

    /// Number of buckets.
    pub(crate) fn buckets(&self) -> usize {
        if self.words.is_empty() { 0 } else { 1 << self.bits }
    }

    /// DRAM the table takes (touched or not).
    pub(crate) fn bytes(&self) -> u64 {
        self.words.len() as u64 * 8
    }

    #[inline]
    fn on(&self) -> bool {
        !self.words.is_empty()
    }

    /// The bucket's stamp word; its entries follow it.
    #[inline]
    fn bucket(&self, h: u32) -> usize {
        // Fibonacci hashing: the top bits of the product mix every bit of h.
        let i = (u64::from(h).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - self.bits.max(1))) as usize;
        let i = if self.bits == 0 { 0 } else { i };
        self.base + i * LINE_WORDS
    }

    #[inline]
    fn tag(h: u32) -> u64 {
        u64::from(h & 0xffff) << 48
    }

    /// Start the cache miss of `h`'s bucket.
    #[cfg(not(loom))]
    #[inline]
    pub(crate) fn prefetch(&self, h: u32) {
        if self.on() {
            daxkv_alloc::Region::prefetch_ref(&self.words[self.bucket(h)]);
        }
    }

    /// The offsets of the records cached under `h`'s tag (candidates: the
    /// caller checks their keys, if it needs to know).
    #[inline]
    pub(crate) fn candidates(&self, h: u32) -> impl Iterator<Item = u64> + '_ {
        let b = if self.on() { self.bucket(h) + 1 } else { 0 };
        let ways = if self.on() { WAYS } else { 0 };
        let tag = Hot::tag(h);
        (b..b + ways).filter_map(move |i| {
            let e = self.words[i].load(Ordering::Acquire);
            (e != 0 && e & !OFF_MASK == tag).then_some(e & OFF_MASK)
        })
    }

    /// Look `h` up; `is_key(rec)` says whether the record at `rec` holds
    /// the key looked for.
    #[inline]
    pub(crate) fn lookup(&self, h: u32, mut is_key: impl FnMut(u64) -> bool) -> Probe {
        if !self.on() {
            return Probe::Miss(1);
        }
        let stamp = self.words[self.bucket(h)].load(Ordering::Acquire);
        for rec in self.candidates(h) {
            if is_key(rec) {
                return Probe::Hit(rec);
            }
        }
        Probe::Miss(stamp)
    }

    /// What is wrong with the entries, for `check` on a quiescent store:
    /// every entry must name a record that a leaf holds, under the tag and
    /// in the bucket of that record's key, and only once (a second copy
    /// would outlive the record, since a change removes one). `live` holds
    /// every record a leaf holds and its key's hash, sorted by offset; the
    /// entries are sorted too and the two lists walked together. At most
    /// `max` problems.
    pub(crate) fn audit(&self, live: &[(u64, u32)], max: usize) -> Vec<String> {
        // (record, bucket, tag) of every entry.
        let mut cached: Vec<(u64, usize, u64)> = Vec::new();
        for i in 0..self.buckets() {
            let b = self.base + i * LINE_WORDS;
            for w in &self.words[b + 1..b + LINE_WORDS] {
                let e = w.load(Ordering::Acquire);
                if e != 0 {
                    cached.push((e & OFF_MASK, b, e & !OFF_MASK));
                }
            }
        }
        cached.sort_unstable();
        let mut problems = Vec::new();
        let mut at = 0;
        for (n, &(rec, b, tag)) in cached.iter().enumerate() {
            if n > 0 && cached[n - 1].0 == rec {
                problems.push(format!("point cache: record {rec} is cached twice"));
            }
            while at < live.len() && live[at].0 < rec {
                at += 1;
            }
            match live.get(at).filter(|l| l.0 == rec) {
                None => problems.push(format!("point cache: names record {rec}, which no leaf holds")),
                Some(&(_, h)) if self.bucket(h) != b || Hot::tag(h) != tag => {
                    problems.push(format!("point cache: record {rec} is cached under another key's hash"))
                }
                Some(_) => {}
            }
            if problems.len() >= max {
                problems.truncate(max);
                break;
            }
        }
        problems
    }

    /// The stamp of `h`'s bucket now, for a later [`Hot::insert`]: a writer
    /// that reads it before publishing a new key can cache the key's record
    /// afterwards, and gives up if anything changed the bucket in between.
    #[inline]
    pub(crate) fn stamp(&self, h: u32) -> u64 {
        if !self.on() {
            return 1;
        }
        self.words[self.bucket(h)].load(Ordering::Acquire)
    }

    /// Cache `rec` as the record of the key hashed to `h`, which a lookup
    /// that returned `Miss(stamp)` did not find and the tree then did. Gives
    /// up if anything changed the bucket since that lookup.
    pub(crate) fn insert(&self, h: u32, stamp: u64, rec: u64) {
        debug_assert!(rec != 0 && rec <= OFF_MASK);
        if !self.on() || stamp & 1 == 1 {
            return;
        }
        let b = self.bucket(h);
        let word = &self.words[b];
        if word.compare_exchange(stamp, stamp | 1, Ordering::Acquire, Ordering::Relaxed).is_err() {
            return;
        }
        place(&self.words[b + 1..b + LINE_WORDS], stamp, Hot::tag(h) | rec);
        word.store(stamp + 2, Ordering::Release);
    }

    /// Called by a writer that holds the leaf lock of the key hashed to
    /// `h`, after its change to the key is durable and before it unlocks
    /// the leaf: the key's record `old` (`None`: it had none) is now `new`
    /// (`None`: the key is gone). The entry naming `old` is overwritten with
    /// `new` or emptied; a `new` record of a key not cached is cached. Always
    /// bumps the bucket's stamp, so that no insert begun before the change
    /// lands.
    pub(crate) fn replace(&self, h: u32, old: Option<u64>, new: Option<u64>) {
        if !self.on() {
            return;
        }
        let b = self.bucket(h);
        let word = &self.words[b];
        let stamp = loop {
            let s = word.load(Ordering::Relaxed);
            if s & 1 == 0 && word.compare_exchange(s, s | 1, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                break s;
            }
            spin();
        };
        let ways = &self.words[b + 1..b + LINE_WORDS];
        let to = new.map_or(0, |r| Hot::tag(h) | r);
        let at = old.and_then(|o| ways.iter().position(|w| w.load(Ordering::Relaxed) == Hot::tag(h) | o));
        match at {
            Some(i) => ways[i].store(to, Ordering::Release),
            None if to != 0 => place(ways, stamp, to),
            None => {}
        }
        word.store(stamp + 2, Ordering::Release);
    }
}

/// Store `entry` in a locked bucket's `ways`: in an empty way, or else in
/// the one the bucket's `stamp` picks (round robin, as the stamp counts).
fn place(ways: &[AtomicU64], stamp: u64, entry: u64) {
    let i = ways.iter().position(|w| w.load(Ordering::Relaxed) == 0).unwrap_or((stamp >> 1) as usize % WAYS);
    ways[i].store(entry, Ordering::Release);
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// Keys are u32 hashes here; a "record" is `1000 + key * 8 + version`.
    fn is(h: u32) -> impl FnMut(u64) -> bool {
        move |rec| (rec - 1000) / 8 == u64::from(h)
    }

    #[test]
    fn off_misses_and_ignores_writes() {
        let c = Hot::off();
        assert_eq!(c.buckets(), 0);
        c.insert(5, 0, 1040);
        c.replace(5, Some(1040), Some(1041));
        assert!(matches!(c.lookup(5, is(5)), Probe::Miss(_)));
    }

    #[test]
    fn sizes_to_a_power_of_two_of_lines() {
        assert_eq!(Hot::new(64).buckets(), 1);
        assert_eq!(Hot::new(64 * 1000).buckets(), 512);
        assert_eq!(Hot::new(1 << 20).buckets(), 1 << 14);
        let c = Hot::new(1 << 20);
        assert_eq!(c.words[c.base..].as_ptr() as usize % 64, 0);
    }

    #[test]
    fn inserts_hit_and_replace_keeps_them_current() {
        let c = Hot::new(64 * 1024);
        for h in 0..4000u32 {
            let Probe::Miss(s) = c.lookup(h, is(h)) else { panic!("hit before insert") };
            c.insert(h, s, 1000 + u64::from(h) * 8);
        }
        let mut hits = 0;
        for h in 0..4000u32 {
            match c.lookup(h, is(h)) {
                Probe::Hit(rec) => {
                    assert_eq!(rec, 1000 + u64::from(h) * 8);
                    hits += 1;
                    c.replace(h, Some(rec), Some(rec + 1));
                    assert_eq!(c.lookup(h, is(h)), Probe::Hit(rec + 1));
                    c.replace(h, Some(rec + 1), None);
                    assert!(matches!(c.lookup(h, is(h)), Probe::Miss(_)));
                }
                Probe::Miss(_) => {}
            }
        }
        // 1024 buckets of 7 ways for 4000 keys: most stay cached.
        assert!(hits > 3000, "{hits} hits");
    }

    #[test]
    fn the_audit_finds_dead_misfiled_and_doubled_entries() {
        let c = Hot::new(64 * 1024);
        // "Records" 1000 + key * 8 of keys 0..100 are live, key k's hash k.
        let live: Vec<(u64, u32)> = (0..100u32).map(|k| (1000 + u64::from(k) * 8, k)).collect();
        for h in 0..100u32 {
            c.replace(h, None, Some(1000 + u64::from(h) * 8));
        }
        assert!(c.audit(&live, 10).is_empty());
        // A record no leaf holds, a record under another key's hash (a
        // second copy of it too), and a second copy in its own bucket (the
        // commit bug this audit caught).
        c.replace(200, None, Some(5000));
        c.replace(300, None, Some(1008));
        c.replace(7, None, Some(1056));
        let found = c.audit(&live, 10);
        assert_eq!(found.len(), 4, "{found:?}");
        assert!(found.iter().any(|p| p.contains("1008 is cached twice")), "{found:?}");
        assert!(found.iter().any(|p| p.contains("5000, which no leaf holds")), "{found:?}");
        assert!(found.iter().any(|p| p.contains("1008 is cached under another key")), "{found:?}");
        assert!(found.iter().any(|p| p.contains("1056 is cached twice")), "{found:?}");
        assert_eq!(c.audit(&live, 2).len(), 2);
    }

    #[test]
    fn an_insert_after_a_change_to_the_bucket_gives_up() {
        let c = Hot::new(64);
        let Probe::Miss(s) = c.lookup(1, is(1)) else { panic!() };
        // A writer changes some key of the bucket between the lookup and
        // the insert (its record was not cached: only the stamp moves).
        c.replace(2, Some(1016), None);
        c.insert(1, s, 1008);
        assert!(matches!(c.lookup(1, is(1)), Probe::Miss(_)));
        let Probe::Miss(s) = c.lookup(1, is(1)) else { panic!() };
        c.insert(1, s, 1008);
        assert_eq!(c.lookup(1, is(1)), Probe::Hit(1008));
    }

    #[test]
    fn writers_cache_what_they_write() {
        let c = Hot::new(64 * 64);
        // A new key, and a key whose old record was not cached.
        c.replace(3, None, Some(1000 + 3 * 8));
        c.replace(4, Some(1000 + 4 * 8), Some(1000 + 4 * 8 + 1));
        assert_eq!(c.lookup(3, is(3)), Probe::Hit(1000 + 3 * 8));
        assert_eq!(c.lookup(4, is(4)), Probe::Hit(1000 + 4 * 8 + 1));
        // Forgetting a record that is not the cached one leaves the entry.
        c.replace(3, Some(1000 + 3 * 8 + 5), None);
        assert_eq!(c.lookup(3, is(3)), Probe::Hit(1000 + 3 * 8));
        c.replace(3, Some(1000 + 3 * 8), None);
        assert!(matches!(c.lookup(3, is(3)), Probe::Miss(_)));
    }

    #[test]
    fn a_full_bucket_evicts_one_way() {
        let c = Hot::new(64);
        for h in 0..20u32 {
            let Probe::Miss(s) = c.lookup(h, is(h)) else { panic!() };
            c.insert(h, s, 1000 + u64::from(h) * 8);
        }
        let cached = (0..20u32).filter(|&h| matches!(c.lookup(h, is(h)), Probe::Hit(_))).count();
        assert_eq!(cached, WAYS);
        assert_eq!(c.lookup(19, is(19)), Probe::Hit(1000 + 19 * 8));
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    /// A reader that misses, reads the "tree" and inserts what it read,
    /// racing a writer that publishes a new record in the tree and then
    /// calls `replace`: once both are done, the cache never answers with
    /// the old record.
    #[test]
    fn no_stale_insert() {
        loom::model(|| {
            let c = Arc::new(Hot::new(64));
            // The tree: the key's current record.
            let tree = Arc::new(AtomicU64::new(1008));
            let is = |rec: u64| rec == 1008 || rec == 1016;
            let (c2, t2) = (c.clone(), tree.clone());
            let reader = loom::thread::spawn(move || match c2.lookup(1, is) {
                Probe::Hit(r) => r,
                Probe::Miss(s) => {
                    let r = t2.load(Ordering::Acquire);
                    c2.insert(1, s, r);
                    r
                }
            });
            tree.store(1016, Ordering::Release);
            c.replace(1, Some(1008), Some(1016));
            let _ = reader.join().unwrap();
            if let Probe::Hit(r) = c.lookup(1, is) {
                assert_eq!(r, 1016, "stale record cached");
            }
        });
    }

    /// The deferred fill of a one-drain insert (see `local`): the writer
    /// reads the bucket's stamp, publishes the new key, unlocks, and only
    /// later inserts the record with that stamp. Meanwhile a reader may
    /// miss and fill the same key, and a second writer may replace it.
    /// Once all are done, no entry names the replaced record. (Reading the
    /// stamp after the publish instead fails: the reader's fill and the
    /// writer's both land, and the replace updates only one of them.)
    #[test]
    fn loom_deferred_fill() {
        loom::model(|| {
            let c = Arc::new(Hot::new(64));
            // The tree (0: the key is absent) and the first writer's leaf lock.
            let tree = Arc::new(AtomicU64::new(0));
            let unlocked = Arc::new(loom::sync::atomic::AtomicBool::new(false));
            let is = |rec: u64| rec == 1008 || rec == 1016;
            let (c1, t1, u1) = (c.clone(), tree.clone(), unlocked.clone());
            let first = loom::thread::spawn(move || {
                let stamp = c1.stamp(1);
                t1.store(1008, Ordering::Release);
                u1.store(true, Ordering::Release);
                c1.insert(1, stamp, 1008);
            });
            let (c2, t2) = (c.clone(), tree.clone());
            let reader = loom::thread::spawn(move || {
                if let Probe::Miss(s) = c2.lookup(1, is) {
                    let r = t2.load(Ordering::Acquire);
                    if r != 0 {
                        c2.insert(1, s, r);
                    }
                }
            });
            // The second writer takes the leaf lock after the first.
            while !unlocked.load(Ordering::Acquire) {
                loom::thread::yield_now();
            }
            tree.store(1016, Ordering::Release);
            c.replace(1, Some(1008), Some(1016));
            first.join().unwrap();
            reader.join().unwrap();
            // No entry names the replaced record (a lookup might not show
            // it, behind a current one).
            assert!(c.candidates(1).all(|r| r != 1008), "stale record cached");
        });
    }
}
