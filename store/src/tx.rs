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
use crate::store::{Store, check_key, check_value, unexpired};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::Ordering;

const MAX_ATTEMPTS: u32 = 64;
/// A leaf's final entry in an overflow: key, then record, fingerprint and
/// the slot it already has (`None` for a new record).
type Final = (Vec<u8>, (u64, u8, Option<usize>));
/// Entries per leaf when a transaction fills new leaves (room left to grow).
const FILL: usize = 48;
/// A write as a commit takes it: the key, then its new value and expiry
/// (milliseconds since the Unix epoch), or `None` for a delete.
type Write<'a> = (&'a [u8], Option<(&'a [u8], Option<u64>)>);
/// A write of [`Store::write_batch_with_expiry`]: the key, its new value
/// (`None`: delete it) and when the value expires (milliseconds since the
/// Unix epoch, `None`: never; ignored for a delete).
pub type ExpiringWrite<'a> = (&'a [u8], Option<&'a [u8]>, Option<u64>);
/// A transaction's write of one key: the new value and its expiry, or
/// `None` for a delete.
type Pending = Option<(Vec<u8>, Option<u64>)>;

/// A transaction in progress: reads see its own writes.
pub struct Tx<'a> {
    store: &'a Store,
    /// New value and expiry, or `None` for a delete.
    writes: BTreeMap<Vec<u8>, Pending>,
    /// The record each read key had (expired or not), for validation.
    reads: BTreeMap<Vec<u8>, Option<u64>>,
}

impl Tx<'_> {
    /// The value of `key`, as this transaction would leave it.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.get_with_expiry(key)?.map(|(v, _)| v))
    }

    /// When `key` expires (milliseconds since the Unix epoch), as this
    /// transaction would leave it: `None` if it is absent, `Some(None)` if
    /// it never expires. Validated at commit as [`Tx::get`] is; the value
    /// is not copied.
    pub fn expiry(&mut self, key: &[u8]) -> Result<Option<Option<u64>>> {
        self.look(key, |(_, at)| *at, |_, at| at)
    }

    /// The value of `key` and when it expires (milliseconds since the Unix
    /// epoch; `None`: never), as this transaction would leave it.
    pub fn get_with_expiry(&mut self, key: &[u8]) -> Result<Option<(Vec<u8>, Option<u64>)>> {
        self.look(key, |(v, at)| (v.clone(), *at), |v, at| (v.to_vec(), at))
    }

    /// `key` as this transaction would leave it, through `pending` (this
    /// transaction's own write) or `stored` (the key's record: its value
    /// and expiry). `None` if absent; an expired write or record is absent.
    /// A record read is remembered, expired or not: the commit checks that
    /// it is still the key's record.
    fn look<T>(
        &mut self,
        key: &[u8],
        pending: impl FnOnce(&(Vec<u8>, Option<u64>)) -> T,
        stored: impl Fn(&[u8], Option<u64>) -> T,
    ) -> Result<Option<T>> {
        check_key(key)?;
        if let Some(w) = self.writes.get(key) {
            return Ok(w.as_ref().filter(|(_, at)| unexpired(*at)).map(pending));
        }
        let s = self.store;
        let r = &*s.region;
        let _pin = s.heap.pin();
        let (rec, out) = s.read_record(key, |rec| {
            let live = rec.map(|rec| leaf::record_parts(r, rec)).filter(|(_, _, at)| unexpired(*at));
            (rec, live.map(|(_, v, at)| stored(v, at)))
        });
        self.reads.entry(key.to_vec()).or_insert(rec);
        Ok(out)
    }

    /// Whether `key` is present, as this transaction would leave it.
    pub fn contains(&mut self, key: &[u8]) -> Result<bool> {
        Ok(self.get(key)?.is_some())
    }

    /// Set `key` to `value`, with no expiry, when the transaction commits.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.put_with_expiry(key, value, None)
    }

    /// Set `key` to `value`, to expire at `expires` (see
    /// [`Store::put_with_expiry`]), when the transaction commits.
    pub fn put_with_expiry(&mut self, key: &[u8], value: &[u8], expires: Option<u64>) -> Result<()> {
        check_key(key)?;
        check_value(value)?;
        self.writes.insert(key.to_vec(), Some((value.to_vec(), expires)));
        Ok(())
    }

    /// Remove `key` when the transaction commits; returns whether it is
    /// present now (as seen by this transaction). An expired key is
    /// removed too, and was not present.
    pub fn delete(&mut self, key: &[u8]) -> Result<bool> {
        let was = self.get(key)?.is_some();
        self.writes.insert(key.to_vec(), None);
        Ok(was)
    }

    /// This transaction's own writes to keys in `range`, in key order: the
    /// new value of a put, `None` for a delete. For views that combine the
    /// store with the transaction (a count, a listing of keys); reading the
    /// store around them is not validated at commit, as [`Tx::get`] is.
    pub fn writes_in<'s>(
        &'s self,
        range: (Bound<&[u8]>, Bound<&[u8]>),
    ) -> impl Iterator<Item = (&'s [u8], Option<&'s [u8]>)> + 's {
        // `BTreeMap::range` panics on a start above the end; such a range
        // holds nothing.
        let empty = match range {
            (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) => {
                a > b || (a == b && !matches!(range, (Bound::Included(_), Bound::Included(_))))
            }
            _ => false,
        };
        let r = (!empty).then(|| self.writes.range::<[u8], _>(range)).into_iter().flatten();
        r.map(|(k, v)| (k.as_slice(), v.as_ref().map(|(v, _)| v.as_slice())))
    }
}

struct Planned<'k> {
    key: &'k [u8],
    /// The key's hash (point cache) and fingerprint.
    h: u32,
    fp: u8,
    rec: Option<u64>,
    /// `rec`'s block was untouched (zero on media) when allocated.
    untouched: bool,
    vlen: usize,
    /// The new record carries an expiry.
    expires: bool,
}

impl Store {
    /// Run `f` as one atomic, durable transaction. `f` may run more than
    /// once if concurrent writers change what it read; keep it free of
    /// other side effects. Its error aborts the transaction.
    ///
    /// Each attempt keeps the thread pinned (see `daxkv_alloc::Guard`): the
    /// space of records that any thread replaces or deletes meanwhile is
    /// reused only after `f` and the commit return, so a long `f` holds
    /// that space back.
    pub fn transaction<T>(&self, mut f: impl FnMut(&mut Tx<'_>) -> Result<T>) -> Result<T> {
        self.live()?;
        for _ in 0..MAX_ATTEMPTS {
            // Pinned from the first read to the commit's check of what was
            // read: that check compares record offsets, and an offset names
            // the same record only while no block retired meanwhile can be
            // reused (else a key changed twice could be back at the block
            // it was read from, and its change go unseen).
            let _pin = self.heap.pin();
            let mut tx = Tx { store: self, writes: BTreeMap::new(), reads: BTreeMap::new() };
            let out = f(&mut tx)?;
            let writes: Vec<Write> =
                tx.writes.iter().map(|(k, v)| (k.as_slice(), v.as_ref().map(|(v, at)| (v.as_slice(), *at)))).collect();
            match self.commit(&writes, &tx.reads) {
                Ok(()) => return Ok(out),
                Err(Error::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::Conflict { attempts: MAX_ATTEMPTS })
    }

    /// Apply puts (`Some`, with no expiry) and deletes (`None`) atomically
    /// and durably, with one commit. Later entries for the same key win.
    pub fn write_batch(&self, ops: &[(Vec<u8>, Option<Vec<u8>>)]) -> Result<()> {
        let ops: Vec<(&[u8], Option<&[u8]>)> = ops.iter().map(|(k, v)| (k.as_slice(), v.as_deref())).collect();
        self.write_batch_ref(&ops)
    }

    /// [`Store::write_batch`] over borrowed keys and values: nothing is
    /// copied before the records are written into the pool.
    pub fn write_batch_ref(&self, ops: &[(&[u8], Option<&[u8]>)]) -> Result<()> {
        let ops: Vec<ExpiringWrite> = ops.iter().map(|&(k, v)| (k, v, None)).collect();
        self.write_batch_with_expiry(&ops)
    }

    /// [`Store::write_batch_ref`] whose puts carry an expiry each
    /// (milliseconds since the Unix epoch, `None`: never; see
    /// [`Store::put_with_expiry`]). A delete's expiry is ignored.
    pub fn write_batch_with_expiry(&self, ops: &[ExpiringWrite]) -> Result<()> {
        self.live()?;
        for &(k, v, _) in ops {
            check_key(k)?;
            if let Some(v) = v {
                check_value(v)?;
            }
        }
        // Key order, the last entry of each key only.
        let mut order: Vec<u32> = (0..ops.len() as u32).collect();
        order.sort_by(|&a, &b| ops[a as usize].0.cmp(ops[b as usize].0).then(a.cmp(&b)));
        let mut writes: Vec<Write> = Vec::with_capacity(ops.len());
        for (n, &i) in order.iter().enumerate() {
            let last = order.get(n + 1).is_none_or(|&j| ops[j as usize].0 != ops[i as usize].0);
            if last {
                let (k, v, at) = ops[i as usize];
                writes.push((k, v.map(|v| (v, at))));
            }
        }
        self.commit(&writes, &BTreeMap::new())
    }

    /// Commit `writes` (in key order, one entry per key).
    fn commit(&self, writes: &[Write], reads: &BTreeMap<Vec<u8>, Option<u64>>) -> Result<()> {
        let _pin = self.heap.pin();
        let mut plan: Vec<Planned> = Vec::with_capacity(writes.len());
        // Allocate every record, then write them: an allocation takes a
        // lock, whose atomic read-modify-write would wait for the write-back
        // of the record written before it.
        for &(k, v) in writes {
            let (rec, untouched) = match v {
                Some((v, at)) => match self.heap.alloc_untouched(leaf::record_len(k, v, at)) {
                    Ok((r, u)) => (Some(r), u),
                    Err(e) => {
                        for p in &plan {
                            if let Some(r) = p.rec {
                                let _ = self.heap.free(r);
                            }
                        }
                        return Err(e.into());
                    }
                },
                None => (None, false),
            };
            let vlen = v.map_or(0, |(v, _)| v.len());
            let h = leaf::key_hash(k);
            // The point cache's line, which the commit updates at its end.
            self.hot.prefetch(h);
            let expires = v.is_some_and(|(_, at)| at.is_some());
            plan.push(Planned { h, fp: leaf::fingerprint_of(h), key: k, rec, untouched, vlen, expires });
        }
        for (p, &(_, v)) in plan.iter().zip(writes) {
            if let (Some(rec), Some((v, at))) = (p.rec, v) {
                leaf::write_record(&self.region, rec, p.key, p.h, v, at);
            }
        }
        let res = self.commit_planned(&plan, reads);
        // Free the new records only when nothing was published; after a
        // failed drain or log write they may be reachable (a later recovery
        // frees whatever is not).
        if matches!(res, Err(Error::PoolFull(_) | Error::TooLarge(_) | Error::Conflict { .. } | Error::Corrupt { .. }))
        {
            for p in &plan {
                if let Some(r) = p.rec {
                    let _ = self.heap.free(r);
                }
            }
        }
        res
    }

    fn commit_planned(&self, plan: &[Planned<'_>], reads: &BTreeMap<Vec<u8>, Option<u64>>) -> Result<()> {
        let r = &*self.region;
        'retry: loop {
            // Lock every leaf involved, in address order.
            let snap = self.index.load();
            // Route every key once; remember each key's leaf by index.
            let nkeys = plan.len() + reads.len();
            let mut leaves: Vec<Arc<LeafRef>> = Vec::new();
            let mut slot_of: std::collections::HashMap<*const LeafRef, usize> = Default::default();
            let mut owner: Vec<usize> = Vec::with_capacity(nkeys);
            for k in plan.iter().map(|p| p.key).chain(reads.keys().map(|k| k.as_slice())) {
                let l = snap.route(k);
                let i = *slot_of.entry(Arc::as_ptr(l)).or_insert_with(|| {
                    leaves.push(l.clone());
                    leaves.len() - 1
                });
                owner.push(i);
            }
            // Lock in address order. If the index is still the one routed
            // with and no leaf was locked by anyone since its version was
            // read, the routes still hold; otherwise route again.
            let versions: Vec<u64> = leaves.iter().map(|l| l.read_begin()).collect();
            let mut order: Vec<usize> = (0..leaves.len()).collect();
            order.sort_by_key(|&i| leaves[i].off);
            let current = self.index.is_current(&snap);
            drop(snap);
            let mut fast = current;
            for &i in &order {
                if fast && leaves[i].lock_if_unchanged(versions[i]) {
                    continue;
                }
                fast = false;
                leaves[i].lock();
            }
            let unlock_all = |ls: &[Arc<LeafRef>]| ls.iter().for_each(|l| l.unlock());
            if leaves.iter().any(|l| l.is_dead()) {
                unlock_all(&leaves);
                continue 'retry;
            }
            if !fast {
                let snap = self.index.load();
                let keys = plan.iter().map(|p| p.key).chain(reads.keys().map(|k| k.as_slice()));
                if keys.zip(&owner).any(|(k, &i)| !Arc::ptr_eq(snap.route(k), &leaves[i])) {
                    unlock_all(&leaves);
                    continue 'retry;
                }
            }
            let keyleaf: Vec<usize> = owner[..plan.len()].to_vec();
            for ((k, seen), &i) in reads.iter().zip(&owner[plan.len()..]) {
                let fp = leaf::fingerprint(k);
                if self.find(leaves[i].off, k, fp).map(|f| f.rec) != *seen {
                    unlock_all(&leaves);
                    return Err(Error::Conflict { attempts: 1 });
                }
            }
            // Write slots and compute new bitmaps, leaf by leaf. Every put
            // takes a currently free slot (a replaced record's slot is freed by
            // the same publish). A leaf without enough free slots overflows
            // into new leaves written here and linked by the same commit.
            let bits: Vec<u64> = leaves.iter().map(|l| leaf::bitmap(r, l.off)).collect();
            let mut newbits = bits.clone();
            let mut next_ops: Vec<(usize, u64)> = Vec::new();
            let mut created: Vec<(u64, Arc<[u8]>)> = Vec::new();
            let mut one_drain = vec![false; leaves.len()];
            let mut old_recs = Vec::new();
            let (mut dkeys, mut dbytes, mut dexp) = (0i64, 0i64, 0i64);
            // Stop writing: `None` to retry after a split, `Some` to fail.
            let mut failed: Option<Option<Error>> = None;
            // The plan's entries grouped by leaf, in key order within each
            // (a stable sort; keys in order route to leaves in order, so
            // this is usually already sorted).
            let mut by_leaf: Vec<u32> = (0..plan.len() as u32).collect();
            by_leaf.sort_by_key(|&j| keyleaf[j as usize]);
            let mut at = 0;
            for i in 0..leaves.len() {
                let off = leaves[i].off;
                let start = at;
                while at < by_leaf.len() && keyleaf[by_leaf[at] as usize] == i {
                    at += 1;
                }
                let mine = || by_leaf[start..at].iter().map(|&j| &plan[j as usize]);
                let need = mine().filter(|p| p.rec.is_some()).count() as u32;
                let mut used = bits[i];
                let take_slot = |used: &mut u64| {
                    let j = (!*used).trailing_zeros() as usize;
                    *used |= 1 << j;
                    j
                };
                if need <= bits[i].count_zeros() {
                    // The leaf's only change one new key (its record in an
                    // untouched block) with a safe slot for it: if no other
                    // leaf changes, one drain commits it (see `put_locked`).
                    // Not for more changes: recovery drops torn records one
                    // by one, which would leave part of the commit. (A slot
                    // flagged for nothing costs recovery one checksum.)
                    let safe = leaves[i].safe() & !bits[i];
                    let single = need == 1 && safe != 0;
                    let mut replaced = false;
                    for p in mine() {
                        let old = self.find(off, p.key, p.fp);
                        replaced |= old.is_some();
                        if let Some(f) = &old {
                            newbits[i] &= !(1u64 << f.slot);
                            let ov = leaf::record_lens(r, f.rec).map_or(0, |(_, v)| v as i64);
                            dkeys -= 1;
                            dbytes -= p.key.len() as i64 + ov;
                            dexp -= i64::from(leaf::record_expires(r, f.rec));
                            old_recs.push((p.h, f.rec));
                        }
                        if let Some(rec) = p.rec {
                            one_drain[i] = single && old.is_none() && p.untouched;
                            let j = if one_drain[i] {
                                let j = safe.trailing_zeros() as usize;
                                used |= 1 << j;
                                leaf::write_slot_unverified(r, off, j, rec, p.fp);
                                j
                            } else {
                                let j = take_slot(&mut used);
                                leaf::write_slot(r, off, j, rec, p.fp);
                                j
                            };
                            newbits[i] |= 1 << j;
                            dkeys += 1;
                            dbytes += (p.key.len() + p.vlen) as i64;
                            dexp += i64::from(p.expires);
                        }
                    }
                    one_drain[i] &= !replaced;
                    // Written slots are no longer zero, published or not.
                    leaves[i].set_safe(leaves[i].safe() & !used);
                    continue;
                }
                // Overflow: the leaf's final contents, in key order.
                let fps = leaf::fingerprints(r, off);
                let mut fin: BTreeMap<Vec<u8>, (u64, u8, Option<usize>)> = leaf::live(bits[i])
                    .map(|j| {
                        let rec = leaf::slot(r, off, j);
                        (leaf::record_key(r, rec).to_vec(), (rec, fps[j], Some(j)))
                    })
                    .collect();
                for p in mine() {
                    if let Some((orec, _, _)) = fin.remove(p.key) {
                        let ov = leaf::record_lens(r, orec).map_or(0, |(_, v)| v as i64);
                        dkeys -= 1;
                        dbytes -= p.key.len() as i64 + ov;
                        dexp -= i64::from(leaf::record_expires(r, orec));
                        old_recs.push((p.h, orec));
                    }
                    if let Some(rec) = p.rec {
                        fin.insert(p.key.to_vec(), (rec, p.fp, None));
                        dkeys += 1;
                        dbytes += (p.key.len() + p.vlen) as i64;
                        dexp += i64::from(p.expires);
                    }
                }
                let entries: Vec<Final> = fin.into_iter().collect();
                // What stays: the longest prefix of at most FILL entries whose
                // new records fit the leaf's free slots.
                let free = bits[i].count_zeros();
                let (mut keep, mut news) = (0usize, 0u32);
                while keep < entries.len() && keep < FILL {
                    if entries[keep].1.2.is_none() {
                        if news == free {
                            break;
                        }
                        news += 1;
                    }
                    keep += 1;
                }
                if keep == 0 {
                    // A full leaf whose first key is new: split it, retry.
                    failed = Some(self.split(&leaves[i]).err());
                    break;
                }
                let mut nb = 0u64;
                for (_, (rec, fp, slot)) in &entries[..keep] {
                    let j = match slot {
                        Some(j) => *j,
                        None => {
                            let j = take_slot(&mut used);
                            leaf::write_slot(r, off, j, *rec, *fp);
                            j
                        }
                    };
                    nb |= 1 << j;
                }
                leaves[i].set_safe(leaves[i].safe() & !used);
                newbits[i] = nb;
                let mut next = leaf::next(r, off);
                let chunks: Vec<&[Final]> = entries[keep..].chunks(FILL).collect();
                for chunk in chunks.into_iter().rev() {
                    let nl = match self.heap.alloc(leaf::LEAF_BYTES) {
                        Ok(nl) => nl,
                        Err(e) => {
                            failed = Some(Some(e.into()));
                            break;
                        }
                    };
                    let moved: Vec<(u64, u8)> = chunk.iter().map(|(_, (rec, fp, _))| (*rec, *fp)).collect();
                    leaf::init(r, nl, &moved, next);
                    created.push((nl, Arc::from(chunk[0].0.as_slice())));
                    next = nl;
                }
                if failed.is_some() {
                    break;
                }
                next_ops.push((i, next));
            }
            if let Some(e) = failed {
                for (nl, _) in &created {
                    let _ = self.heap.free(*nl);
                }
                unlock_all(&leaves);
                match e {
                    None => continue 'retry,
                    Some(e) => return Err(e),
                }
            }
            let changed: Vec<usize> = (0..leaves.len()).filter(|&i| newbits[i] != bits[i]).collect();
            let result = if changed.len() == 1 && next_ops.is_empty() && one_drain[changed[0]] {
                // Records, flagged slots and the bitmap in one drain.
                leaf::publish_bitmap(r, leaves[changed[0]].off, newbits[changed[0]]);
                r.drain().map_err(Error::from)
            } else if changed.len() <= 1 && next_ops.is_empty() {
                // One leaf: its bitmap is the single 8-byte publish.
                r.drain().map_err(Error::from).and_then(|()| {
                    for &i in &changed {
                        leaf::publish_bitmap(r, leaves[i].off, newbits[i]);
                    }
                    r.drain().map_err(Error::from)
                })
            } else {
                let mut ops: Vec<[u8; 17]> =
                    changed.iter().map(|&i| encode_set(leaf::bitmap_off(leaves[i].off), newbits[i])).collect();
                ops.extend(next_ops.iter().map(|&(i, n)| encode_set(leaf::next_off(leaves[i].off), n)));
                let _g = self.log_lock.lock();
                // Records, slots and new leaves durable first: the entry that
                // publishes them could reach media before its commit drain.
                r.drain()
                    .map_err(Error::from)
                    .and_then(|()| self.log.append_commit(&ops).map_err(Error::from))
                    .and_then(|seq| {
                        for &i in &changed {
                            leaf::publish_bitmap(r, leaves[i].off, newbits[i]);
                        }
                        for &(i, n) in &next_ops {
                            leaf::publish_next(r, leaves[i].off, n);
                        }
                        self.log.checkpoint(seq).map_err(Error::from)
                    })
            };
            // Before any leaf unlocks, the point cache forgets every
            // replaced record, and then (if the commit is durable) caches
            // the new ones: in between, a reader of any key of the commit
            // misses and waits for the leaf locks (see `hot`). The new
            // leaves, which no lock covers, join the index only after that:
            // earlier, a reader could find a new value in one while the
            // cache still gave another key's old value, and cache a new
            // record that the second pass then cached again (the copy
            // outliving the record once the next change removed only one).
            for &(h, rec) in &old_recs {
                self.hot.replace(h, Some(rec), None);
            }
            if result.is_ok() {
                for p in plan {
                    if let Some(rec) = p.rec {
                        self.hot.replace(p.h, None, Some(rec));
                    }
                }
                for (nl, sep) in created {
                    self.index.insert(LeafRef::new(nl, sep));
                }
            } else if matches!(result, Err(Error::TooLarge(_))) {
                // Never logged, so never linked.
                for (nl, _) in &created {
                    let _ = self.heap.free(*nl);
                }
            }
            unlock_all(&leaves);
            result?;
            for (_, rec) in old_recs {
                let _ = self.heap.retire(rec);
            }
            // Leaves the commit left nearly empty merge into their
            // predecessors, as after a single delete (best effort: a leaf
            // someone else holds now is left for a later delete).
            for &i in &changed {
                let l = &leaves[i];
                if newbits[i].count_ones() <= crate::store::MERGE_AT && l.try_lock() {
                    self.merge_underfull(l);
                    l.unlock();
                }
            }
            self.keys.fetch_add(dkeys, Ordering::Relaxed);
            self.bytes.fetch_add(dbytes, Ordering::Relaxed);
            self.expiring.fetch_add(dexp, Ordering::Relaxed);
            return Ok(());
        }
    }
}
