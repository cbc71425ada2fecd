//! # daxkv
//!
//! A persistent key-value store on DAX memory: pool format, B-tree index,
//! the embedded `Store` API and recovery, over `daxkv-log` and
//! `daxkv-alloc`. (Under construction: today it re-exports the persistence
//! layer it is built on.)
#![forbid(unsafe_code)]

pub use daxkv_alloc::{Backend, OpenError, PersistInfo, PersistOptions, Persistence, Region, RegionOptions};
