//! [`Store::check`]: verify the pool's invariants and report every problem.

use crate::error::Result;
use crate::leaf::{self, LEAF_BYTES};
use crate::store::{CheckReport, Store};
use std::collections::HashSet;

impl Store {
    /// Walk every leaf and record and verify: leaves and records inside
    /// the heap, fingerprints matching keys, keys unique and in order
    /// across the chain, the volatile index routing every key to its leaf,
    /// the key count, and the allocator's accounting against what is
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
        let index = self.index.entries();
        let mut reachable = also_live.to_vec();
        let mut seen = HashSet::new();
        let mut prev_max: Option<Vec<u8>> = None;
        let mut cur = self.head;
        let mut n = 0usize;
        let mut bytes = 0u64;
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
            let sep = index.get(n).map(|(s, _)| s.to_vec()).unwrap_or_default();
            let next_sep = index.get(n + 1).map(|(s, _)| s.to_vec());
            let bits = leaf::bitmap(r, cur);
            let fps = leaf::fingerprints(r, cur);
            let mut keys: Vec<Vec<u8>> = Vec::new();
            for i in leaf::live(bits) {
                let rec = leaf::slot(r, cur, i);
                let Some((k, v)) =
                    leaf::record_lens(r, rec).filter(|&(k, v)| in_heap(rec, leaf::REC_HEADER + (k + v) as u64))
                else {
                    rep.problems.push(format!("leaf {cur} slot {i}: record {rec} out of bounds"));
                    continue;
                };
                if leaf::record_intact(r, rec).is_none() {
                    rep.problems.push(format!("leaf {cur} slot {i}: record {rec} fails its checksum"));
                }
                let key = leaf::record_key(r, rec).to_vec();
                if fps[i] != leaf::fingerprint(&key) {
                    rep.problems.push(format!("leaf {cur} slot {i}: fingerprint does not match its key"));
                }
                if key.is_empty() {
                    rep.problems.push(format!("leaf {cur} slot {i}: empty key"));
                }
                if key < sep || next_sep.as_ref().is_some_and(|ns| key >= *ns) {
                    rep.problems.push(format!("leaf {cur}: key {key:?} outside the leaf's range"));
                }
                let routed = self.index.load().route(&key).off;
                if routed != cur {
                    rep.problems.push(format!("key {key:?} is in leaf {cur} but the index routes it to {routed}"));
                }
                reachable.push(rec);
                bytes += (k + v) as u64;
                keys.push(key);
            }
            keys.sort();
            if keys.windows(2).any(|w| w[0] == w[1]) {
                rep.problems.push(format!("leaf {cur} holds a key twice"));
            }
            if let (Some(pm), Some(first)) = (&prev_max, keys.first())
                && first <= pm
            {
                rep.problems.push(format!("leaf {cur}: keys not above the previous leaf's"));
            }
            if let Some(last) = keys.last() {
                prev_max = Some(last.clone());
            }
            rep.keys += keys.len() as u64;
            rep.leaves += 1;
            n += 1;
            cur = leaf::next(r, cur);
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
        if let Err(e) = self.heap.audit(reachable) {
            rep.problems.push(format!("allocator: {e}"));
        }
        Ok(rep)
    }
}
