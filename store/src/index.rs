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

use arc_swap::{ArcSwap, Guard};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};

const FANOUT: usize = 64;

/// The volatile handle of one persistent leaf.
#[derive(Debug)]
pub(crate) struct LeafRef {
    /// Region offset of the leaf.
    pub off: u64,
    /// The leaf's separator: the lowest key routed to it (never changes).
    pub sep: Arc<[u8]>,
    version: AtomicU64,
    dead: AtomicBool,
}

impl LeafRef {
    pub(crate) fn new(off: u64, sep: Arc<[u8]>) -> Arc<LeafRef> {
        Arc::new(LeafRef { off, sep, version: AtomicU64::new(0), dead: AtomicBool::new(false) })
    }

    /// Begin an optimistic read: the version, once no writer holds it.
    #[inline]
    pub(crate) fn read_begin(&self) -> u64 {
        loop {
            let v = self.version.load(Ordering::Acquire);
            if v & 1 == 0 {
                return v;
            }
            std::hint::spin_loop();
        }
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
            if v & 1 == 0 && self.version.compare_exchange_weak(v, v + 1, Ordering::Acquire, Ordering::Relaxed).is_ok()
            {
                return;
            }
            spins += 1;
            if spins > 64 {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }

    /// Take the lock if it is free.
    pub(crate) fn try_lock(&self) -> bool {
        let v = self.version.load(Ordering::Relaxed);
        v & 1 == 0 && self.version.compare_exchange(v, v + 1, Ordering::Acquire, Ordering::Relaxed).is_ok()
    }

    /// Release the write lock (readers that overlapped it will retry).
    #[inline]
    pub(crate) fn unlock(&self) {
        self.version.fetch_add(1, Ordering::Release);
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

#[derive(Debug)]
enum Kids {
    Inner(Vec<Arc<Node>>),
    Leaves(Vec<Arc<LeafRef>>),
}

/// An immutable index node: `keys[i]` is the lowest separator under child
/// `i`; the leftmost node on every level starts with the empty key.
#[derive(Debug)]
pub(crate) struct Node {
    keys: Vec<Arc<[u8]>>,
    kids: Kids,
}

/// Greatest `i` with `keys[i] <= key` (0 if none).
fn pos_le(keys: &[Arc<[u8]>], key: &[u8]) -> usize {
    keys.partition_point(|k| &**k <= key).saturating_sub(1)
}

impl Node {
    fn len(&self) -> usize {
        self.keys.len()
    }

    /// The leaf whose range holds `key`, with its separator.
    pub(crate) fn route(&self, key: &[u8]) -> (&Arc<[u8]>, &Arc<LeafRef>) {
        let i = pos_le(&self.keys, key);
        match &self.kids {
            Kids::Inner(c) => c[i].route(key),
            Kids::Leaves(l) => (&self.keys[i], &l[i]),
        }
    }

    /// The leaf with the smallest separator greater than `sep`.
    pub(crate) fn after(&self, sep: &[u8]) -> Option<(&Arc<[u8]>, &Arc<LeafRef>)> {
        match &self.kids {
            Kids::Leaves(l) => {
                let i = self.keys.partition_point(|k| &**k <= sep);
                (i < l.len()).then(|| (&self.keys[i], &l[i]))
            }
            Kids::Inner(c) => {
                let i = pos_le(&self.keys, sep);
                c[i].after(sep).or_else(|| c.get(i + 1).map(|n| n.leftmost()))
            }
        }
    }

    /// The leaf with the greatest separator smaller than `sep`.
    pub(crate) fn before(&self, sep: &[u8]) -> Option<(&Arc<[u8]>, &Arc<LeafRef>)> {
        let i = self.keys.partition_point(|k| &**k < sep);
        if i == 0 {
            return None;
        }
        match &self.kids {
            Kids::Leaves(l) => Some((&self.keys[i - 1], &l[i - 1])),
            Kids::Inner(c) => c[i - 1].before(sep),
        }
    }

    fn leftmost(&self) -> (&Arc<[u8]>, &Arc<LeafRef>) {
        match &self.kids {
            Kids::Inner(c) => c[0].leftmost(),
            Kids::Leaves(l) => (&self.keys[0], &l[0]),
        }
    }

    /// The leaf with the greatest separator.
    pub(crate) fn rightmost(&self) -> (&Arc<[u8]>, &Arc<LeafRef>) {
        match &self.kids {
            Kids::Inner(c) => c[c.len() - 1].rightmost(),
            Kids::Leaves(l) => (&self.keys[l.len() - 1], &l[l.len() - 1]),
        }
    }

    fn collect(&self, out: &mut Vec<Entry>) {
        match &self.kids {
            Kids::Inner(c) => c.iter().for_each(|n| n.collect(out)),
            Kids::Leaves(l) => out.extend(self.keys.iter().cloned().zip(l.iter().cloned())),
        }
    }

    fn count(&self) -> usize {
        match &self.kids {
            Kids::Inner(c) => c.iter().map(|n| n.count()).sum(),
            Kids::Leaves(l) => l.len(),
        }
    }

    /// Path copy with `(sep, leaf)` added; returns the new node and, if it
    /// overflowed, a right sibling.
    fn with(&self, sep: &Arc<[u8]>, leaf: &Arc<LeafRef>) -> (Node, Option<Node>) {
        let mut keys = self.keys.clone();
        let kids = match &self.kids {
            Kids::Leaves(l) => {
                let i = keys.partition_point(|k| **k <= **sep);
                let mut l = l.clone();
                keys.insert(i, sep.clone());
                l.insert(i, leaf.clone());
                Kids::Leaves(l)
            }
            Kids::Inner(c) => {
                let i = pos_le(&keys, sep);
                let (n, extra) = c[i].with(sep, leaf);
                let mut c = c.clone();
                c[i] = Arc::new(n);
                if let Some(e) = extra {
                    keys.insert(i + 1, e.keys[0].clone());
                    c.insert(i + 1, Arc::new(e));
                }
                Kids::Inner(c)
            }
        };
        let node = Node { keys, kids };
        if node.len() <= FANOUT { (node, None) } else { node.split() }
    }

    fn split(self) -> (Node, Option<Node>) {
        let mid = self.keys.len() / 2;
        let mut keys = self.keys;
        let rkeys = keys.split_off(mid);
        let (l, r) = match self.kids {
            Kids::Leaves(mut l) => {
                let r = l.split_off(mid);
                (Kids::Leaves(l), Kids::Leaves(r))
            }
            Kids::Inner(mut c) => {
                let r = c.split_off(mid);
                (Kids::Inner(c), Kids::Inner(r))
            }
        };
        (Node { keys, kids: l }, Some(Node { keys: rkeys, kids: r }))
    }

    /// Path copy without separator `sep` (which must not be the first).
    /// `None` if the node became empty.
    fn without(&self, sep: &[u8]) -> Option<Node> {
        let mut keys = self.keys.clone();
        let kids = match &self.kids {
            Kids::Leaves(l) => {
                let i = keys.iter().position(|k| &**k == sep)?;
                let mut l = l.clone();
                keys.remove(i);
                l.remove(i);
                Kids::Leaves(l)
            }
            Kids::Inner(c) => {
                let i = pos_le(&keys, sep);
                let mut c = c.clone();
                match c[i].without(sep) {
                    Some(n) => {
                        keys[i] = n.keys[0].clone();
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
        (!keys.is_empty()).then_some(Node { keys, kids })
    }
}

/// The index: a root published with one atomic swap.
pub(crate) struct Index {
    root: ArcSwap<Node>,
    smo: parking_lot::Mutex<()>,
}

impl Index {
    /// Build from the leaves in key order; the first separator must be empty.
    pub(crate) fn build(leaves: Vec<Arc<LeafRef>>) -> Index {
        assert!(!leaves.is_empty() && leaves[0].sep.is_empty());
        let entries: Vec<Entry> = leaves.into_iter().map(|l| (l.sep.clone(), l)).collect();
        let (mut keys, leaves): (Vec<_>, Vec<_>) = entries.into_iter().unzip();
        let mut level: Vec<Node> = Vec::new();
        let mut leaves = leaves;
        while !keys.is_empty() {
            let take = keys.len().min(FANOUT);
            let rest_k = keys.split_off(take);
            let rest_l = leaves.split_off(take);
            level.push(Node { keys: std::mem::replace(&mut keys, rest_k), kids: Kids::Leaves(leaves) });
            leaves = rest_l;
        }
        while level.len() > 1 {
            let mut up = Vec::new();
            let mut it = level.into_iter().peekable();
            while it.peek().is_some() {
                let group: Vec<Node> = it.by_ref().take(FANOUT).collect();
                let keys = group.iter().map(|n| n.keys[0].clone()).collect();
                up.push(Node { keys, kids: Kids::Inner(group.into_iter().map(Arc::new).collect()) });
            }
            level = up;
        }
        let root = level.pop().expect("one node");
        Index { root: ArcSwap::from_pointee(root), smo: parking_lot::Mutex::new(()) }
    }

    /// A snapshot of the tree.
    #[inline]
    pub(crate) fn load(&self) -> Guard<Arc<Node>> {
        self.root.load()
    }

    /// Whether `snap` is still the current tree.
    #[inline]
    pub(crate) fn is_current(&self, snap: &Arc<Node>) -> bool {
        std::ptr::eq(Arc::as_ptr(snap), Arc::as_ptr(&self.root.load()))
    }

    /// Add a leaf (after a split). The caller holds the split leaf's lock.
    pub(crate) fn insert(&self, leaf: Arc<LeafRef>) {
        let sep = leaf.sep.clone();
        let _g = self.smo.lock();
        let cur = self.root.load_full();
        let (n, extra) = cur.with(&sep, &leaf);
        let root = match extra {
            None => n,
            Some(e) => Node {
                keys: vec![n.keys[0].clone(), e.keys[0].clone()],
                kids: Kids::Inner(vec![Arc::new(n), Arc::new(e)]),
            },
        };
        self.root.store(Arc::new(root));
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
            n = Node {
                keys: only.keys.clone(),
                kids: match &only.kids {
                    Kids::Inner(c) => Kids::Inner(c.clone()),
                    Kids::Leaves(l) => Kids::Leaves(l.clone()),
                },
            };
        }
        self.root.store(Arc::new(n));
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

    #[test]
    fn route_insert_remove_neighbours() {
        let idx = Index::build(vec![LeafRef::new(0, k(""))]);
        let mut model = std::collections::BTreeMap::new();
        model.insert(String::new(), 0u64);
        for i in 1..2000u64 {
            let s = format!("{:06}", (i * 7919) % 100_000);
            idx.insert(LeafRef::new(i, k(&s)));
            model.insert(s, i);
        }
        let snap = idx.load();
        for probe in ["", "0", "000500", "050000", "099999", "z"] {
            let want = model.range(..=probe.to_string()).next_back().unwrap();
            let (sep, leaf) = snap.route(probe.as_bytes());
            assert_eq!((&**sep, leaf.off), (want.0.as_bytes(), *want.1), "{probe}");
        }
        for (s, _) in model.iter().take(50) {
            let want =
                model.range::<String, _>((std::ops::Bound::Excluded(s.clone()), std::ops::Bound::Unbounded)).next();
            let got = snap.after(s.as_bytes()).map(|(k, l)| (k.to_vec(), l.off));
            assert_eq!(got, want.map(|(k, v)| (k.as_bytes().to_vec(), *v)));
            let want = model.range(..s.clone()).next_back();
            let got = snap.before(s.as_bytes()).map(|(k, l)| (k.to_vec(), l.off));
            assert_eq!(got, want.map(|(k, v)| (k.as_bytes().to_vec(), *v)));
        }
        drop(snap);
        let all: Vec<String> = model.keys().cloned().collect();
        for s in all.iter().skip(1).step_by(2) {
            idx.remove(s.as_bytes());
            model.remove(s);
        }
        let got: Vec<(Vec<u8>, u64)> = idx.entries().into_iter().map(|(k, l)| (k.to_vec(), l.off)).collect();
        let want: Vec<(Vec<u8>, u64)> = model.iter().map(|(k, v)| (k.as_bytes().to_vec(), *v)).collect();
        assert_eq!(got, want);
        let rebuilt = Index::build(idx.entries().into_iter().map(|e| e.1).collect());
        assert_eq!(rebuilt.leaves(), model.len());
        assert_eq!(rebuilt.load().rightmost().1.off, *model.values().last().unwrap());
    }
}
