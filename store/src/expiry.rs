//! Keys that expire: reading and changing a key's expiry, and removing
//! expired keys.
//!
//! A record may end with an expiry, in milliseconds since the Unix epoch
//! (see `leaf`). Once the clock passes it, every read treats the key as
//! absent; the record stays where it is until a write replaces or deletes
//! the key, or [`Store::purge_expired`] removes it.

use crate::error::Result;
use crate::leaf;
use crate::store::{Store, check_key};
use std::ops::Bound;

/// What one call of [`Store::purge_expired`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Purged {
    /// Keys looked at (expired or not).
    pub examined: u64,
    /// Expired keys removed.
    pub removed: u64,
    /// Where the next call should start; `None` once the end of the keys
    /// was reached.
    pub next: Option<Vec<u8>>,
}

impl Store {
    /// When `key` expires, in milliseconds since the Unix epoch:
    /// `Ok(None)` if the key is absent (or has expired), `Ok(Some(None))`
    /// if it never expires.
    pub fn expiry(&self, key: &[u8]) -> Result<Option<Option<u64>>> {
        check_key(key)?;
        self.live()?;
        let _pin = self.heap.pin();
        let r = &*self.region;
        Ok(self.read(key, |rec| rec.map(|rec| leaf::record_expiry(r, rec))))
    }

    /// Make `key` expire at `expires` (milliseconds since the Unix epoch;
    /// `None`: never), keeping its value. Returns whether the key was
    /// present. The record is rewritten with the new expiry, atomically
    /// and durably. A time already past leaves the key absent.
    pub fn set_expiry(&self, key: &[u8], expires: Option<u64>) -> Result<bool> {
        self.transaction(|tx| match tx.get(key)? {
            Some(v) => tx.put_with_expiry(key, &v, expires).map(|()| true),
            None => Ok(false),
        })
    }

    /// Remove expired keys from `from` on, in key order, looking at up to
    /// `max` keys (at least one). Call it again from [`Purged::next`] to go
    /// on; from the empty key to start over. Each removal is a delete of
    /// its own, durable when this returns, and a key written again
    /// meanwhile is left alone.
    pub fn purge_expired(&self, from: &[u8], max: usize) -> Result<Purged> {
        self.live()?;
        let mut out = Purged::default();
        let mut expired = Vec::new();
        {
            let r = &*self.region;
            let mut it = self.range::<&[u8]>((Bound::Included(from), Bound::Unbounded));
            while let Some(rec) = it.next_record() {
                let key = leaf::record_key(r, rec);
                if out.examined == max.max(1) as u64 {
                    out.next = Some(key.to_vec());
                    break;
                }
                out.examined += 1;
                if !leaf::record_alive(r, rec) {
                    expired.push(key.to_vec());
                }
            }
        }
        for key in expired {
            let h = leaf::key_hash(&key);
            let l = self.lock_leaf(&key);
            if self.delete_locked(l, &key, h, true)?.is_some() {
                out.removed += 1;
            }
        }
        Ok(out)
    }
}
