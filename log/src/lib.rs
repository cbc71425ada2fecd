//! # daxkv-log
//!
//! The transactional redo log of daxkv, kept in an area of the pool and
//! written only through [`daxkv_alloc::Region`]. It knows nothing of the
//! B-tree: an entry is a list of opaque operations (byte strings), which the
//! owner encodes and applies.
//!
//! ## Contract
//!
//! - [`Log::append`] writes an entry and returns its sequence number
//!   (1, 2, 3, … with no gaps). [`Log::commit`] returns once that entry and
//!   every earlier one is durable. Concurrent committers share drains
//!   (group commit): one of them drains for all.
//! - An entry is one record: header (sequence number, generation, length),
//!   operations, and a CRC-32C over all of it, written with one
//!   flushcache copy; the drain that commits it is the only barrier it
//!   needs. After a crash, an entry whose `commit` returned is recovered
//!   whole; an entry whose commit was in progress is recovered whole or not
//!   at all; no entry is recovered in part.
//! - [`Log::open`] returns the committed entries after the last
//!   checkpoint, in order ([`Recovery`]), and how the scan ended
//!   ([`ScanEnd`]): cleanly, at a torn record (a crash during a commit), or
//!   at damage, after which nothing is returned.
//! - **Applying is the owner's, and must be idempotent.** After a crash,
//!   recovery returns every entry after the last durable checkpoint, so an
//!   entry applied before the crash, but not checkpointed, is returned again
//!   and applied again. The owner's operations must give the same state
//!   when applied twice (write absolute values: "key k is v", not "add 1").
//! - [`Log::checkpoint`]`(seq)` declares entries up to `seq` applied; the
//!   owner's writes must be in the region (copied or flushed) when it is
//!   called; the log drains them, publishes the checkpoint, and reuses the
//!   space.
//! - A full log makes [`Log::append`] wait until a checkpoint frees space
//!   (never fail); [`Log::try_append`] returns [`LogError::Full`] instead.
//!   An entry larger than the ring is [`LogError::TooLarge`].
//!
//! The on-media layout is drawn in the `format` module's source.
//!
//! Group commit relies on one property of the persistence layer: a drain
//! makes durable what other threads copied or flushed before it, when
//! their copies happen-before the drain (here through the log's lock). The
//! simulator models exactly that. On x86 an appender publishes its entry
//! with a locked read-modify-write, which orders its earlier CLWB and
//! non-temporal stores before it, and the leader drains after seeing it.
//!
//! ```
//! use daxkv_alloc::{PersistOptions, Region};
//! use daxkv_log::Log;
//! use std::sync::Arc;
//!
//! let region = Arc::new(Region::anonymous(1 << 20, &PersistOptions::default()).unwrap());
//! let log = Log::create(region.clone(), 4096, 64 * 1024).unwrap();
//! let seq = log.append(&[b"put a 1".as_slice(), b"put b 2".as_slice()]).unwrap();
//! log.commit(seq).unwrap();
//! drop(log);
//!
//! let (log, recovered) = Log::open(region, 4096, 64 * 1024).unwrap();
//! let entries: Vec<_> = recovered.collect();
//! assert_eq!(entries.len(), 1);
//! assert_eq!(entries[0].ops, vec![b"put a 1".to_vec(), b"put b 2".to_vec()]);
//! // ... apply them (idempotently), make that durable, then:
//! log.checkpoint(entries[0].seq).unwrap();
//! ```
#![forbid(unsafe_code)]

#[cfg(not(loom))]
mod error;
#[cfg(not(loom))]
mod format;
#[cfg(not(loom))]
mod log;
#[cfg(not(loom))]
mod recovery;
mod sync;

/// The group-commit protocol, public under `--cfg loom` for its model.
#[cfg(loom)]
pub mod group;
#[cfg(not(loom))]
mod group;

#[cfg(not(loom))]
pub use error::LogError;
#[cfg(not(loom))]
pub use format::{FORMAT_VERSION, HEADER_LEN, MIN_RECORD, SlotFault};
#[cfg(not(loom))]
pub use log::{GroupCommitOptions, Log, LogStats};
#[cfg(not(loom))]
pub use recovery::{Entry, Found, MIN_AREA, Recovery, ScanEnd};
