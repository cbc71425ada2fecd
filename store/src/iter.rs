//! Ordered iteration over a range, forward or reverse.
//!
//! The iterator reads one leaf at a time, optimistically: it takes the
//! leaf's records in the range in key order (from the leaf's cached
//! [`crate::view`], found by counting its key prefixes below the start, or
//! by reading and sorting the leaf's records; a leaf scanned twice
//! unchanged gets a cached view), then checks that neither the leaf nor
//! the index changed meanwhile, and retries the leaf otherwise. Keys and values are copied out only as the
//! caller takes them; the iterator keeps its thread pinned, so the records
//! it collected are not reused meanwhile (a long-lived iterator delays the
//! reuse of freed space).
//! Between leaves it moves by separator keys, so it sees each key at most
//! once and in order; keys written concurrently may or may not be seen.

use crate::error::Result;
use crate::leaf;
use crate::store::Store;
use crate::view::LeafView;
use daxkv_alloc::Guard;
use std::ops::Bound;
use std::sync::Arc;

/// Records read ahead of the one returned.
const AHEAD: usize = 24;

/// An iterator over `(key, value)` pairs in key order (or reverse).
pub struct Iter<'a> {
    store: &'a Store,
    fwd: bool,
    lo: Bound<Vec<u8>>,
    hi: Bound<Vec<u8>>,
    /// Where the next leaf's part starts (its separator, or forward
    /// the separator of the leaf after it), once the first leaf is done.
    cursor: Option<Vec<u8>>,
    /// The last record taken into `buf` (its key bounds the next leaf's
    /// part). Read from the pool when needed: the iterator's pin keeps the
    /// record from being reused, and by then it has usually been returned
    /// and is cached.
    last: Option<u64>,
    /// One leaf's records in the range, in the order returned; those
    /// before `pos` were returned.
    buf: Vec<u64>,
    pos: usize,
    done: bool,
    _pin: Guard,
}

fn above(lo: &Bound<Vec<u8>>, k: &[u8]) -> bool {
    match lo {
        Bound::Unbounded => true,
        Bound::Included(l) => k >= l.as_slice(),
        Bound::Excluded(l) => k > l.as_slice(),
    }
}

fn below(hi: &Bound<Vec<u8>>, k: &[u8]) -> bool {
    match hi {
        Bound::Unbounded => true,
        Bound::Included(h) => k <= h.as_slice(),
        Bound::Excluded(h) => k < h.as_slice(),
    }
}

/// The smallest key greater than every key starting with `p`, if any.
pub(crate) fn prefix_end(p: &[u8]) -> Option<Vec<u8>> {
    let mut e = p.to_vec();
    while let Some(&last) = e.last() {
        if last == 0xff {
            e.pop();
        } else {
            *e.last_mut().expect("non-empty") += 1;
            return Some(e);
        }
    }
    None
}

impl<'a> Iter<'a> {
    pub(crate) fn new(store: &'a Store, lo: Bound<Vec<u8>>, hi: Bound<Vec<u8>>, fwd: bool) -> Iter<'a> {
        let done = store.live().is_err();
        let _pin = store.heap.pin();
        // A leaf holds at most `SLOTS` records: one allocation for any scan.
        let buf = Vec::with_capacity(leaf::SLOTS);
        Iter { store, fwd, lo, hi, cursor: None, last: None, buf, pos: 0, done, _pin }
    }

    /// Refill `buf` with the next leaf's records in the range (or set
    /// `done`). Called only once `buf` is used up.
    fn fill(&mut self) {
        let s = self.store;
        let r = &*s.region;
        self.buf.clear();
        self.pos = 0;
        loop {
            let generation = s.index.generation();
            let snap = s.index.load();
            // The leaf, and where the one after it in the scan's direction
            // is (and, forward, its separator: where the scan goes next).
            let (leaf, ahead, next) = match (&self.cursor, self.fwd) {
                (cursor, true) => {
                    let (leaf, next) = match (cursor, &self.lo) {
                        (Some(c), _) => snap.route_and_next(c),
                        (None, Bound::Unbounded) => snap.route_and_next(b""),
                        (None, Bound::Included(k) | Bound::Excluded(k)) => snap.route_and_next(k),
                    };
                    if let Some(n) = &next {
                        // Its lock word and view hints, for the next fill.
                        daxkv_alloc::Region::prefetch_ref(&**n.leaf);
                    }
                    (leaf, next.as_ref().map(|n| (n.off, Some(n.leaf))), next.map(|n| n.sep))
                }
                (cursor, false) => {
                    let leaf = match (cursor, &self.hi) {
                        (None, Bound::Unbounded) => snap.rightmost(),
                        (None, Bound::Included(k) | Bound::Excluded(k)) => snap.route(k),
                        (Some(c), _) => match snap.before(c) {
                            Some(x) => x,
                            None => {
                                self.done = true;
                                return;
                            }
                        },
                    };
                    (leaf, snap.before(&leaf.sep).map(|l| (l.off, None)), None)
                }
            };
            leaf.prefetch_view();
            let v = leaf.read_begin();
            if let Some((off, _)) = ahead {
                leaf::prefetch(r, off);
            }
            // This leaf's records in the range, in the order returned: from
            // the cached view of the leaf if an earlier scan left one for this
            // version; otherwise every record's key is read (their cache
            // misses started at once) and sorted. A leaf scanned a second
            // time unchanged gets its view cached; one scanned once does
            // not pay for one.
            let guard = leaf.view();
            // (Its lines were prefetched through the leaf's hint above.)
            let cached = guard.as_deref().filter(|x| x.version == v);
            if cached.is_some() || leaf.scanned_at(v) {
                let built = match cached {
                    Some(_) => None,
                    None => Some(Arc::new(LeafView::build(r, v, &leaf_records(r, leaf.off)))),
                };
                let view = cached.or(built.as_deref()).expect("a view");
                let (a, b) = self.part(r, view);
                if !(leaf.validate(v) && s.index.unchanged_since(generation)) {
                    continue;
                }
                let recs = view.recs(a, b);
                if self.fwd {
                    self.buf.extend_from_slice(recs);
                } else {
                    self.buf.extend(recs.iter().rev());
                }
                if let Some(fresh) = built {
                    leaf.set_view(fresh);
                }
            } else {
                let recs = leaf_records(r, leaf.off);
                let mut got: Vec<(u64, &[u8], u64)> = Vec::with_capacity(recs.len());
                let last = self.last.map(|l| leaf::record_key(r, l));
                for &rec in &recs {
                    let k = leaf::record_key(r, rec);
                    let fresh = match (last, self.fwd) {
                        (None, _) => true,
                        (Some(l), true) => k > l,
                        (Some(l), false) => k < l,
                    };
                    if fresh && above(&self.lo, k) && below(&self.hi, k) {
                        got.push((0, k, rec));
                    }
                }
                if !(leaf.validate(v) && s.index.unchanged_since(generation)) {
                    continue;
                }
                leaf.mark_scanned(v);
                leaf::key_order(&mut got);
                if !self.fwd {
                    got.reverse();
                }
                self.buf.extend(got.iter().map(|g| g.2));
            }
            // Where the scan goes next: copied into the iterator's own
            // buffer (no reference count touched).
            let to = if self.fwd {
                match next {
                    Some(n) if below(&self.hi, n) => Some(n),
                    _ => None,
                }
            } else {
                let sep: &[u8] = &leaf.sep;
                (!sep.is_empty() && above(&self.lo, sep)).then_some(sep)
            };
            match to {
                Some(k) => {
                    let c = self.cursor.get_or_insert_with(Vec::new);
                    c.clear();
                    c.extend_from_slice(k);
                }
                None => self.done = true,
            }
            if let Some(&last) = self.buf.last() {
                if let (Some((_, Some(n))), false) = (ahead, self.done) {
                    n.prefetch_view();
                }
                self.last = Some(last);
                for &rec in self.buf.iter().take(AHEAD) {
                    leaf::prefetch_record(r, rec);
                }
                return;
            }
            if self.done {
                return;
            }
        }
    }
}

/// A leaf's live records, their first two lines' cache misses started.
fn leaf_records(r: &daxkv_alloc::Region, off: u64) -> Vec<u64> {
    let recs: Vec<u64> = leaf::live(leaf::bitmap(r, off)).map(|i| leaf::slot(r, off, i)).collect();
    for &rec in &recs {
        leaf::prefetch_record(r, rec);
    }
    recs
}

impl Iter<'_> {
    /// Positions `a..b` of `view` in this iterator's range: after the last
    /// key returned (or from the range's start) up to the range's end.
    fn part(&self, r: &daxkv_alloc::Region, view: &LeafView) -> (usize, usize) {
        let from = |b: &Bound<Vec<u8>>| match b {
            Bound::Included(k) => view.search(r, k, false),
            Bound::Excluded(k) => view.search(r, k, true),
            Bound::Unbounded => 0,
        };
        let to = |b: &Bound<Vec<u8>>| match b {
            Bound::Included(k) => view.search(r, k, true),
            Bound::Excluded(k) => view.search(r, k, false),
            Bound::Unbounded => view.len(),
        };
        if self.fwd {
            let a = match self.last {
                Some(l) => view.search(r, leaf::record_key(r, l), true),
                None => from(&self.lo),
            };
            (a, to(&self.hi).max(a))
        } else {
            let b = match self.last {
                Some(l) => view.search(r, leaf::record_key(r, l), false),
                None => to(&self.hi),
            };
            (from(&self.lo).min(b), b)
        }
    }

    /// The next pair, borrowed from the pool instead of copied (zero-copy).
    /// The borrow lasts until the next call; the iterator's pin keeps the
    /// record from being reused meanwhile. Interleaves with `next`.
    /// Expired keys are skipped.
    pub fn next_ref(&mut self) -> Option<(&[u8], &[u8])> {
        self.next_with_expiry().map(|(k, v, _)| (k, v))
    }

    /// [`Iter::next_ref`] with the key's expiry (milliseconds since the
    /// Unix epoch, `None`: never).
    pub fn next_with_expiry(&mut self) -> Option<(&[u8], &[u8], Option<u64>)> {
        let r = &*self.store.region;
        loop {
            let rec = self.next_record()?;
            let (k, v, at) = leaf::record_parts(r, rec);
            if crate::store::unexpired(at) {
                return Some((k, v, at));
            }
        }
    }

    /// The next record in the range, expired or not.
    pub(crate) fn next_record(&mut self) -> Option<u64> {
        while self.pos == self.buf.len() && !self.done {
            self.fill();
        }
        // Keep the record AHEAD places on in flight.
        if let Some(&ahead) = self.buf.get(self.pos + AHEAD) {
            leaf::prefetch_record(&self.store.region, ahead);
        }
        let rec = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(rec)
    }
}

impl Iterator for Iter<'_> {
    type Item = Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_ref().map(|(k, v)| Ok((k.to_vec(), v.to_vec())))
    }
}

fn owned<K: AsRef<[u8]>>(b: Bound<&K>) -> Bound<Vec<u8>> {
    match b {
        Bound::Included(k) => Bound::Included(k.as_ref().to_vec()),
        Bound::Excluded(k) => Bound::Excluded(k.as_ref().to_vec()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

impl Store {
    /// Every pair in key order.
    pub fn iter(&self) -> Iter<'_> {
        Iter::new(self, Bound::Unbounded, Bound::Unbounded, true)
    }

    /// Pairs with keys in `r`, in key order.
    pub fn range<K: AsRef<[u8]>>(&self, r: impl std::ops::RangeBounds<K>) -> Iter<'_> {
        Iter::new(self, owned(r.start_bound()), owned(r.end_bound()), true)
    }

    /// Pairs with keys in `r`, in reverse key order.
    pub fn range_rev<K: AsRef<[u8]>>(&self, r: impl std::ops::RangeBounds<K>) -> Iter<'_> {
        Iter::new(self, owned(r.start_bound()), owned(r.end_bound()), false)
    }

    /// Pairs whose key starts with `p`, in key order.
    pub fn prefix(&self, p: &[u8]) -> Iter<'_> {
        let hi = prefix_end(p).map_or(Bound::Unbounded, Bound::Excluded);
        Iter::new(self, Bound::Included(p.to_vec()), hi, true)
    }

    /// Pairs whose key starts with `p`, in reverse key order.
    pub fn prefix_rev(&self, p: &[u8]) -> Iter<'_> {
        let hi = prefix_end(p).map_or(Bound::Unbounded, Bound::Excluded);
        Iter::new(self, Bound::Included(p.to_vec()), hi, false)
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }
}
