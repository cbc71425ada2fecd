//! The one place this crate takes its synchronization primitives from, so
//! that loom can stand in for std under `--cfg loom`. Poisoning is treated
//! as impossible: no code of this crate panics while holding a lock.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::{Condvar, Mutex, MutexGuard};

#[cfg(loom)]
pub(crate) use loom::hint::spin_loop;
/// Spins of a committer waiting for a leader's drain before it sleeps
/// (one under loom, to keep the model small while covering the path).
#[cfg(loom)]
pub(crate) const FOLLOWER_SPINS: u32 = 1;

#[cfg(not(loom))]
pub(crate) use std::hint::spin_loop;
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU64, Ordering};
/// Spins of a committer waiting for a leader's drain before it sleeps: a
/// drain takes a few hundred nanoseconds, a sleep and wake-up microseconds.
#[cfg(not(loom))]
pub(crate) const FOLLOWER_SPINS: u32 = 256;
#[cfg(not(loom))]
pub(crate) use std::sync::{Condvar, Mutex, MutexGuard};

/// Lock `m`, ignoring poisoning.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Wait on `cv`, ignoring poisoning.
pub(crate) fn wait<'a, T>(cv: &Condvar, g: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    cv.wait(g).unwrap_or_else(|e| e.into_inner())
}
