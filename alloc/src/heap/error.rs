//! Errors of the persistent allocator.

use crate::error::DrainError;

/// An allocation or free that could not be done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AllocError {
    /// No free space for the request. Frees work, and later allocations
    /// succeed once space is freed.
    #[error("pool full: no room for {requested} bytes (largest free extent {largest_free} bytes)")]
    PoolFull {
        /// Bytes asked for.
        requested: u64,
        /// Largest contiguous free extent, in bytes.
        largest_free: u64,
    },
    /// New page descriptors could not be made durable (the backend's
    /// drain failed: msync reported an I/O error). Nothing was handed out.
    #[error("allocation failed: {0}")]
    Drain(String),
    /// An offset given to `free` is not a live block of this heap.
    #[error("invalid free of offset {offset}: {why}")]
    InvalidFree {
        /// The offset.
        offset: u64,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// A heap that could not be formatted, opened or recovered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HeapError {
    /// The area cannot hold even one slab.
    #[error("heap area of {len} bytes is too small")]
    TooSmall {
        /// Bytes offered.
        len: u64,
    },
    /// The heap header does not match what was expected.
    #[error("heap header: {what}")]
    BadHeader {
        /// What was found.
        what: String,
    },
    /// Persistent heap metadata contradicts itself or the reachable set.
    #[error("heap metadata corrupt at offset {offset}: {why}")]
    Corrupt {
        /// Region offset of the offending descriptor or block.
        offset: u64,
        /// What was found.
        why: String,
    },
    /// A grow asked for too small an area: the heap's new pages and
    /// metadata must lie past everything it uses now.
    #[error("an area of {len} bytes is too small to grow the heap into; it needs at least {needed}")]
    GrowTooSmall {
        /// Bytes offered.
        len: u64,
        /// The smallest area that works.
        needed: u64,
    },
    /// Saving state at close could not be made durable.
    #[error(transparent)]
    Drain(#[from] DrainError),
}
