//! Errors of the store.

use daxkv_alloc::{AllocError, DrainError, HeapError, OpenError};
use daxkv_log::LogError;
use std::path::PathBuf;

/// Why a pool could not be created or opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// Mapping, locking or sizing the file failed.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// Neither superblock carries daxkv's magic: not a daxkv pool.
    #[error("{path}: not a daxkv pool (found {found:02x?} where the magic should be)")]
    NotAPool {
        /// The pool's path.
        path: PathBuf,
        /// The first bytes of the file.
        found: Vec<u8>,
    },
    /// The pool was written by another format version.
    #[error("{path}: pool format version {found}, this build reads version {expected}")]
    WrongVersion {
        /// The pool's path.
        path: PathBuf,
        /// Version on media.
        found: u32,
        /// Version this build reads.
        expected: u32,
    },
    /// The file is shorter than the pool its superblock describes.
    #[error("{path}: truncated: superblock says {expected} bytes, the file has {found}")]
    Truncated {
        /// The pool's path.
        path: PathBuf,
        /// Size recorded in the superblock.
        expected: u64,
        /// Size of the file.
        found: u64,
    },
    /// Both superblocks are damaged (or their contents are impossible).
    #[error("{path}: both superblocks are damaged: {why}")]
    BadSuperblock {
        /// The pool's path.
        path: PathBuf,
        /// What was found.
        why: String,
    },
    /// Metadata on media contradicts itself.
    #[error("pool corrupt at offset {offset}: {why}")]
    Corrupt {
        /// Region offset of the damage.
        offset: u64,
        /// What was found.
        why: String,
    },
    /// [`crate::Store::check`] found problems at an open with
    /// [`crate::Options::verify`] set; the pool was not written to after a
    /// clean close (after a crash, recovery ran first).
    #[error("{path}: check found {} problem(s) at open, first: {}", problems.len(), problems.first().map_or("", |p| p.as_str()))]
    Damaged {
        /// The pool's path.
        path: PathBuf,
        /// What the check found (see [`crate::CheckReport`]).
        problems: Vec<String>,
    },
    /// The heap could not be opened or recovered.
    #[error(transparent)]
    Heap(#[from] HeapError),
    /// The log could not be opened or replayed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// Options that cannot work (too small a pool, a log larger than it...).
    #[error("invalid options: {0}")]
    Options(String),
    /// A write needed to open could not be made durable.
    #[error(transparent)]
    Drain(#[from] DrainError),
}

/// Why an operation on an open store failed. Nothing committed is lost by
/// any of these; the store stays usable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key is empty.
    #[error("empty key")]
    EmptyKey,
    /// The key is longer than [`crate::MAX_KEY`].
    #[error("key of {len} bytes is longer than the limit of {max}")]
    KeyTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The value is longer than [`crate::MAX_VALUE`].
    #[error("value of {len} bytes is longer than the limit of {max}")]
    ValueTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// No room in the pool. Reads, deletes and smaller writes keep working.
    #[error("pool full: {0}")]
    PoolFull(AllocError),
    /// A transaction did more than one commit can hold.
    #[error("transaction too large for the log: {0}")]
    TooLarge(LogError),
    /// A transaction kept conflicting with concurrent writers.
    #[error("transaction conflicted {attempts} times in a row; giving up")]
    Conflict {
        /// Attempts made.
        attempts: u32,
    },
    /// A write could not be made durable (msync reported an I/O error).
    #[error(transparent)]
    Drain(#[from] DrainError),
    /// The log failed.
    #[error(transparent)]
    Log(LogError),
    /// On-media data contradicts itself.
    #[error("pool corrupt at offset {offset}: {why}")]
    Corrupt {
        /// Region offset of the damage.
        offset: u64,
        /// What was found.
        why: String,
    },
    /// The store was closed.
    #[error("store is closed")]
    Closed,
}

impl From<AllocError> for Error {
    fn from(e: AllocError) -> Self {
        match e {
            AllocError::PoolFull { .. } => Error::PoolFull(e),
            AllocError::Drain(why) => Error::Drain(DrainError(std::io::Error::other(why))),
            other => Error::Corrupt { offset: 0, why: other.to_string() },
        }
    }
}

impl From<LogError> for Error {
    fn from(e: LogError) -> Self {
        match e {
            LogError::TooLarge { .. } => Error::TooLarge(e),
            other => Error::Log(other),
        }
    }
}

/// Result of store operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
