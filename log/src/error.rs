//! Errors of the log. A damaged entry met by recovery is not an error: it
//! ends the scan and is described by [`crate::ScanEnd`].

use crate::format::SlotFault;
use daxkv_alloc::{BoundsError, DrainError};

/// Why a log operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// The area given to `create` or `open` cannot hold a log.
    #[error("log area of {len} bytes at offset {base}: {why}")]
    Geometry {
        /// Offset of the area in the region.
        base: u64,
        /// Length of the area.
        len: u64,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The area lies outside the region.
    #[error("log area: {0}")]
    Bounds(#[from] BoundsError),
    /// Neither checkpoint slot holds a valid checkpoint: the area holds no
    /// log, or both copies are damaged.
    #[error("no valid log header at offset {offset}: slot 0: {first}; slot 1: {second}")]
    BadHeader {
        /// Offset of the area (and of slot 0) in the region.
        offset: u64,
        /// What was found in slot 0.
        first: SlotFault,
        /// What was found in slot 1.
        second: SlotFault,
    },
    /// An entry larger than the whole log can never be written.
    #[error("entry of {size} bytes does not fit a log of {capacity} bytes")]
    TooLarge {
        /// Bytes the entry needs (header, operations, checksum).
        size: u64,
        /// Bytes of the log's ring.
        capacity: u64,
    },
    /// `try_append` found no room: the owner must checkpoint first.
    #[error("log full: entry of {size} bytes, {free} bytes free before the next checkpoint")]
    Full {
        /// Bytes the entry needs.
        size: u64,
        /// Bytes free now.
        free: u64,
    },
    /// A sequence number that was never appended.
    #[error("sequence number {seq} has not been appended (next is {next})")]
    NotAppended {
        /// The sequence number given.
        seq: u64,
        /// The next sequence number `append` will return.
        next: u64,
    },
    /// A drain failed: nothing after the last successful commit is known to
    /// be durable. The next commit tries again.
    #[error(transparent)]
    Drain(#[from] DrainError),
}
