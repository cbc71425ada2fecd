//! Errors of the region layer: opening, locking and mapping a pool.

use std::io;
use std::path::PathBuf;

/// Why a pool file or device could not be opened and mapped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Another process (or another handle in this one) holds the pool's lock.
    #[error("{path}: pool is locked by another process")]
    Locked {
        /// The pool's path.
        path: PathBuf,
    },
    /// The path names a directory, not a file or DAX device.
    #[error("{path}: is a directory, not a pool file")]
    IsDirectory {
        /// The path given.
        path: PathBuf,
    },
    /// The path does not exist and creation was not asked for.
    #[error("{path}: no such pool file")]
    NotFound {
        /// The path given.
        path: PathBuf,
    },
    /// The pool was to be created, but the directory it names does not
    /// exist.
    #[error("{path}: cannot create the pool: no such directory")]
    NoDirectory {
        /// The path given.
        path: PathBuf,
    },
    /// The file cannot be read and written by this process.
    #[error("{path}: permission denied (a pool must be readable and writable)")]
    PermissionDenied {
        /// The path given.
        path: PathBuf,
    },
    /// The file is smaller than the smallest pool, or than the size asked for.
    #[error("{path}: {found} bytes is too small for a pool (need at least {needed})")]
    TooSmall {
        /// The path given.
        path: PathBuf,
        /// The file's size in bytes.
        found: u64,
        /// The smallest size accepted.
        needed: u64,
    },
    /// The requested size does not fit the address space or the file system.
    #[error("{path}: cannot size the pool to {size} bytes: {source}")]
    Size {
        /// The path given.
        path: PathBuf,
        /// The size asked for.
        size: u64,
        /// What the system said.
        source: io::Error,
    },
    /// A persistence backend was asked for that this build or file cannot use.
    #[error("persistence backend {backend}: {why}")]
    Backend {
        /// The backend's name.
        backend: &'static str,
        /// Why it cannot be used.
        why: String,
    },
    /// An unrecognised value in a `DAXKV_*` environment variable.
    #[error("environment variable {var}={value}: {why}")]
    Env {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// Any other I/O failure, with the operation that failed.
    #[error("{path}: {op}: {source}")]
    Io {
        /// The path given.
        path: PathBuf,
        /// The operation that failed (open, flock, mmap, ...).
        op: &'static str,
        /// What the system said.
        source: io::Error,
    },
}

impl OpenError {
    pub(crate) fn io(path: &std::path::Path, op: &'static str, source: io::Error) -> Self {
        let path = path.to_path_buf();
        match source.kind() {
            io::ErrorKind::NotFound => OpenError::NotFound { path },
            io::ErrorKind::PermissionDenied => OpenError::PermissionDenied { path },
            io::ErrorKind::IsADirectory => OpenError::IsDirectory { path },
            _ => OpenError::Io { path, op, source },
        }
    }
}

/// An access outside the region's bounds or with a misaligned address: a bug
/// in the caller or a corrupted offset read from media. Accessors that take
/// offsets read from media return this instead of panicking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("access of {len} bytes at offset {offset} is outside the region of {region_len} bytes or misaligned")]
pub struct BoundsError {
    /// The offset asked for.
    pub offset: u64,
    /// The length asked for.
    pub len: u64,
    /// The region's length.
    pub region_len: u64,
}

/// A drain could not make data durable (only the `msync` backend can fail:
/// the kernel reported an I/O error writing dirty pages). Nothing may be
/// acknowledged as durable after this; the pages stay marked and the next
/// drain tries again.
#[derive(Debug, thiserror::Error)]
#[error("drain failed, data is not known to be durable: {0}")]
pub struct DrainError(#[source] pub std::io::Error);
