//! What the string commands read and write through: either a store
//! transaction ([`daxkv::Tx`], for MULTI/EXEC and for read-modify-write
//! commands) or a connection's pending write batch over the store
//! ([`Batch`], for plain reads and blind writes of a pipeline).

use crate::shared::WatchTable;
use daxkv::{Error, MAX_KEY, MAX_VALUE, Store, Tx};
use std::collections::HashMap;

/// Key-value access, as the commands see it.
pub trait Kv {
    /// The value of `key`, with this context's own pending writes applied.
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, Error>;
    /// Set `key` to `value`.
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), Error>;
    /// Remove `key`; whether it was there.
    fn delete(&mut self, key: &[u8]) -> Result<bool, Error>;
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
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), Error> {
        self.watch.touch(key);
        self.tx.put(key, value)
    }
    fn delete(&mut self, key: &[u8]) -> Result<bool, Error> {
        if !storable(key) {
            return Ok(false);
        }
        self.watch.touch(key);
        self.tx.delete(key)
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

/// A connection's writes not yet committed, and an index of their keys so
/// that later reads of the same pipeline see them.
#[derive(Default)]
pub struct Batch {
    /// Puts (`Some`) and deletes (`None`) in command order.
    pub ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Key → index of its latest op in `ops`.
    index: HashMap<Vec<u8>, usize>,
    /// Key and value bytes queued.
    pub bytes: usize,
}

impl Batch {
    /// Queue a put or delete.
    pub fn push(&mut self, key: &[u8], value: Option<&[u8]>) {
        self.bytes += key.len() + value.map_or(0, <[u8]>::len);
        self.index.insert(key.to_vec(), self.ops.len());
        self.ops.push((key.to_vec(), value.map(<[u8]>::to_vec)));
    }

    /// The pending value of `key`: `None` if not pending, `Some(None)` if a
    /// pending delete.
    pub fn pending(&self, key: &[u8]) -> Option<Option<&[u8]>> {
        if self.ops.is_empty() {
            return None;
        }
        self.index.get(key).map(|&i| self.ops[i].1.as_deref())
    }

    /// Nothing queued.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Forget everything queued.
    pub fn clear(&mut self) {
        self.ops.clear();
        self.index.clear();
        self.bytes = 0;
    }

    /// Commit everything queued as one `write_batch` (one drain). A batch
    /// the log cannot hold in one entry is committed one operation at a
    /// time instead.
    ///
    /// Today's store refuses a batch of more than 64 new keys that land in
    /// one leaf holding fewer than two keys (it cannot split such a leaf),
    /// so batches go in chunks of [`STORE_BATCH_CHUNK`] operations.
    pub fn commit(&mut self, store: &Store) -> Result<(), Error> {
        let mut res = Ok(());
        for chunk in self.ops.chunks(STORE_BATCH_CHUNK) {
            res = match store.write_batch(chunk) {
                Err(Error::TooLarge(_)) if chunk.len() > 1 => {
                    chunk.iter().try_for_each(|op| store.write_batch(std::slice::from_ref(op)))
                }
                r => r,
            };
            if res.is_err() {
                break;
            }
        }
        self.clear();
        res
    }
}

/// Most operations given to one `write_batch`.
pub const STORE_BATCH_CHUNK: usize = 32;

/// A [`Batch`] over the store: reads see the batch, then the store; writes
/// join the batch.
pub struct Batched<'a> {
    /// The store read from.
    pub store: &'a Store,
    /// Where writes go.
    pub batch: &'a mut Batch,
    /// Versions to bump.
    pub watch: &'a WatchTable,
}

impl Kv for Batched<'_> {
    fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        if !storable(key) {
            return Ok(None);
        }
        match self.batch.pending(key) {
            Some(v) => Ok(v.map(<[u8]>::to_vec)),
            None => self.store.get(key),
        }
    }
    fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), Error> {
        check_write(key, Some(value))?;
        self.watch.touch(key);
        self.batch.push(key, Some(value));
        Ok(())
    }
    fn delete(&mut self, key: &[u8]) -> Result<bool, Error> {
        if !storable(key) {
            return Ok(false);
        }
        let was = self.get(key)?.is_some();
        self.watch.touch(key);
        self.batch.push(key, None);
        Ok(was)
    }
}
