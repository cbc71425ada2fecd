//! The one place this crate takes its synchronization primitives from, so
//! that loom can stand in for std under `--cfg loom`.

#[cfg(loom)]
pub(crate) use loom::sync::Mutex;
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, Ordering};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU64, Ordering};

/// A mutex with the shape of loom's (`lock()` returns a guard, poisoning
/// is treated as impossible: no code holding it panics).
#[cfg(not(loom))]
#[derive(Debug, Default)]
pub(crate) struct Mutex<T>(parking_lot::Mutex<T>);

#[cfg(not(loom))]
impl<T> Mutex<T> {
    pub(crate) fn new(v: T) -> Self {
        Mutex(parking_lot::Mutex::new(v))
    }
    pub(crate) fn lock(&self) -> Result<parking_lot::MutexGuard<'_, T>, std::convert::Infallible> {
        Ok(self.0.lock())
    }
}
