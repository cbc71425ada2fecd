//! [`Store::check`]: verify the pool's invariants and report every problem.

use crate::error::Result;
use crate::leaf::{self, LEAF_BYTES};
use crate::store::{CheckReport, Store};
use std::collections::HashSet;

impl Store {
    /// Walk every leaf and record and verify: leaves and records inside
    /// the heap, fingerprints matching keys, keys unique and in order
    /// across the chain, the volatile index routing each leaf's keys to it
    /// (its smallest and largest key: routing is monotonic in the key),
    /// the point cache naming only live records, each under its key, the
    /// key count, and the allocator's accounting against what is
    /// reachable (no leak, nothing reachable free). Meant for a quiescent
    /// store: concurrent writers can make it report transient problems.
    pub fn check(&self) -> Result<CheckReport> {
        self.check_with(&[])
    }

    /// [`Store::check`], counting the blocks at `also_live` as in use
    /// (the saved index, while an open still holds it).
    pub(crate) fn check_with(&self, also_live: &[u64]) -> Result<CheckReport> {
        self.live()?;
        let r = &*self.region;
        let _pin = self.heap.pin();
        let sb = *self.sb.lock();
        let mut rep = CheckReport::default();
        let in_heap = |off: u64, len: u64| off >= sb.heap_off && off.saturating_add(len) <= sb.heap_off + sb.heap_len;
        // One snapshot of the index for the whole walk.
        let root = self.index.load_full();
        let mut index = Vec::new();
        root.collect(&mut index);
        let mut reachable = also_live.to_vec();
        // Every live record and its key's hash, for the point cache's audit.
        let mut live: Vec<(u64, u32)> = Vec::new();
        let mut seen = HashSet::new();
        // Keys are borrowed from the pool (the pin keeps every record in
        // place), so nothing is copied per key.
        let mut prev_max: Option<&[u8]> = None;
        let mut recs: Vec<(usize, u64)> = Vec::with_capacity(leaf::SLOTS);
        let mut keys: Vec<&[u8]> = Vec::with_capacity(leaf::SLOTS);
        let mut cur = self.head;
        let mut n = 0usize;
        let (mut bytes, mut expiring) = (0u64, 0u64);
        while cur != 0 {
            if !in_heap(cur, LEAF_BYTES as u64) || !cur.is_multiple_of(8) || !seen.insert(cur) {
                rep.problems.push(format!("leaf chain broken or looping at {cur}"));
                break;
            }
            reachable.push(cur);
            match index.get(n) {
                Some((_, l)) if l.off == cur => {}
                other => rep.problems.push(format!(
                    "leaf {n} of the chain is at {cur} but the index has {:?}",
                    other.map(|(_, l)| l.off)
                )),
            }
            let sep: &[u8] = index.get(n).map_or(&[], |(s, _)| s);
            let next_sep: Option<&[u8]> = index.get(n + 1).map(|(s, _)| &**s);
            let bits = leaf::bitmap(r, cur);
            let fps = leaf::fingerprints(r, cur);
            let next = leaf::next(r, cur);
            if in_heap(next, LEAF_BYTES as u64) {
                leaf::prefetch(r, next);
            }
            // Start every record's cache misses before reading any.
            recs.clear();
            recs.extend(leaf::live(bits).map(|i| (i, leaf::slot(r, cur, i))));
            for &(_, rec) in &recs {
                if in_heap(rec, 128) {
                    leaf::prefetch_record(r, rec);
                }
            }
            keys.clear();
            for &(i, rec) in &recs {
                let Some((k, v)) =
                    leaf::record_lens(r, rec).filter(|_| leaf::record_size(r, rec).is_some_and(|n| in_heap(rec, n)))
                else {
                    rep.problems.push(format!("leaf {cur} slot {i}: record {rec} out of bounds"));
                    continue;
                };
                let key = leaf::record_key(r, rec);
                let fp = match leaf::record_intact(r, rec) {
                    Some((_, _, h)) => leaf::fingerprint_of(h),
                    None => {
                        rep.problems.push(format!("leaf {cur} slot {i}: record {rec} fails its checksum"));
                        leaf::fingerprint(key)
                    }
                };
                if fps[i] != fp {
                    rep.problems.push(format!("leaf {cur} slot {i}: fingerprint does not match its key"));
                }
                if key.is_empty() {
                    rep.problems.push(format!("leaf {cur} slot {i}: empty key"));
                }
                if key < sep || next_sep.is_some_and(|ns| key >= ns) {
                    rep.problems.push(format!("leaf {cur}: key {key:?} outside the leaf's range"));
                }
                reachable.push(rec);
                live.push((rec, leaf::key_hash(key)));
                bytes += (k + v) as u64;
                expiring += u64::from(leaf::record_expires(r, rec));
                keys.push(key);
            }
            keys.sort_unstable();
            if keys.windows(2).any(|w| w[0] == w[1]) {
                rep.problems.push(format!("leaf {cur} holds a key twice"));
            }
            // The index's routing is monotonic in the key, so a leaf's
            // smallest and largest keys routed to it vouch for the rest.
            let ends = keys.first().into_iter().chain(keys.last().filter(|_| keys.len() > 1));
            for &key in ends {
                let routed = root.route(key).off;
                if routed != cur {
                    rep.problems.push(format!("key {key:?} is in leaf {cur} but the index routes it to {routed}"));
                }
            }
            if let (Some(pm), Some(&first)) = (prev_max, keys.first())
                && first <= pm
            {
                rep.problems.push(format!("leaf {cur}: keys not above the previous leaf's"));
            }
            if let Some(&last) = keys.last() {
                prev_max = Some(last);
            }
            rep.keys += keys.len() as u64;
            rep.leaves += 1;
            n += 1;
            cur = next;
        }
        if n != index.len() {
            rep.problems.push(format!("the chain has {n} leaves, the index {}", index.len()));
        }
        if rep.keys != self.len() {
            rep.problems.push(format!("{} keys found, the store counts {}", rep.keys, self.len()));
        }
        if bytes != self.stats_bytes() {
            rep.problems.push(format!("{bytes} key+value bytes found, the store counts {}", self.stats_bytes()));
        }
        let counted = self.expiring.load(std::sync::atomic::Ordering::Relaxed);
        if expiring as i64 != counted {
            rep.problems.push(format!("{expiring} keys with an expiry found, the store counts {counted}"));
        }
        live.sort_unstable();
        rep.problems.extend(self.hot.audit(&live, 20));
        if let Err(e) = self.heap.audit(reachable) {
            rep.problems.push(format!("allocator: {e}"));
        }
        Ok(rep)
    }

    /// Every block the leaf chain reaches (the leaves and their records),
    /// sorted. With [`Store::blocks_in_use`], for tools that compare a
    /// pool with an allocator: the crash explorer checks that no crash
    /// image reaches a block the live store had already freed or retired.
    /// Walks the chain as it is; meant for a quiescent store that
    /// [`Store::check`]s sound.
    pub fn reachable_blocks(&self) -> Result<Vec<u64>> {
        self.live()?;
        let r = &*self.region;
        let _pin = self.heap.pin();
        let mut out = Vec::new();
        let mut cur = self.head;
        // A damaged chain may loop: it cannot be longer than the heap has
        // leaves.
        let mut budget = self.heap.region().len() / LEAF_BYTES as u64;
        while cur != 0 && budget > 0 {
            out.push(cur);
            out.extend(leaf::live(leaf::bitmap(r, cur)).map(|i| leaf::slot(r, cur, i)));
            cur = leaf::next(r, cur);
            budget -= 1;
        }
        out.sort_unstable();
        Ok(out)
    }

    /// The blocks the heap holds in use now (handed out, neither freed
    /// nor retired), sorted; see [`Store::reachable_blocks`].
    pub fn blocks_in_use(&self) -> Result<Vec<u64>> {
        self.live()?;
        Ok(self.heap.blocks_in_use())
    }
}
