//! A leaf's keys in order, cached in DRAM for scans.
//!
//! Leaves are unsorted, so a scan that starts inside one had to read every
//! record of the leaf (one cache miss each) and sort them, even to return a
//! few keys. The first scan through a leaf leaves behind a [`LeafView`]: the
//! leaf's records in key order, each with the 8 bytes of its key after the
//! leaf's common stem. Later scans find their starting point by binary
//! search over those integers (a record is read only to break a tie) and
//! read only the records they return.
//!
//! A view describes the leaf at one version of its lock word: a reader uses
//! it only when the leaf's version is still that one, and validates the
//! version afterwards as for any optimistic read. Writers never touch
//! views; a changed leaf's view is simply stale and is rebuilt by the next
//! scan. Memory: 16 bytes per key of every scanned leaf.

use crate::leaf;
use crate::leaf::key_prefix_at;
use daxkv_alloc::Region;
use std::cmp::Ordering;

/// A leaf's records in key order, valid for one leaf version.
#[derive(Debug)]
pub(crate) struct LeafView {
    /// The leaf version (even) this describes.
    pub version: u64,
    /// The bytes every key in the leaf starts with.
    stem: Box<[u8]>,
    /// `(key_prefix_at(key, stem.len()), record)`, in key order.
    entries: Box<[(u64, u64)]>,
}

impl LeafView {
    /// The view of records `recs` (all the leaf's live records, read at
    /// `version`): reads and sorts their keys.
    pub(crate) fn build(r: &Region, version: u64, recs: &[u64]) -> LeafView {
        let mut order: Vec<(u64, &[u8], u64)> = recs.iter().map(|&rec| (0, leaf::record_key(r, rec), rec)).collect();
        let cp = leaf::key_order(&mut order);
        let stem: Box<[u8]> = order.first().map_or(&[][..], |g| &g.1[..cp]).into();
        LeafView { version, stem, entries: order.into_iter().map(|(p, _, rec)| (p, rec)).collect() }
    }

    /// Number of records.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Record `i` in key order.
    pub(crate) fn rec(&self, i: usize) -> u64 {
        self.entries[i].1
    }

    /// The first position whose key is greater than `key` (`strict`) or at
    /// least `key`.
    pub(crate) fn search(&self, r: &Region, key: &[u8], strict: bool) -> usize {
        let c = self.stem.len();
        if !key.starts_with(&self.stem) {
            // Every key here starts with the stem: `key` sorts before them
            // all or after them all.
            return if key < &self.stem[..] { 0 } else { self.entries.len() };
        }
        let kp = key_prefix_at(key, c);
        self.entries.partition_point(|&(p, rec)| match p.cmp(&kp) {
            Ordering::Less => true,
            Ordering::Greater => false,
            Ordering::Equal => {
                let k = leaf::record_key(r, rec);
                if strict { k <= key } else { k < key }
            }
        })
    }
}
