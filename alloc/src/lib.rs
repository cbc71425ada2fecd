//! # daxkv-alloc
//!
//! The bottom layer of daxkv: it maps a pool (a file on a DAX file system, a
//! device-DAX node, an ordinary file, or anonymous memory), and is the only
//! place that issues cache flushes and fences. Everything above writes the
//! pool through [`Region`], whose persistence contract is three primitives:
//!
//! | call | meaning |
//! |---|---|
//! | [`Region::copy_nodrain`] | copy into the pool so that a later drain makes it durable |
//! | [`Region::flush`] | start write-back of every cache line touched by a range |
//! | [`Region::drain`] | everything flushed or copied before is durable after it |
//!
//! and one rule: a payload is durable before the pointer that makes it
//! reachable is published with one aligned 8-byte store
//! ([`Region::store_u64`]), itself flushed and drained before the operation
//! is acknowledged.
//!
//! Backends ([`Backend`]) are chosen at open by probing (`MAP_SYNC` accepted
//! → `pmem`, tmpfs → `volatile`, otherwise `msync`) or forced by option or
//! `DAXKV_PERSISTENCE`. With the `sim` feature, [`Region::sim`] runs the crash
//! simulator ([`sim`]), which tracks what could be lost at every drain.
//!
//! ```
//! use daxkv_alloc::{Backend, PersistOptions, Region};
//! // Anonymous memory with the pmem backend forced: real clwb + sfence.
//! let opts = PersistOptions::default().with_backend(Backend::Pmem);
//! # if cfg!(not(target_arch = "x86_64")) { return; }
//! let r = Region::anonymous(1 << 20, &opts).unwrap();
//! r.copy_nodrain(4096, &[7u8; 1000]); // payload
//! r.drain().unwrap();                 // durable
//! r.store_u64(0, 4096);               // publish the pointer to it
//! r.persist(0, 8).unwrap();           // durable, may be acknowledged
//! assert_eq!(r.load_u64(0), 4096);
//! ```

mod atomics;
mod error;
mod heap;
mod map;
mod persist;
mod region;
mod search;
mod sync;

#[cfg(feature = "sim")]
pub mod sim;

pub use atomics::ZeroedWords;
pub use error::{BoundsError, DrainError, OpenError};
pub use heap::api::{ClassStats, Heap, HeapStats};
pub use heap::cache::Guard;
pub use heap::classes::{CLASS_SIZES, MAX_SMALL, PAGE, block_size_for};
pub use heap::error::{AllocError, HeapError};
pub use heap::grow::GrowPlan;
pub use persist::backend::{
    Backend, CopyIsa, DEFAULT_MOVNT_THRESHOLD, FlushInstr, PersistInfo, PersistOptions, Persistence, available_flushes,
};
pub use region::{Region, RegionOptions};
pub use search::count_less;
