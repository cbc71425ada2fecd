//! Transactions and write batches.
//!
//! A transaction buffers its writes and remembers what it read (the record
//! each read key pointed to). Commit locks every leaf involved in address
//! order, re-validates the reads (optimistic concurrency control: a changed
//! read means a conflict and the closure runs again), writes the new
//! records and slots, and publishes the new bitmaps: with one 8-byte store
//! when a single leaf changes, and through one log entry (absolute bitmap
//! values, applied then checkpointed before the leaves unlock) when several
//! do. Either way every write becomes visible and durable at once.

use crate::error::{Error, Result};
use crate::index::LeafRef;
use crate::leaf;
use crate::recovery::encode_set;
use crate::store::{Store, check_key, check_value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

const MAX_ATTEMPTS: u32 = 64;

/// A transaction in progress: reads see its own writes.
pub struct Tx<'a> {
    store: &'a Store,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    reads: BTreeMap<Vec<u8>, Option<u64>>,
}

impl Tx<'_> {
    /// The value of `key`, as this transaction would leave it.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        check_key(key)?;
        if let Some(w) = self.writes.get(key) {
            return Ok(w.clone());
        }
        let s = self.store;
        let _pin = s.heap.pin();
        let (rec, val) = s.read(key, |rec| (rec, rec.map(|r| leaf::record_value(&s.region, r).to_vec())));
        self.reads.entry(key.to_vec()).or_insert(rec);
        Ok(val)
    }

    /// Whether `key` is present, as this transaction would leave it.
    pub fn contains(&mut self, key: &[u8]) -> Result<bool> {
        Ok(self.get(key)?.is_some())
    }

    /// Set `key` to `value` when the transaction commits.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        check_key(key)?;
        check_value(value)?;
        self.writes.insert(key.to_vec(), Some(value.to_vec()));
        Ok(())
    }

    /// Remove `key` when the transaction commits; returns whether it is
    /// present now (as seen by this transaction).
    pub fn delete(&mut self, key: &[u8]) -> Result<bool> {
        let was = self.get(key)?.is_some();
        self.writes.insert(key.to_vec(), None);
        Ok(was)
    }
}

struct Planned {
    key: Vec<u8>,
    fp: u8,
    rec: Option<u64>,
    vlen: usize,
}

impl Store {
    /// Run `f` as one atomic, durable transaction. `f` may run more than
    /// once if concurrent writers change what it read; keep it free of
    /// other side effects. Its error aborts the transaction.
    pub fn transaction<T>(&self, mut f: impl FnMut(&mut Tx<'_>) -> Result<T>) -> Result<T> {
        self.live()?;
        for _ in 0..MAX_ATTEMPTS {
            let mut tx = Tx { store: self, writes: BTreeMap::new(), reads: BTreeMap::new() };
            let out = f(&mut tx)?;
            match self.commit(tx.writes, &tx.reads) {
                Ok(()) => return Ok(out),
                Err(Error::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::Conflict { attempts: MAX_ATTEMPTS })
    }

    /// Apply puts (`Some`) and deletes (`None`) atomically and durably, with
    /// one commit. Later entries for the same key win.
    pub fn write_batch(&self, ops: &[(Vec<u8>, Option<Vec<u8>>)]) -> Result<()> {
        self.live()?;
        let mut writes = BTreeMap::new();
        for (k, v) in ops {
            check_key(k)?;
            if let Some(v) = v {
                check_value(v)?;
            }
            writes.insert(k.clone(), v.clone());
        }
        self.commit(writes, &BTreeMap::new())
    }

    fn commit(&self, writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>, reads: &BTreeMap<Vec<u8>, Option<u64>>) -> Result<()> {
        let _pin = self.heap.pin();
        let mut plan: Vec<Planned> = Vec::with_capacity(writes.len());
        for (k, v) in writes {
            let rec = match &v {
                Some(v) => match self.new_record(&k, v) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        for p in &plan {
                            if let Some(r) = p.rec {
                                let _ = self.heap.free(r);
                            }
                        }
                        return Err(e);
                    }
                },
                None => None,
            };
            let vlen = v.as_ref().map_or(0, |v| v.len());
            plan.push(Planned { fp: leaf::fingerprint(&k), key: k, rec, vlen });
        }
        let res = self.commit_planned(&plan, reads);
        // After a failed drain the records may already be visible: keep
        // them (a later recovery frees whatever is unreachable).
        if res.is_err() && !matches!(res, Err(Error::Drain(_))) {
            for p in &plan {
                if let Some(r) = p.rec {
                    let _ = self.heap.free(r);
                }
            }
        }
        res
    }

    fn commit_planned(&self, plan: &[Planned], reads: &BTreeMap<Vec<u8>, Option<u64>>) -> Result<()> {
        let r = &*self.region;
        'retry: loop {
            // Lock every leaf involved, in address order.
            let snap = self.index.load();
            let mut leaves: Vec<Arc<LeafRef>> = Vec::new();
            for k in plan.iter().map(|p| p.key.as_slice()).chain(reads.keys().map(|k| k.as_slice())) {
                let l = snap.route(k).1;
                if !leaves.iter().any(|x| Arc::ptr_eq(x, l)) {
                    leaves.push(l.clone());
                }
            }
            drop(snap);
            leaves.sort_by_key(|l| l.off);
            for l in &leaves {
                l.lock();
            }
            let unlock_all = |ls: &[Arc<LeafRef>]| ls.iter().for_each(|l| l.unlock());
            let snap = self.index.load();
            let owner = |k: &[u8]| leaves.iter().position(|l| Arc::ptr_eq(l, snap.route(k).1));
            let mut keyleaf = Vec::with_capacity(plan.len());
            for p in plan {
                match owner(&p.key) {
                    Some(i) if !leaves[i].is_dead() => keyleaf.push(i),
                    _ => {
                        unlock_all(&leaves);
                        continue 'retry;
                    }
                }
            }
            for (k, seen) in reads {
                let fp = leaf::fingerprint(k);
                let Some(i) = owner(k) else {
                    unlock_all(&leaves);
                    continue 'retry;
                };
                if self.find(leaves[i].off, k, fp).map(|f| f.rec) != *seen {
                    unlock_all(&leaves);
                    return Err(Error::Conflict { attempts: 1 });
                }
            }
            drop(snap);
            // Room: every put takes a free slot (a replaced record's slot is
            // freed by the same publish). Split a leaf that lacks room.
            let mut bits: Vec<u64> = leaves.iter().map(|l| leaf::bitmap(r, l.off)).collect();
            let mut need = vec![0u32; leaves.len()];
            for (p, &i) in plan.iter().zip(&keyleaf) {
                if p.rec.is_some() {
                    need[i] += 1;
                }
            }
            for (i, l) in leaves.iter().enumerate() {
                if need[i] > bits[i].count_zeros() {
                    if leaf::live(bits[i]).count() < 2 {
                        // Cannot split a leaf this small; too many keys for it
                        // in one batch is impossible (64 slots, distinct keys).
                        unlock_all(&leaves);
                        return Err(Error::Corrupt { offset: l.off, why: "no room in leaf".into() });
                    }
                    let res = self.split(l);
                    unlock_all(&leaves);
                    res?;
                    continue 'retry;
                }
            }
            // Write slots; compute new bitmaps.
            let mut newbits = bits.clone();
            let mut old_recs = Vec::new();
            let (mut dkeys, mut dbytes) = (0i64, 0i64);
            for (p, &i) in plan.iter().zip(&keyleaf) {
                let off = leaves[i].off;
                if let Some(f) = self.find(off, &p.key, p.fp) {
                    newbits[i] &= !(1u64 << f.slot);
                    let ov = leaf::record_lens(r, f.rec).map_or(0, |(_, v)| v as i64);
                    dkeys -= 1;
                    dbytes -= p.key.len() as i64 + ov;
                    old_recs.push(f.rec);
                }
                if let Some(rec) = p.rec {
                    let j = (!(bits[i] | newbits[i])).trailing_zeros() as usize;
                    leaf::write_slot(r, off, j, rec, p.fp);
                    bits[i] |= 1 << j; // not free for the next put in this leaf
                    newbits[i] |= 1 << j;
                    dkeys += 1;
                    dbytes += (p.key.len() + p.vlen) as i64;
                }
            }
            let changed: Vec<usize> =
                (0..leaves.len()).filter(|&i| newbits[i] != leaf::bitmap(r, leaves[i].off)).collect();
            let result = if changed.len() <= 1 {
                // One leaf: its bitmap is the single 8-byte publish.
                r.drain().map_err(Error::from).and_then(|()| {
                    for &i in &changed {
                        leaf::publish_bitmap(r, leaves[i].off, newbits[i]);
                    }
                    r.drain().map_err(Error::from)
                })
            } else {
                let ops: Vec<[u8; 17]> =
                    changed.iter().map(|&i| encode_set(leaf::bitmap_off(leaves[i].off), newbits[i])).collect();
                let _g = self.log_lock.lock();
                // Records and slots durable first: the entry that publishes
                // them could reach media before its own commit drain.
                r.drain()
                    .map_err(Error::from)
                    .and_then(|()| self.log.append_commit(&ops).map_err(Error::from))
                    .and_then(|seq| {
                        for &i in &changed {
                            leaf::publish_bitmap(r, leaves[i].off, newbits[i]);
                        }
                        self.log.checkpoint(seq).map_err(Error::from)
                    })
            };
            unlock_all(&leaves);
            result?;
            for rec in old_recs {
                let _ = self.heap.retire(rec);
            }
            self.keys.fetch_add(dkeys, Ordering::Relaxed);
            self.bytes.fetch_add(dbytes, Ordering::Relaxed);
            return Ok(());
        }
    }
}
