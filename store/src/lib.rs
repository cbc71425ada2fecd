//! # daxkv
//!
//! A persistent key-value store for byte-addressable persistent memory. One
//! pool file is one store: an ordered B+-tree of byte keys (1 B .. 16 KiB)
//! and values (0 .. 64 MiB) whose leaves and records live in the pool, over
//! a redo log (`daxkv-log`) and a persistent allocator and flush layer
//! (`daxkv-alloc`). Every write that returns `Ok` is durable under the
//! pool's persistence backend (see [`Persistence`]). Gets look in a
//! volatile point cache (key hash → record; [`Options::point_cache`])
//! before the tree; it is rebuilt by use after every open. A key may be
//! given an expiry ([`Store::put_with_expiry`]): once it passes, the key
//! is absent to every read, until [`Store::purge_expired`] or a write
//! removes its record. A pool that is not open can be made bigger in
//! place, crash-safely ([`Store::grow`]); writes to a full pool fail with
//! [`Error::PoolFull`] until then.
//!
//! ```
//! use daxkv::{Options, Store};
//! let dir = std::env::temp_dir().join(format!("daxkv-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let path = dir.join("example.pool");
//! let opts = Options::new().pool_size(16 << 20).create_if_missing(true);
//! let store = Store::open(&path, &opts).unwrap();
//! store.put(b"apple", b"red").unwrap();
//! store.put(b"banana", b"yellow").unwrap();
//! assert_eq!(store.get(b"apple").unwrap().as_deref(), Some(&b"red"[..]));
//! let keys: Vec<Vec<u8>> = store.iter().map(|kv| kv.unwrap().0).collect();
//! assert_eq!(keys, vec![b"apple".to_vec(), b"banana".to_vec()]);
//! store.transaction(|tx| {
//!     let v = tx.get(b"apple")?.unwrap_or_default();
//!     tx.put(b"cherry", &v)?;
//!     tx.delete(b"banana")?;
//!     Ok(())
//! }).unwrap();
//! store.close().unwrap();
//! let grown = Store::grow(&path, 32 << 20, &opts).unwrap();
//! assert!(grown.new_heap_bytes > grown.old_heap_bytes);
//! let store = Store::open(&path, &opts).unwrap();
//! assert!(store.stats().opened_clean);
//! assert_eq!((store.len(), store.stats().pool_size), (2, 32 << 20));
//! # drop(store); std::fs::remove_dir_all(&dir).unwrap();
//! ```
#![forbid(unsafe_code)]

// Under `--cfg loom` only the version-lock protocol is built, for its model.
#[cfg(not(loom))]
mod check;
#[cfg(not(loom))]
mod clear;
#[cfg(not(loom))]
mod error;
#[cfg(not(loom))]
mod expiry;
#[cfg(not(loom))]
mod format;
#[cfg(not(loom))]
mod grow;
#[allow(dead_code)]
mod hot;
#[allow(dead_code)]
mod index;
#[cfg(not(loom))]
mod iter;
#[cfg(not(loom))]
mod leaf;
#[cfg(not(loom))]
mod local;
#[cfg(not(loom))]
mod options;
#[cfg(not(loom))]
mod recovery;
#[cfg(all(test, not(loom)))]
mod retire_tests;
#[cfg(not(loom))]
mod salvage;
#[cfg(not(loom))]
mod store;
mod sync;
#[cfg(not(loom))]
mod tx;
#[cfg(not(loom))]
mod view;

#[cfg(not(loom))]
pub use daxkv_alloc::{Backend, OpenError, PersistInfo, PersistOptions, Persistence, Region, RegionOptions};
#[cfg(not(loom))]
pub use daxkv_log::GroupCommitOptions;
#[cfg(not(loom))]
pub use error::{Error, PoolError, Result};
#[cfg(not(loom))]
pub use expiry::Purged;
#[cfg(not(loom))]
pub use grow::Grown;
#[cfg(not(loom))]
pub use iter::Iter;
#[cfg(not(loom))]
pub use options::Options;
#[cfg(not(loom))]
pub use recovery::leaf_chain;
#[cfg(not(loom))]
pub use salvage::{SalvageError, SalvageReport, salvage, salvage_region};
#[cfg(not(loom))]
pub use store::{CheckReport, MAX_KEY, MAX_VALUE, MIN_POOL, Stats, Store, ValueRef};
#[cfg(not(loom))]
pub use tx::{ExpiringWrite, Tx};
