//! # daxkv-tests
//!
//! The crash-recovery suite (seeded workloads, the crash explorer over the
//! simulator with nested crashes in recovery, the mutation score, kill
//! torture) and behaviour tests by topic (in `tests/`). The `daxkv-crash`
//! binary runs the suite in quick or full mode and replays failures.
#![forbid(unsafe_code)]

pub mod explore;
pub mod mutants;
pub mod torture;
pub mod workload;
