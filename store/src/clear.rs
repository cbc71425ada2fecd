//! [`Store::clear`]: every key gone in one atomic, durable step.
//!
//! With every leaf locked (in address order, as transactions lock them),
//! one log entry empties the head leaf and cuts the chain after it: two
//! words, so a crash leaves all keys or none. Recovery then frees what the
//! chain no longer reaches; without a crash the records and the other
//! leaves are retired here.

use crate::error::{Error, Result};
use crate::index::LeafRef;
use crate::leaf;
use crate::recovery::encode_set;
use crate::store::Store;
use std::sync::Arc;
use std::sync::atomic::Ordering;

impl Store {
    /// Remove every key; returns how many there were. Atomic and durable
    /// when it returns: a concurrent reader sees every key or none, and a
    /// crash leaves all of them or none. Writers wait meanwhile (every
    /// leaf is locked), for time in proportion to the keys.
    pub fn clear(&self) -> Result<u64> {
        self.clear_with(|_| {})
    }

    /// [`Store::clear`], calling `each` with every key it removes before
    /// any of them is gone, while no other write can happen (a server
    /// invalidates what its clients watch this way).
    pub fn clear_with(&self, mut each: impl FnMut(&[u8])) -> Result<u64> {
        self.live()?;
        let r = &*self.region;
        let _pin = self.heap.pin();
        let leaves = self.lock_all();
        let unlock_all = || leaves.iter().for_each(|l| l.unlock());
        let head = leaves.iter().find(|l| l.off == self.head).expect("the head leaf is always in the index").clone();
        // Every record with its key's hash (for the point cache).
        let mut recs: Vec<(u32, u64)> = Vec::new();
        let (mut bytes, mut expiring) = (0i64, 0i64);
        for l in &leaves {
            for i in leaf::live(leaf::bitmap(r, l.off)) {
                let rec = leaf::slot(r, l.off, i);
                let key = leaf::record_key(r, rec);
                each(key);
                bytes += leaf::record_lens(r, rec).map_or(0, |(k, v)| (k + v) as i64);
                expiring += i64::from(leaf::record_expires(r, rec));
                recs.push((leaf::key_hash(key), rec));
            }
        }
        if recs.is_empty() && leaves.len() == 1 {
            unlock_all();
            return Ok(0);
        }
        // Outer error: nothing was published; inner: published, but perhaps
        // not durable (the pool is then unusable, as after any failed drain).
        let published: Result<Result<()>> = if leaves.len() == 1 {
            // The head's bitmap is the single 8-byte publish.
            leaf::publish_bitmap(r, head.off, 0);
            Ok(r.drain().map_err(Error::from))
        } else {
            let ops = [encode_set(leaf::bitmap_off(head.off), 0), encode_set(leaf::next_off(head.off), 0)];
            let _g = self.log_lock.lock();
            match self.log.append_commit(&ops) {
                Ok(seq) => {
                    leaf::publish_bitmap(r, head.off, 0);
                    leaf::publish_next(r, head.off, 0);
                    Ok(self.log.checkpoint(seq).map_err(Error::from))
                }
                Err(e) => Err(e.into()),
            }
        };
        let durable = match published {
            Err(e) => {
                unlock_all();
                return Err(e);
            }
            Ok(d) => d,
        };
        // Published (in memory at least): the volatile state follows, and
        // the leaves unlock only when no reader can find an old key.
        // The head's free slots hold stale offsets now.
        head.set_safe(0);
        for &(h, rec) in &recs {
            self.hot.replace(h, Some(rec), None);
        }
        self.index.reset(head.clone());
        for l in leaves.iter().filter(|l| l.off != self.head) {
            l.kill();
        }
        let n = recs.len() as u64;
        self.keys.fetch_sub(n as i64, Ordering::Relaxed);
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
        self.expiring.fetch_sub(expiring, Ordering::Relaxed);
        unlock_all();
        durable?;
        // Records and leaves may still be read by pinned readers (a reader
        // that routed to a leaf before the reset reads it, then finds it
        // dead): both wait for them, as after a merge.
        for (_, rec) in recs {
            let _ = self.heap.retire(rec);
        }
        for l in leaves.iter().filter(|l| l.off != self.head) {
            let _ = self.heap.retire(l.off);
        }
        Ok(n)
    }

    /// Lock every leaf, in address order; returns them in that order. The
    /// set is the index's at the moment all locks are held: no split or
    /// unlink can change it then (each needs a lock held here).
    fn lock_all(&self) -> Vec<Arc<LeafRef>> {
        loop {
            let snap = self.index.load_full();
            let mut entries = Vec::new();
            snap.collect(&mut entries);
            let mut leaves: Vec<Arc<LeafRef>> = entries.into_iter().map(|(_, l)| l).collect();
            leaves.sort_by_key(|l| l.off);
            for l in &leaves {
                l.lock();
            }
            if self.index.is_current(&snap) && !leaves.iter().any(|l| l.is_dead()) {
                return leaves;
            }
            leaves.iter().for_each(|l| l.unlock());
        }
    }
}
