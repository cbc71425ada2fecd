//! # daxkv-log
//!
//! The transactional redo log of daxkv, kept in the pool's log area and
//! written only through `daxkv_alloc::Region`. It knows nothing of the
//! B-tree: it stores and returns opaque operations. (Under construction:
//! see the project's issue "Transactional redo log with group commit".)
#![forbid(unsafe_code)]
