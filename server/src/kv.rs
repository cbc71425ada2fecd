//! What the string commands read and write through: either a store
//! transaction ([`daxkv::Tx`], for MULTI/EXEC and for read-modify-write
//! commands) or a connection's pending write batch over the store
//! ([`Batch`], for plain reads and blind writes of a pipeline).

use crate::shared::WatchTable;
use daxkv::{Error, MAX_KEY, MAX_VALUE, Store, Tx};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Key-value access, as the commands see it. Expiries are milliseconds
/// since the Unix epoch (`None`: never); a key whose expiry has passed is
/// absent.
pub trait Kv {
    /// The value of `key`, with this context's own pending writes applied.
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, Error>;
    /// When `key` expires: `None` if it is absent, `Some(None)` if never.
    fn expiry(&mut self, key: &[u8]) -> Result<Option<Option<u64>>, Error>;
    /// Set `key` to `value`, to expire at `expires`.
    fn put_with_expiry(&mut self, key: &[u8], value: &[u8], expires: Option<u64>) -> Result<(), Error>;
    /// Set `key` to `value`, with no expiry (SET, MSET, GETSET).
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), Error> {
        self.put_with_expiry(key, value, None)
    }
    /// Set `key` to `value`, keeping the expiry it has (INCR, APPEND,
    /// SETRANGE, SET ... KEEPTTL change a value, not its time to live).
    fn put_keeping_expiry(&mut self, key: &[u8], value: &[u8]) -> Result<(), Error> {
        let at = self.expiry(key)?.flatten();
        self.put_with_expiry(key, value, at)
    }
    /// Remove `key`; whether it was there.
    fn delete(&mut self, key: &[u8]) -> Result<bool, Error>;
    /// Call `f` with the value of `key` (as [`Kv::get`] sees it), borrowed
    /// where the context can lend it without a copy.
    fn with_value<R>(&mut self, key: &[u8], f: impl FnOnce(Option<&[u8]>) -> R) -> Result<R, Error> {
        Ok(f(self.get(key)?.as_deref()))
    }
}

/// A store transaction seen as [`Kv`]; its writes bump WATCH versions.
pub struct TxKv<'a, 'b> {
    /// The transaction.
    pub tx: &'a mut Tx<'b>,
    /// Versions to bump.
    pub watch: &'a WatchTable,
}

impl Kv for TxKv<'_, '_> {
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        if !storable(key) {
            return Ok(None);
        }
        self.tx.get(key)
    }
    fn expiry(&mut self, key: &[u8]) -> Result<Option<Option<u64>>, Error> {
        if !storable(key) {
            return Ok(None);
        }
        self.tx.expiry(key)
    }
    fn put_with_expiry(&mut self, key: &[u8], value: &[u8], expires: Option<u64>) -> Result<(), Error> {
        self.watch.touch(key);
        self.tx.put_with_expiry(key, value, expires)
    }
    fn delete(&mut self, key: &[u8]) -> Result<bool, Error> {
        if !storable(key) {
            return Ok(false);
        }
        // Deleting a missing key changes nothing, and does not disturb its
        // watchers (as in Redis); the read is validated at commit.
        let was = self.tx.get(key)?.is_some();
        if was {
            self.watch.touch(key);
            self.tx.delete(key)?;
        }
        Ok(was)
    }
}

/// Whether the store can hold `key` at all; a key it cannot hold is
/// absent, which is how reads answer it (Redis allows the empty key).
pub fn storable(key: &[u8]) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY
}

/// The same checks the store makes, done before a write is queued so that a
/// bad key or value is answered on its own command rather than failing the
/// whole batch.
pub fn check_write(key: &[u8], value: Option<&[u8]>) -> Result<(), Error> {
    if key.is_empty() {
        return Err(Error::EmptyKey);
    }
    if key.len() > MAX_KEY {
        return Err(Error::KeyTooLarge { len: key.len(), max: MAX_KEY });
    }
    if let Some(v) = value
        && v.len() > MAX_VALUE
    {
        return Err(Error::ValueTooLarge { len: v.len(), max: MAX_VALUE });
    }
    Ok(())
}

/// Writes not yet committed, gathered from every connection of an event
/// loop (group commit), with an index of their keys so that later reads see
/// them. Keys and values are copied once, into one growing arena; the
/// index maps a hash of the key to the latest op with that hash, and each
/// op links to the previous op with the same hash.
#[derive(Default)]
pub struct Batch {
    data: Vec<u8>,
    ops: Vec<Op>,
    index: HashMap<u64, u32, BuildHasherDefault<KeyHash>>,
    /// Key and value bytes queued.
    pub bytes: usize,
}

/// A queued put or delete: its key and value as ranges of the arena.
struct Op {
    key: (usize, usize),
    /// `usize::MAX` length: a delete.
    value: (usize, usize),
    /// A put's expiry.
    expires: Option<u64>,
    /// The previous op whose key has the same hash (`u32::MAX`: none).
    prev: u32,
}

const NONE: u32 = u32::MAX;
const DELETE: usize = usize::MAX;

/// The hash is already a hash: use it as is.
#[derive(Default)]
pub struct KeyHash(u64);

impl Hasher for KeyHash {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _: &[u8]) {
        unreachable!("KeyHash hashes u64 only")
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A fast 64-bit hash of a key (FxHash-style over 8-byte words, then
/// mixed), for the batch index only.
fn key_hash(key: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h = key.len() as u64;
    let mut chunks = key.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        h = (h.rotate_left(5) ^ w).wrapping_mul(K);
    }
    let mut last = [0u8; 8];
    let rest = chunks.remainder();
    last[..rest.len()].copy_from_slice(rest);
    h = (h.rotate_left(5) ^ u64::from_le_bytes(last)).wrapping_mul(K);
    h ^ (h >> 29)
}

impl Batch {
    fn slice(&self, (at, len): (usize, usize)) -> &[u8] {
        &self.data[at..at + len]
    }

    fn value(&self, op: &Op) -> Option<&[u8]> {
        (op.value.1 != DELETE).then(|| self.slice(op.value))
    }

    /// Queue a put or delete.
    pub fn push(&mut self, key: &[u8], value: Option<&[u8]>) {
        self.push_with_expiry(key, value, None);
    }

    /// Queue a put that expires at `expires`, or a delete.
    pub fn push_with_expiry(&mut self, key: &[u8], value: Option<&[u8]>, expires: Option<u64>) {
        self.bytes += key.len() + value.map_or(0, <[u8]>::len);
        let h = key_hash(key);
        let n = self.ops.len() as u32;
        let prev = self.index.insert(h, n).unwrap_or(NONE);
        let k = (self.data.len(), key.len());
        self.data.extend_from_slice(key);
        let v = match value {
            Some(v) => {
                let at = self.data.len();
                self.data.extend_from_slice(v);
                (at, v.len())
            }
            None => (0, DELETE),
        };
        self.ops.push(Op { key: k, value: v, expires, prev });
    }

    /// The pending value of `key` and its expiry: `None` if not pending,
    /// `Some(None)` if a pending delete (or a put that has expired since).
    pub fn pending(&self, key: &[u8]) -> Option<Option<(&[u8], Option<u64>)>> {
        if self.ops.is_empty() {
            return None;
        }
        let mut i = *self.index.get(&key_hash(key))?;
        while i != NONE {
            let op = &self.ops[i as usize];
            if self.slice(op.key) == key {
                let alive = op.expires.is_none_or(|at| at > crate::cmd::generic::now_ms() as u64);
                return Some(self.value(op).filter(|_| alive).map(|v| (v, op.expires)));
            }
            i = op.prev;
        }
        None
    }

    /// Operations queued.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Nothing queued.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The queued operations, in order: key, value (`None`: delete) and
    /// expiry.
    pub fn iter(&self) -> impl Iterator<Item = daxkv::ExpiringWrite<'_>> {
        self.ops.iter().map(|op| (self.slice(op.key), self.value(op), op.expires))
    }

    /// Forget everything queued.
    pub fn clear(&mut self) {
        self.ops.clear();
        self.index.clear();
        self.data.clear();
        self.bytes = 0;
        if self.data.capacity() > KEEP_ARENA {
            self.data = Vec::new();
        }
    }

    /// Commit everything queued with one store commit (all or nothing, one
    /// drain sequence), then forget it. The keys and values go from the
    /// arena straight into the pool (`Store::write_batch_ref`, no copies).
    /// A batch the log cannot hold in one entry is committed one operation
    /// at a time.
    pub fn commit(&mut self, store: &Store) -> Result<(), Error> {
        let ops: Vec<daxkv::ExpiringWrite> = self.iter().collect();
        let res = store.write_batch_with_expiry(&ops);
        let res = match res {
            Err(Error::TooLarge(_)) if self.ops.len() > 1 => self.iter().try_for_each(|(k, v, at)| match v {
                Some(v) => store.put_with_expiry(k, v, at),
                None => store.delete(k).map(drop),
            }),
            r => r,
        };
        self.clear();
        res
    }
}

/// An arena larger than this is freed after a commit.
const KEEP_ARENA: usize = 16 << 20;

/// A [`Batch`] over the store: reads see the batch, then the store; writes
/// join the batch.
pub struct Batched<'a> {
    /// The store read from.
    pub store: &'a Store,
    /// Where writes go.
    pub batch: &'a mut Batch,
    /// Versions to bump.
    pub watch: &'a WatchTable,
    /// Set when a read was answered from the batch (a write not yet
    /// durable): that reply must become an error if the commit fails.
    pub saw_pending: bool,
}

impl Kv for Batched<'_> {
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        self.with_value(key, |v| v.map(<[u8]>::to_vec))
    }
    fn with_value<R>(&mut self, key: &[u8], f: impl FnOnce(Option<&[u8]>) -> R) -> Result<R, Error> {
        if !storable(key) {
            return Ok(f(None));
        }
        if let Some(v) = self.batch.pending(key) {
            self.saw_pending = true;
            return Ok(f(v.map(|(v, _)| v)));
        }
        match self.store.get_ref(key)? {
            Some(v) => Ok(f(Some(&v))),
            None => Ok(f(None)),
        }
    }
    fn expiry(&mut self, key: &[u8]) -> Result<Option<Option<u64>>, Error> {
        if !storable(key) {
            return Ok(None);
        }
        if let Some(v) = self.batch.pending(key) {
            self.saw_pending = true;
            return Ok(v.map(|(_, at)| at));
        }
        self.store.expiry(key)
    }
    fn put_with_expiry(&mut self, key: &[u8], value: &[u8], expires: Option<u64>) -> Result<(), Error> {
        check_write(key, Some(value))?;
        self.watch.touch(key);
        self.batch.push_with_expiry(key, Some(value), expires);
        Ok(())
    }
    fn delete(&mut self, key: &[u8]) -> Result<bool, Error> {
        if !storable(key) {
            return Ok(false);
        }
        // Deleting a missing key changes nothing (see `TxKv::delete`).
        let was = self.with_value(key, |v| v.is_some())?;
        if was {
            self.watch.touch(key);
            self.batch.push(key, None);
        }
        Ok(was)
    }
}
