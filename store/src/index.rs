//! The volatile index over the persistent leaves: an immutable B-tree of
//! separator keys, replaced by path copying on every split or unlink and
//! published with one atomic pointer swap (`arc-swap`). Readers load the
//! root without locks and traverse a snapshot that no writer changes.
//!
//! Each leaf has a `LeafRef` with a version lock (a seqlock): writers lock
//! a leaf (odd version) while they change it; readers read optimistically
//! and retry if the version moved. A structure change of a leaf (split,
//! unlink) swaps the index while the leaf is locked, so a reader that
//! validates both the leaf version and the index root saw a consistent pair.

use crate::sync::{AtomicBool, AtomicU64, Ordering, fence, spin, yield_now};
use arc_swap::{ArcSwap, Guard};
use std::sync::Arc;

const FANOUT: usize = 64;

/// The volatile handle of one persistent leaf.
#[derive(Debug)]
pub(crate) struct LeafRef {
    /// Region offset of the leaf.
    pub off: u64,
    /// The leaf's separator: the lowest key routed to it (never changes).
    pub sep: Arc<[u8]>,
    version: AtomicU64,
    /// Free slots known to be zero on media with their bitmap bit clear
    /// there too (see `Store::put_locked`). Changed only under the lock.
    safe: AtomicU64,
    dead: AtomicBool,
    /// The leaf's keys in order as the last scan saw them (see `view`).
    #[cfg(not(loom))]
    view: arc_swap::ArcSwapOption<crate::view::LeafView>,
    /// 1 + the version a scan last read the leaf at without caching a view
    /// (0: none): a second scan of the unchanged leaf caches one.
    #[cfg(not(loom))]
    scanned: std::sync::atomic::AtomicU64,
    /// Addresses of the cached view and of the integers its search reads
    /// (with their line count in the top byte), kept beside the lock word
    /// so that a scan starts those misses with the leaf's own instead of
    /// one after the other. Only ever prefetched, never dereferenced: they
    /// may be stale.
    #[cfg(not(loom))]
    view_hint: [std::sync::atomic::AtomicUsize; 2],
}

impl LeafRef {
    pub(crate) fn new(off: u64, sep: Arc<[u8]>) -> Arc<LeafRef> {
        Arc::new(LeafRef {
            off,
            sep,
            version: AtomicU64::new(0),
            safe: AtomicU64::new(0),
            dead: AtomicBool::new(false),
            #[cfg(not(loom))]
            view: arc_swap::ArcSwapOption::empty(),
            #[cfg(not(loom))]
            scanned: std::sync::atomic::AtomicU64::new(0),
            #[cfg(not(loom))]
            view_hint: Default::default(),
        })
    }

    /// Slots that an insert may fill and publish with a single drain:
    /// free, zero on media and clear in the bitmap on media. The caller
    /// holds the lock.
    #[inline]
    pub(crate) fn safe(&self) -> u64 {
        self.safe.load(Ordering::Relaxed)
    }

    /// Replace the set of safe slots (the caller holds the lock, or the
    /// leaf is not reachable yet). Whoever writes a slot other than
    /// through a single-drain insert sets this to what is still true,
    /// usually `0`.
    #[inline]
    pub(crate) fn set_safe(&self, slots: u64) {
        self.safe.store(slots, Ordering::Relaxed);
    }

    /// Whether a scan read the leaf at version `v` (and did not cache it).
    #[cfg(not(loom))]
    #[inline]
    pub(crate) fn scanned_at(&self, v: u64) -> bool {
        self.scanned.load(std::sync::atomic::Ordering::Relaxed) == v + 1
    }

    /// Note that a scan read the leaf at version `v` (validated).
    #[cfg(not(loom))]
    #[inline]
    pub(crate) fn mark_scanned(&self, v: u64) {
        self.scanned.store(v + 1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The cached key-ordered view of the leaf, if any; the caller uses it
    /// only if it describes the version `read_begin` returned. A guard, not
    /// a clone: no reference count is touched.
    #[cfg(not(loom))]
    #[inline]
    pub(crate) fn view(&self) -> arc_swap::Guard<Option<Arc<crate::view::LeafView>>> {
        self.view.load()
    }

    /// Cache `view` (built at a version the caller validated).
    #[cfg(not(loom))]
    pub(crate) fn set_view(&self, view: Arc<crate::view::LeafView>) {
        let (at, bytes) = view.search_bytes();
        let lines = bytes.div_ceil(64).min(255);
        self.view_hint[0].store(Arc::as_ptr(&view) as usize, std::sync::atomic::Ordering::Relaxed);
        self.view_hint[1].store(at | (lines << 56), std::sync::atomic::Ordering::Relaxed);
        self.view.store(Some(view));
    }

    /// Start the cache misses of reading the cached view (see `view_hint`).
    #[cfg(not(loom))]
    #[inline]
    pub(crate) fn prefetch_view(&self) {
        let v = self.view_hint[0].load(std::sync::atomic::Ordering::Relaxed);
        if v != 0 {
            let d = self.view_hint[1].load(std::sync::atomic::Ordering::Relaxed);
            // The view's reference counts (just before it) and its fields.
            daxkv_alloc::Region::prefetch_addr(v.saturating_sub(16), 16 + std::mem::size_of::<crate::view::LeafView>());
            daxkv_alloc::Region::prefetch_addr(d & ((1 << 56) - 1), 64 * (d >> 56));
        }
    }

    /// Start the cache miss of the version word (see `Store::prefetch`).
    #[cfg(not(loom))]
    #[inline]
    pub(crate) fn prefetch(&self) {
        daxkv_alloc::Region::prefetch_ref(&self.version);
    }

    /// Begin an optimistic read: the version, once no writer holds it.
    #[inline]
    pub(crate) fn read_begin(&self) -> u64 {
        loop {
            if let Some(v) = self.try_read_begin() {
                return v;
            }
            spin();
        }
    }

    /// The version if no writer holds the leaf now.
    #[inline]
    pub(crate) fn try_read_begin(&self) -> Option<u64> {
        let v = self.version.load(Ordering::Acquire);
        (v & 1 == 0).then_some(v)
    }

    /// Whether nothing changed the leaf since `read_begin` returned `v`.
    #[inline]
    pub(crate) fn validate(&self, v: u64) -> bool {
        fence(Ordering::Acquire);
        self.version.load(Ordering::Relaxed) == v && !self.dead.load(Ordering::Relaxed)
    }

    /// Take the leaf's write lock.
    #[inline]
    pub(crate) fn lock(&self) {
        let mut spins = 0u32;
        loop {
            let v = self.version.load(Ordering::Relaxed);
            if v & 1 == 0 && self.version.compare_exchange(v, v + 1, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                return;
            }
            spins += 1;
            if spins > 64 {
                yield_now();
            } else {
                spin();
            }
        }
    }

    /// Take the lock if the version is still `v` (nobody locked the leaf
    /// since `read_begin` returned `v`).
    #[inline]
    pub(crate) fn lock_if_unchanged(&self, v: u64) -> bool {
        let ok = self.version.compare_exchange(v, v + 1, Ordering::Acquire, Ordering::Relaxed).is_ok();
        if ok {
            // Order the odd version before the writer's data stores.
            fence(Ordering::Release);
        }
        ok
    }

    /// Take the lock if it is free.
    pub(crate) fn try_lock(&self) -> bool {
        let v = self.version.load(Ordering::Relaxed);
        v & 1 == 0 && self.lock_if_unchanged(v)
    }

    /// Release the write lock (readers that overlapped it will retry).
    #[inline]
    pub(crate) fn unlock(&self) {
        // A load and a plain store, not a fetch-add: while the version is
        // odd only the holder writes it (everyone else's compare-exchange
        // expects an even value and fails), and on x86 a locked
        // read-modify-write would wait for every cache-line write-back in
        // flight, which a put's just-drained flushes may still be.
        let v = self.version.load(Ordering::Relaxed);
        debug_assert!(v & 1 == 1, "unlock of a leaf not locked");
        self.version.store(v.wrapping_add(1), Ordering::Release);
    }

    /// Mark the leaf gone from the tree (after an unlink).
    pub(crate) fn kill(&self) {
        self.dead.store(true, Ordering::Release);
    }

    pub(crate) fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }
}

/// A separator key and its leaf.
pub(crate) type Entry = (Arc<[u8]>, Arc<LeafRef>);

/// A node's separator keys, stored contiguously for cache-friendly search:
/// the bytes of all keys, their end offsets, the longest common prefix of
/// keys 1.. (key 0 is the node's lower bound, often empty), and for each key
/// the 8 bytes after that prefix as a big-endian integer, so most
/// comparisons are one integer compare.
#[derive(Debug, Clone, PartialEq)]
struct Seps {
    buf: Box<[u8]>,
    ends: Box<[u32]>,
    pfx: Box<[u64]>,
    lcp: usize,
}

/// The 8 bytes of `k` from `from` on, big-endian, zero-padded: for keys
/// that share their first `from` bytes, comparing these orders them as
/// comparing the keys does, except that ties need the rest. (Also used to
/// sort a leaf's keys, see `leaf::common_prefix`.)
#[inline(never)]
pub(crate) fn key_prefix_at(k: &[u8], from: usize) -> u64 {
    // One 8-byte load, no copy through a stack buffer: the index walk calls
    // this on every level, and a put's next walk runs while its drain is
    // still in flight, when every store waits in the store buffer. Not
    // inlined: inlined into the scan and view-search loops, the same code
    // (or a byte loop for the tail) made scans 8-10 % slower in A/B runs.
    let rest = k.len().saturating_sub(from);
    if rest >= 8 {
        u64::from_be_bytes(k[from..from + 8].try_into().expect("8 bytes"))
    } else if rest == 0 {
        0
    } else if k.len() >= 8 {
        // The key's last 8 bytes, shifted so that byte `from` leads.
        u64::from_be_bytes(k[k.len() - 8..].try_into().expect("8 bytes")) << (8 * (8 - rest))
    } else {
        let mut b = [0u8; 8];
        b[..rest].copy_from_slice(&k[from..]);
        u64::from_be_bytes(b)
    }
}

impl Seps {
    fn new<K: AsRef<[u8]>>(keys: &[K]) -> Seps {
        let mut buf = Vec::with_capacity(keys.iter().map(|k| k.as_ref().len()).sum());
        let mut ends = Vec::with_capacity(keys.len());
        for k in keys {
            buf.extend_from_slice(k.as_ref());
            ends.push(buf.len() as u32);
        }
        // Keys are sorted, so what keys 1.. share is what the second and
        // the last share: one comparison instead of one per key.
        debug_assert!(keys.windows(2).all(|w| w[0].as_ref() <= w[1].as_ref()));
        let lcp = match (keys.get(1), keys.last()) {
            (Some(first), Some(last)) => {
                let (first, last) = (first.as_ref(), last.as_ref());
                first.iter().zip(last).take_while(|(a, b)| a == b).count()
            }
            _ => 0,
        };
        let pfx = keys.iter().map(|k| key_prefix_at(k.as_ref(), lcp)).collect();
        Seps { buf: buf.into(), ends: ends.into(), pfx, lcp }
    }

    /// These separators with `key` inserted at `i` (the result must stay
    /// sorted), built from the old arrays: the prefixes are recomputed only
    /// when the new key changes what keys 1.. share, which it can only do
    /// as the new second or last key.
    fn inserted(&self, i: usize, key: &[u8]) -> Seps {
        let n = self.len();
        debug_assert!(i <= n);
        if !(2..n).contains(&i) {
            let mut keys = self.all();
            keys.insert(i, key);
            return Seps::new(&keys);
        }
        // Keys 1 and last are unchanged, and so is their common prefix.
        let at = self.ends[i - 1] as usize;
        let mut buf = Vec::with_capacity(self.buf.len() + key.len());
        buf.extend_from_slice(&self.buf[..at]);
        buf.extend_from_slice(key);
        buf.extend_from_slice(&self.buf[at..]);
        let grow = key.len() as u32;
        let mut ends = Vec::with_capacity(n + 1);
        ends.extend_from_slice(&self.ends[..i]);
        ends.push(at as u32 + grow);
        ends.extend(self.ends[i..].iter().map(|e| e + grow));
        let mut pfx = Vec::with_capacity(n + 1);
        pfx.extend_from_slice(&self.pfx[..i]);
        pfx.push(key_prefix_at(key, self.lcp));
        pfx.extend_from_slice(&self.pfx[i..]);
        let out = Seps { buf: buf.into(), ends: ends.into(), pfx: pfx.into(), lcp: self.lcp };
        debug_assert_eq!(out, Seps::new(&out.all()), "incremental separators match a rebuild");
        out
    }

    #[inline]
    fn len(&self) -> usize {
        self.ends.len()
    }

    #[inline]
    fn get(&self, i: usize) -> &[u8] {
        let s = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.buf[s..self.ends[i] as usize]
    }

    fn all(&self) -> Vec<&[u8]> {
        // Room for the one key a path copy may add, so it never regrows.
        let mut v = Vec::with_capacity(self.len() + 1);
        v.extend((0..self.len()).map(|i| self.get(i)));
        v
    }

    /// Greatest `i` with `key(i) <= q`, given `key(0) <= q`: the number of
    /// keys among 1.. that are `<= q`.
    #[inline]
    fn pos_le(&self, q: &[u8]) -> usize {
        let n = self.len();
        if n <= 1 {
            return 0;
        }
        let lcp = &self.get(1)[..self.lcp];
        let m = q.len().min(lcp.len());
        match q[..m].cmp(&lcp[..m]) {
            std::cmp::Ordering::Less => return 0,
            std::cmp::Ordering::Greater => return n - 1,
            std::cmp::Ordering::Equal if q.len() < lcp.len() => return 0,
            std::cmp::Ordering::Equal => {}
        }
        let qp = key_prefix_at(q, self.lcp);
        let tail = &q[self.lcp..];
        // A key whose 8-byte prefix is below the query's is below the query
        // (zero padding keeps that true for short keys); count those at
        // once, then settle the few with an equal prefix one by one.
        let mut i = 1 + daxkv_alloc::count_less(&self.pfx[1..n], qp);
        while i < n && self.pfx[i] == qp && self.get(i)[self.lcp..] <= *tail {
            i += 1;
        }
        i - 1
    }

    /// Number of keys `<= k`.
    fn count_le(&self, k: &[u8]) -> usize {
        self.partition(|key| key <= k)
    }

    /// Number of keys `< k`.
    fn count_lt(&self, k: &[u8]) -> usize {
        self.partition(|key| key < k)
    }

    /// First index whose key fails `pred` (keys are sorted, `pred` true on
    /// a prefix).
    fn partition(&self, pred: impl Fn(&[u8]) -> bool) -> usize {
        let (mut lo, mut hi) = (0usize, self.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            if pred(self.get(mid)) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }
}

#[derive(Debug)]
enum Kids {
    Inner(Vec<Arc<Node>>),
    Leaves(Vec<Arc<LeafRef>>),
}

/// The leaf after a routed one, as the node over it describes it.
pub(crate) struct Next<'a> {
    pub leaf: &'a Arc<LeafRef>,
    /// Its separator (the same bytes as `leaf.sep`).
    pub sep: &'a [u8],
    /// Its region offset (`leaf.off`).
    pub off: u64,
}

/// An immutable index node: separator `i` is the lowest key under child
/// `i`; the leftmost node on every level starts with the empty key.
#[derive(Debug)]
pub(crate) struct Node {
    seps: Seps,
    kids: Kids,
    /// For a node over leaves, each leaf's region offset, copied out of its
    /// `LeafRef` so that a lookup can start the leaf's cache misses before
    /// (and while) it loads the `LeafRef`'s version.
    offs: Box<[u64]>,
}

impl Node {
    fn new(seps: Seps, kids: Kids) -> Node {
        let offs = match &kids {
            Kids::Leaves(l) => l.iter().map(|l| l.off).collect(),
            Kids::Inner(_) => Box::default(),
        };
        Node { seps, kids, offs }
    }

    /// A node over leaves from the parts of a path copy (`offs` must be
    /// the leaves' offsets, as `new` would read them).
    fn with_parts(seps: Seps, leaves: Vec<Arc<LeafRef>>, offs: Box<[u64]>) -> Node {
        debug_assert!(leaves.iter().map(|l| l.off).eq(offs.iter().copied()));
        Node { seps, kids: Kids::Leaves(leaves), offs }
    }

    /// The leaf whose range holds `key`, with its region offset read from
    /// the index node (no dependent load of the `LeafRef`).
    #[inline]
    pub(crate) fn route_off(&self, key: &[u8]) -> (u64, &Arc<LeafRef>) {
        let mut n = self;
        loop {
            let i = n.seps.pos_le(key);
            match &n.kids {
                Kids::Inner(c) => n = &c[i],
                Kids::Leaves(l) => return (n.offs[i], &l[i]),
            }
        }
    }

    /// The leaf whose range holds `key`, and the leaf after it (the one
    /// with the smallest separator greater than its own), in one walk: the
    /// nearest subtree right of the path supplies the next leaf when the
    /// leaf is the last of its node. The next leaf's separator and offset
    /// come from the node over it, so a scan learns where it goes next
    /// without touching that leaf's `LeafRef`.
    #[inline]
    pub(crate) fn route_and_next(&self, key: &[u8]) -> (&Arc<LeafRef>, Option<Next<'_>>) {
        let mut n = self;
        let mut right: Option<&Node> = None;
        loop {
            let i = n.seps.pos_le(key);
            match &n.kids {
                Kids::Inner(c) => {
                    if let Some(r) = c.get(i + 1) {
                        right = Some(r);
                    }
                    n = &c[i];
                }
                Kids::Leaves(l) => {
                    let next = match l.get(i + 1) {
                        Some(x) => Some(Next { leaf: x, sep: n.seps.get(i + 1), off: n.offs[i + 1] }),
                        None => right.map(|r| {
                            let m = r.leftmost_node();
                            Next { leaf: &m.leaves()[0], sep: m.seps.get(0), off: m.offs[0] }
                        }),
                    };
                    debug_assert!(next.as_ref().is_none_or(|x| *x.sep == *x.leaf.sep && x.off == x.leaf.off));
                    return (&l[i], next);
                }
            }
        }
    }

    /// The leaf whose range holds `key`.
    #[inline]
    pub(crate) fn route(&self, key: &[u8]) -> &Arc<LeafRef> {
        self.route_off(key).1
    }

    /// The leaf with the greatest separator smaller than `sep`.
    pub(crate) fn before(&self, sep: &[u8]) -> Option<&Arc<LeafRef>> {
        let i = self.seps.count_lt(sep);
        if i == 0 {
            return None;
        }
        match &self.kids {
            Kids::Leaves(l) => Some(&l[i - 1]),
            Kids::Inner(c) => c[i - 1].before(sep),
        }
    }

    /// The leftmost node over leaves under this one.
    fn leftmost_node(&self) -> &Node {
        match &self.kids {
            Kids::Inner(c) => c[0].leftmost_node(),
            Kids::Leaves(_) => self,
        }
    }

    fn leaves(&self) -> &[Arc<LeafRef>] {
        match &self.kids {
            Kids::Leaves(l) => l,
            Kids::Inner(_) => &[],
        }
    }

    /// The leaf with the greatest separator.
    pub(crate) fn rightmost(&self) -> &Arc<LeafRef> {
        match &self.kids {
            Kids::Inner(c) => c[c.len() - 1].rightmost(),
            Kids::Leaves(l) => &l[l.len() - 1],
        }
    }

    pub(crate) fn collect(&self, out: &mut Vec<Entry>) {
        match &self.kids {
            Kids::Inner(c) => c.iter().for_each(|n| n.collect(out)),
            Kids::Leaves(l) => out.extend(l.iter().map(|l| (l.sep.clone(), l.clone()))),
        }
    }

    fn count(&self) -> usize {
        match &self.kids {
            Kids::Inner(c) => c.iter().map(|n| n.count()).sum(),
            Kids::Leaves(l) => l.len(),
        }
    }

    fn first_key(&self) -> &[u8] {
        self.seps.get(0)
    }

    /// Path copy with `leaf` added; returns the new node and, if it
    /// overflowed, a right sibling.
    fn with(&self, leaf: &Arc<LeafRef>) -> (Node, Option<Node>) {
        // Most copies do not overflow: they copy the arrays with one entry
        // spliced in (or, for a node whose child did not split, as they
        // are), without re-reading any separator, child or leaf.
        let sep: &[u8] = &leaf.sep;
        let room = self.seps.len() < FANOUT;
        match &self.kids {
            Kids::Leaves(l) => {
                let i = self.seps.count_le(sep);
                let leaves = with_at(l, i, leaf.clone());
                if room {
                    let seps = self.seps.inserted(i, sep);
                    return (Node::with_parts(seps, leaves, with_at(&self.offs, i, leaf.off).into()), None);
                }
                let mut keys = self.seps.all();
                keys.insert(i, sep);
                Self::assemble(&keys, Kids::Leaves(leaves))
            }
            Kids::Inner(c) => {
                let i = self.seps.count_le(sep).saturating_sub(1);
                let (n, extra) = c[i].with(leaf);
                let Some(e) = extra.map(Arc::new) else {
                    let mut c = c.clone();
                    c[i] = Arc::new(n);
                    return (Node::new(self.seps.clone(), Kids::Inner(c)), None);
                };
                let mut c = with_at(c, i + 1, e.clone());
                c[i] = Arc::new(n);
                if room {
                    return (Node::new(self.seps.inserted(i + 1, e.first_key()), Kids::Inner(c)), None);
                }
                let mut keys = self.seps.all();
                keys.insert(i + 1, e.first_key());
                Self::assemble(&keys, Kids::Inner(c))
            }
        }
    }

    /// A node from keys and children, split in two if over the fanout.
    fn assemble(keys: &[&[u8]], kids: Kids) -> (Node, Option<Node>) {
        if keys.len() <= FANOUT {
            return (Node::new(Seps::new(keys), kids), None);
        }
        let mid = keys.len() / 2;
        let (l, r) = match kids {
            Kids::Leaves(mut l) => {
                let r = l.split_off(mid);
                (Kids::Leaves(l), Kids::Leaves(r))
            }
            Kids::Inner(mut c) => {
                let r = c.split_off(mid);
                (Kids::Inner(c), Kids::Inner(r))
            }
        };
        (Node::new(Seps::new(&keys[..mid]), l), Some(Node::new(Seps::new(&keys[mid..]), r)))
    }

    /// Path copy without separator `sep` (which must not be the first).
    /// `None` if the node became empty.
    fn without(&self, sep: &[u8]) -> Option<Node> {
        let mut keys: Vec<&[u8]> = self.seps.all();
        // A child whose first separator went away starts with a new one.
        let first: Vec<u8>;
        let kids = match &self.kids {
            Kids::Leaves(l) => {
                let i = keys.iter().position(|&k| k == sep)?;
                let mut l = l.clone();
                keys.remove(i);
                l.remove(i);
                Kids::Leaves(l)
            }
            Kids::Inner(c) => {
                let i = self.seps.count_le(sep).saturating_sub(1);
                let mut c = c.clone();
                match c[i].without(sep) {
                    Some(n) => {
                        first = n.first_key().to_vec();
                        keys[i] = &first;
                        c[i] = Arc::new(n);
                    }
                    None => {
                        keys.remove(i);
                        c.remove(i);
                    }
                }
                Kids::Inner(c)
            }
        };
        (!keys.is_empty()).then(|| Node::new(Seps::new(&keys), kids))
    }
}

/// A copy of `v` with `x` inserted at `i`, allocated once at its final size.
fn with_at<T: Clone>(v: &[T], i: usize, x: T) -> Vec<T> {
    let mut out = Vec::with_capacity(v.len() + 1);
    out.extend_from_slice(&v[..i]);
    out.push(x);
    out.extend_from_slice(&v[i..]);
    out
}

/// The index: a root published with one atomic swap.
pub(crate) struct Index {
    root: ArcSwap<Node>,
    /// Bumped after every root swap: a reader that reads it before loading
    /// the root and finds it unchanged at the end saw the current tree,
    /// without a second `ArcSwap` load.
    generation: AtomicU64,
    smo: parking_lot::Mutex<()>,
}

impl Index {
    /// Build from the leaves in key order; the first separator must be empty.
    pub(crate) fn build(leaves: Vec<Arc<LeafRef>>) -> Index {
        assert!(!leaves.is_empty() && leaves[0].sep.is_empty());
        let mut level: Vec<Node> = leaves
            .chunks(FANOUT)
            .map(|c| Node::new(Seps::new(&c.iter().map(|l| &*l.sep).collect::<Vec<_>>()), Kids::Leaves(c.to_vec())))
            .collect();
        while level.len() > 1 {
            let mut up = Vec::new();
            let mut it = level.into_iter().peekable();
            while it.peek().is_some() {
                let group: Vec<Node> = it.by_ref().take(FANOUT).collect();
                let keys: Vec<Vec<u8>> = group.iter().map(|n| n.first_key().to_vec()).collect();
                up.push(Node::new(Seps::new(&keys), Kids::Inner(group.into_iter().map(Arc::new).collect())));
            }
            level = up;
        }
        let root = level.pop().expect("one node");
        Index { root: ArcSwap::from_pointee(root), generation: AtomicU64::new(0), smo: parking_lot::Mutex::new(()) }
    }

    /// The current tree, as an `Arc` of its own (for keeping across calls).
    pub(crate) fn load_full(&self) -> Arc<Node> {
        self.root.load_full()
    }

    /// A snapshot of the tree.
    #[inline]
    pub(crate) fn load(&self) -> Guard<Arc<Node>> {
        self.root.load()
    }

    /// The tree's generation; read it before [`Index::load`], and a tree
    /// loaded after it is still current while [`Index::unchanged_since`]
    /// holds. (If the generation read saw a swap's bump, the swap happened
    /// before the load; if a later swap exists, its bump is seen at the end.)
    #[inline]
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Whether no root swap happened since `generation` returned `g`.
    #[inline]
    pub(crate) fn unchanged_since(&self, g: u64) -> bool {
        fence(Ordering::Acquire);
        self.generation.load(Ordering::Relaxed) == g
    }

    /// Whether `snap` is still the current tree.
    #[inline]
    pub(crate) fn is_current(&self, snap: &Arc<Node>) -> bool {
        std::ptr::eq(Arc::as_ptr(snap), Arc::as_ptr(&self.root.load()))
    }

    /// Add a leaf (after a split). The caller holds the split leaf's lock.
    pub(crate) fn insert(&self, leaf: Arc<LeafRef>) {
        let _g = self.smo.lock();
        let cur = self.root.load_full();
        let (n, extra) = cur.with(&leaf);
        let root = match extra {
            None => n,
            Some(e) => Node::new(
                Seps::new(&[n.first_key().to_vec(), e.first_key().to_vec()]),
                Kids::Inner(vec![Arc::new(n), Arc::new(e)]),
            ),
        };
        self.root.store(Arc::new(root));
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Remove a leaf's separator (after an unlink).
    pub(crate) fn remove(&self, sep: &[u8]) {
        let _g = self.smo.lock();
        let cur = self.root.load_full();
        let mut n = cur.without(sep).expect("the first leaf is never removed");
        while let Kids::Inner(c) = &n.kids {
            if c.len() != 1 {
                break;
            }
            let only = c[0].clone();
            n = Node::new(
                Seps::new(&only.seps.all()),
                match &only.kids {
                    Kids::Inner(c) => Kids::Inner(c.clone()),
                    Kids::Leaves(l) => Kids::Leaves(l.clone()),
                },
            );
        }
        self.root.store(Arc::new(n));
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Make `head` the only leaf (after the store was cleared). The caller
    /// holds every leaf's lock.
    pub(crate) fn reset(&self, head: Arc<LeafRef>) {
        let _g = self.smo.lock();
        let root = Index::build(vec![head]).root.into_inner();
        self.root.store(root);
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Every (separator, leaf) in order.
    pub(crate) fn entries(&self) -> Vec<Entry> {
        let mut v = Vec::new();
        self.root.load().collect(&mut v);
        v
    }

    /// Number of leaves.
    pub(crate) fn leaves(&self) -> usize {
        self.root.load().count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(s: &str) -> Arc<[u8]> {
        Arc::from(s.as_bytes())
    }

    /// Every way `key_prefix_at` reads (8 bytes in place, the key's last 8
    /// shifted, a short key, nothing) agrees with copying the bytes into a
    /// zeroed buffer.
    #[test]
    fn key_prefix_is_the_next_8_bytes_zero_padded() {
        let key: Vec<u8> = (1..=24u8).map(|b| b.wrapping_mul(37)).collect();
        for len in 0..=key.len() {
            let k = &key[..len];
            for from in 0..len + 3 {
                let mut b = [0u8; 8];
                for (i, x) in k.iter().skip(from).take(8).enumerate() {
                    b[i] = *x;
                }
                assert_eq!(key_prefix_at(k, from), u64::from_be_bytes(b), "len {len} from {from}");
            }
        }
    }

    #[test]
    fn route_insert_remove_neighbours() {
        let idx = Index::build(vec![LeafRef::new(0, k(""))]);
        let mut model = std::collections::BTreeMap::new();
        model.insert(String::new(), 0u64);
        // Enough leaves for three levels: nodes over leaves and inner nodes
        // both fill up and split (path copies with and without room).
        for i in 1..6000u64 {
            let s = format!("{:06}", (i * 7919) % 100_000);
            idx.insert(LeafRef::new(i, k(&s)));
            model.insert(s, i);
        }
        let snap = idx.load();
        fn depth(n: &Node) -> usize {
            match &n.kids {
                Kids::Inner(c) => 1 + depth(&c[0]),
                Kids::Leaves(_) => 1,
            }
        }
        assert_eq!(depth(&snap), 3);
        for probe in ["", "0", "000500", "050000", "099999", "z"] {
            let want = model.range(..=probe.to_string()).next_back().unwrap();
            let leaf = snap.route(probe.as_bytes());
            assert_eq!((&*leaf.sep, leaf.off), (want.0.as_bytes(), *want.1), "{probe}");
        }
        for (s, _) in model.iter().take(50) {
            let want =
                model.range::<String, _>((std::ops::Bound::Excluded(s.clone()), std::ops::Bound::Unbounded)).next();
            let got = snap.route_and_next(s.as_bytes()).1.map(|l| (l.sep.to_vec(), l.off));
            assert_eq!(got, snap.route_and_next(s.as_bytes()).1.map(|l| (l.leaf.sep.to_vec(), l.leaf.off)));
            assert_eq!(got, want.map(|(k, v)| (k.as_bytes().to_vec(), *v)));
            let want = model.range(..s.clone()).next_back();
            let got = snap.before(s.as_bytes()).map(|l| (l.sep.to_vec(), l.off));
            assert_eq!(got, want.map(|(k, v)| (k.as_bytes().to_vec(), *v)));
        }
        // One walk gives the leaf and its successor, also where the leaf is
        // the last of its node (every key is probed, and one just above it);
        // the node over the successor gives its separator and offset.
        fn neighbours(idx: &Index, model: &std::collections::BTreeMap<String, u64>) {
            let snap = idx.load();
            for s in model.keys() {
                for probe in [s.clone(), format!("{s}5")] {
                    let (leaf, next) = snap.route_and_next(probe.as_bytes());
                    let want = model.range(..=probe.clone()).next_back().unwrap();
                    assert_eq!((&*leaf.sep, leaf.off), (want.0.as_bytes(), *want.1), "{probe}");
                    let want_next = model
                        .range::<String, _>((std::ops::Bound::Excluded(want.0.clone()), std::ops::Bound::Unbounded))
                        .next();
                    let got = next.map(|l| {
                        assert_eq!((l.sep, l.off), (&*l.leaf.sep, l.leaf.off), "after {probe}");
                        (l.sep.to_vec(), l.off)
                    });
                    assert_eq!(got, want_next.map(|(k, v)| (k.as_bytes().to_vec(), *v)), "after {probe}");
                }
            }
        }
        neighbours(&idx, &model);
        drop(snap);
        // Removals that take the first leaves of nodes too: every other
        // key, then a run longer than a node.
        let all: Vec<String> = model.keys().cloned().collect();
        for s in all.iter().skip(1).step_by(2).chain(all.iter().skip(301).take(2 * FANOUT)) {
            if model.remove(s).is_some() {
                idx.remove(s.as_bytes());
            }
        }
        neighbours(&idx, &model);
        let got: Vec<(Vec<u8>, u64)> = idx.entries().into_iter().map(|(k, l)| (k.to_vec(), l.off)).collect();
        let want: Vec<(Vec<u8>, u64)> = model.iter().map(|(k, v)| (k.as_bytes().to_vec(), *v)).collect();
        assert_eq!(got, want);
        let rebuilt = Index::build(idx.entries().into_iter().map(|e| e.1).collect());
        assert_eq!(rebuilt.leaves(), model.len());
        assert_eq!(rebuilt.load().rightmost().off, *model.values().last().unwrap());
    }

    #[test]
    fn prefix_compression_routes_like_a_btreemap() {
        // Keys sharing long prefixes, differing late, with zero bytes and
        // proper prefixes of one another.
        let mut state = 7u64;
        let mut rnd = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut model = std::collections::BTreeMap::new();
        model.insert(Vec::new(), 0u64);
        let idx = Index::build(vec![LeafRef::new(0, Arc::from(&b""[..]))]);
        let mk = |r: u64| -> Vec<u8> {
            let mut k = b"common/prefix/".to_vec();
            let tail = (r % 5) as usize + (r >> 60) as usize;
            for i in 0..tail {
                k.push((r.rotate_right((i * 5) as u32 % 64) % 3) as u8); // bytes 0, 1, 2
            }
            k
        };
        for i in 1..3000u64 {
            let k = mk(rnd());
            if model.contains_key(&k) {
                continue;
            }
            model.insert(k.clone(), i);
            idx.insert(LeafRef::new(i, Arc::from(k.as_slice())));
        }
        let snap = idx.load();
        for _ in 0..20_000 {
            let q = mk(rnd());
            let want = model.range(..=q.clone()).next_back().unwrap();
            assert_eq!(snap.route(&q).off, *want.1, "query {q:?}");
        }
        for q in [&b""[..], b"a", b"common/prefix", b"common/prefix/", b"zzz"] {
            let want = model.range(..=q.to_vec()).next_back().unwrap();
            assert_eq!(snap.route(q).off, *want.1, "query {q:?}");
        }
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::atomic::AtomicU64 as Data;

    /// A writer changes two words of a leaf under its version lock; a
    /// reader that validates its optimistic read never accepts a torn pair,
    /// and a second writer is excluded. Leaf words are stored with release
    /// and loaded with acquire ordering, as `Region::store_u64` and
    /// `Region::load_u64` do.
    #[test]
    fn loom_leaf_version_lock() {
        loom::model(|| {
            let leaf = LeafRef::new(0, Arc::from(&b""[..]));
            let a = Arc::new(Data::new(0));
            let b = Arc::new(Data::new(0));
            // Writers take the lock without waiting (a waiting spin would
            // only make the model larger); at most one can hold it.
            let held = Arc::new(loom::sync::atomic::AtomicUsize::new(0));
            let writers: Vec<_> = (1..=2u64)
                .map(|w| {
                    let (leaf, a, b, held) = (leaf.clone(), a.clone(), b.clone(), held.clone());
                    loom::thread::spawn(move || {
                        if leaf.try_lock() {
                            assert_eq!(held.fetch_add(1, Ordering::SeqCst), 0, "two writers hold the lock");
                            a.store(w, Ordering::Release);
                            b.store(w, Ordering::Release);
                            held.fetch_sub(1, Ordering::SeqCst);
                            leaf.unlock();
                        }
                    })
                })
                .collect();
            if let Some(v) = leaf.try_read_begin() {
                let (x, y) = (a.load(Ordering::Acquire), b.load(Ordering::Acquire));
                if leaf.validate(v) {
                    assert_eq!(x, y, "validated a torn read");
                }
            }
            for w in writers {
                w.join().unwrap();
            }
            assert_eq!(a.load(Ordering::Relaxed), b.load(Ordering::Relaxed));
        });
    }
}
