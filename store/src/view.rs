//! A leaf's keys in order, cached in DRAM for scans.
//!
//! Leaves are unsorted, so a scan that starts inside one had to read every
//! record of the leaf (one cache miss each) and sort them, even to return a
//! few keys. The first scan through a leaf leaves behind a [`LeafView`]: the
//! leaf's records in key order, each with the 8 bytes of its key after the
//! leaf's common stem. Later scans find their starting point by counting
//! the integers below the query's (a record is read only to break a tie)
//! and read only the records they return.
//!
//! Layout, for few cache misses per scan: the stem (at most [`STEM_MAX`]
//! bytes) sits in the view itself, next to its version; the integers and
//! the records are two halves of one array, so a search touches the first
//! half only, and a scan starts all of its lines at once (through the
//! leaf's hint, see `LeafRef::prefetch_view`) instead of a binary search
//! taking them one dependent miss at a time.
//!
//! A view describes the leaf at one version of its lock word: a reader uses
//! it only when the leaf's version is still that one, and validates the
//! version afterwards as for any optimistic read. Writers never touch
//! views; a changed leaf's view is simply stale and is rebuilt by the next
//! scan. Memory: 16 bytes per key of every scanned leaf.

use crate::leaf;
use crate::leaf::key_prefix_at;
use daxkv_alloc::Region;

/// The longest stem kept. Keys sharing more than this compare on the 8
/// bytes after it, and read their records to break ties: still correct,
/// only slower for such keys.
pub(crate) const STEM_MAX: usize = 32;

/// A leaf's records in key order, valid for one leaf version.
#[derive(Debug)]
pub(crate) struct LeafView {
    /// The leaf version (even) this describes.
    pub version: u64,
    stem_len: u8,
    /// Every key in the leaf starts with `stem[..stem_len]`.
    stem: [u8; STEM_MAX],
    /// `n` integers `key_prefix_at(key, stem_len)`, then the `n` records,
    /// both in key order.
    data: Box<[u64]>,
}

impl LeafView {
    /// The view of records `recs` (all the leaf's live records, read at
    /// `version`): reads and sorts their keys.
    pub(crate) fn build(r: &Region, version: u64, recs: &[u64]) -> LeafView {
        let mut order: Vec<(u64, &[u8], u64)> = recs.iter().map(|&rec| (0, leaf::record_key(r, rec), rec)).collect();
        let cp = leaf::key_order(&mut order);
        let c = cp.min(STEM_MAX);
        let mut stem = [0u8; STEM_MAX];
        if let Some(g) = order.first() {
            stem[..c].copy_from_slice(&g.1[..c]);
        }
        let mut data = Vec::with_capacity(2 * order.len());
        // The order is the keys' order whatever the stem: only the integers
        // change when the stem was cut short.
        data.extend(order.iter().map(|g| if c == cp { g.0 } else { key_prefix_at(g.1, c) }));
        data.extend(order.iter().map(|g| g.2));
        LeafView { version, stem_len: c as u8, stem, data: data.into() }
    }

    /// Number of records.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.data.len() / 2
    }

    /// Record `i` in key order.
    #[inline]
    pub(crate) fn rec(&self, i: usize) -> u64 {
        self.data[self.len() + i]
    }

    /// Records `a..b` in key order.
    #[inline]
    pub(crate) fn recs(&self, a: usize, b: usize) -> &[u64] {
        &self.data[self.len() + a..self.len() + b]
    }

    /// Where the view keeps what a search reads first, for
    /// [`crate::index::LeafRef`]'s prefetch hint: the integers' address and
    /// length in bytes.
    #[inline]
    pub(crate) fn search_bytes(&self) -> (usize, usize) {
        (self.data.as_ptr() as usize, 8 * self.len())
    }

    /// The first position whose key is greater than `key` (`strict`) or at
    /// least `key`.
    pub(crate) fn search(&self, r: &Region, key: &[u8], strict: bool) -> usize {
        let c = usize::from(self.stem_len);
        let stem = &self.stem[..c];
        let n = self.len();
        if !key.starts_with(stem) {
            // Every key here starts with the stem: `key` sorts before them
            // all or after them all.
            return if key < stem { 0 } else { n };
        }
        let kp = key_prefix_at(key, c);
        let pfx = &self.data[..n];
        // Integers below the query's are keys below it (they are sorted);
        // among equal ones the keys themselves decide.
        let mut i = daxkv_alloc::count_less(pfx, kp);
        while i < n && pfx[i] == kp {
            let k = leaf::record_key(r, self.rec(i));
            if if strict { k <= key } else { k < key } {
                i += 1;
            } else {
                break;
            }
        }
        i
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use daxkv_alloc::PersistOptions;

    /// Keys with long shared stems (longer than `STEM_MAX` too), short
    /// tails with zero bytes, proper prefixes: every search position agrees
    /// with a sorted list's.
    #[test]
    fn search_agrees_with_sorted_keys() {
        let r = Region::anonymous(1 << 20, &PersistOptions::default()).expect("region");
        let mut s = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        for round in 0..120 {
            let stem = b"tenant/0042/".repeat(round % 5);
            let n = 1 + (next() % 64) as usize;
            let mut keys: Vec<Vec<u8>> = Vec::new();
            while keys.len() < n {
                let x = next();
                let mut k = stem.clone();
                k.extend((0..(x % 11)).map(|i| [0u8, 1, b'z'][((x >> (3 * i)) % 3) as usize]));
                if !keys.contains(&k) {
                    keys.push(k);
                }
            }
            let recs: Vec<u64> = keys
                .iter()
                .enumerate()
                .map(|(i, k)| {
                    let rec = 4096 * (i as u64 + 1);
                    leaf::write_record(&r, rec, k, 0, b"v", None);
                    rec
                })
                .collect();
            let view = LeafView::build(&r, 2, &recs);
            let mut sorted = keys.clone();
            sorted.sort();
            let got: Vec<&[u8]> = (0..view.len()).map(|i| leaf::record_key(&r, view.rec(i))).collect();
            assert_eq!(got, sorted.iter().map(|k| k.as_slice()).collect::<Vec<_>>(), "round {round}");
            assert_eq!(view.recs(0, view.len()), (0..view.len()).map(|i| view.rec(i)).collect::<Vec<_>>());
            let mut probes = keys.clone();
            for k in &keys {
                let mut a = k.clone();
                a.push(0);
                probes.push(a);
                let mut b = k.clone();
                b.pop();
                probes.push(b);
            }
            probes.extend([Vec::new(), b"tenant/0042/tenant/0043".to_vec(), vec![0xff; 70]]);
            for q in &probes {
                assert_eq!(view.search(&r, q, false), sorted.partition_point(|k| k < q), "round {round} {q:?}");
                assert_eq!(view.search(&r, q, true), sorted.partition_point(|k| k <= q), "round {round} {q:?}");
            }
        }
    }
}
