//! Per-thread caches and the epoch scheme that defers reuse.
//!
//! Each thread that uses a heap gets one `CacheCell`, found through a
//! thread-local list and also registered with the heap (so that close,
//! stats and a full heap can reach every cache). The owning thread locks
//! its cell for each operation; nobody else does except at close, stats and
//! exhaustion, so the lock is uncontended on the hot path.
//!
//! Epochs (after Fraser's epoch-based reclamation): a global epoch `E`; a
//! pinned thread publishes the epoch it saw in its cell (SeqCst store, then
//! re-reads `E`). `E` advances from `e` to `e+1` only when every pinned
//! cell shows `e`. A block retired at epoch `r` (read after it was made
//! unreachable) is reused only once `E >= r + 2`: a reader that could
//! still hold it pinned at some `p <= r`, and `E` cannot pass `p + 1`
//! while it stays pinned.

use crate::sync::{AtomicU32, AtomicU64, Ordering, fence};
use std::collections::VecDeque;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::Arc;

#[derive(Debug, Default)]
pub(crate) struct Cache {
    /// Free blocks (region offsets) per class.
    pub bins: Vec<Vec<u64>>,
    /// Retired blocks: (epoch at retire, region offset), oldest first.
    pub retired: VecDeque<(u64, u64)>,
    /// Bytes of retired blocks.
    pub retired_bytes: u64,
}

#[derive(Debug)]
pub(crate) struct CacheCell {
    pub cache: parking_lot::Mutex<Cache>,
    /// Epoch this thread is pinned at, 0 when not pinned.
    pub pin: AtomicU64,
    nest: AtomicU32,
    /// A spare cell, lent to threads whose thread-locals are gone (see
    /// `Heap::with_cell`): never freed, and owned by one thread at a time,
    /// the one that set `claimed`.
    pub spare: bool,
    pub claimed: std::sync::atomic::AtomicBool,
}

impl CacheCell {
    /// Whether a guard of the owning thread is alive.
    pub(crate) fn pinned(&self) -> bool {
        self.nest.load(Ordering::Relaxed) != 0
    }

    pub(crate) fn new(nclasses: usize) -> CacheCell {
        CacheCell {
            cache: parking_lot::Mutex::new(Cache { bins: vec![Vec::new(); nclasses], ..Cache::default() }),
            pin: AtomicU64::new(0),
            nest: AtomicU32::new(0),
            spare: false,
            claimed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// A spare cell, claimed by its creator.
    pub(crate) fn new_spare(nclasses: usize) -> CacheCell {
        CacheCell { spare: true, claimed: std::sync::atomic::AtomicBool::new(true), ..CacheCell::new(nclasses) }
    }

    /// Give a spare cell back once its claimer has no guard on it left.
    pub(crate) fn release_if_idle(&self) {
        if self.spare && !self.pinned() {
            self.claimed.store(false, Ordering::Release);
        }
    }
}

/// The global epoch and its advance.
#[derive(Debug)]
pub(crate) struct Epoch {
    pub global: AtomicU64,
}

impl Epoch {
    pub(crate) fn new() -> Epoch {
        Epoch { global: AtomicU64::new(2) }
    }

    pub(crate) fn pin(&self, cell: &Arc<CacheCell>) -> Guard {
        // Only the owning thread changes `nest` (a guard is not `Send`):
        // plain loads and stores, no read-modify-write.
        let nest = cell.nest.load(Ordering::Relaxed);
        cell.nest.store(nest + 1, Ordering::Relaxed);
        if nest == 0 {
            loop {
                let e = self.global.load(Ordering::SeqCst);
                cell.pin.store(e, Ordering::Relaxed);
                // Order the pin before every later load of pool data (and
                // before the re-check); pairs with the fence in
                // `try_advance`. One barrier: a SeqCst store would be a
                // second one on x86.
                fence(Ordering::SeqCst);
                if self.global.load(Ordering::SeqCst) == e {
                    break;
                }
            }
        }
        Guard { cell: NonNull::from(&**cell), _not_send: PhantomData }
    }

    /// Advance the epoch if every pinned cell has seen the current one.
    pub(crate) fn try_advance<'a>(&self, cells: impl Iterator<Item = &'a Arc<CacheCell>>) -> u64 {
        fence(Ordering::SeqCst);
        let e = self.global.load(Ordering::SeqCst);
        for c in cells {
            let p = c.pin.load(Ordering::SeqCst);
            if p != 0 && p != e {
                return e;
            }
        }
        match self.global.compare_exchange(e, e + 1, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => e + 1,
            Err(now) => now,
        }
    }

    /// The epoch to stamp a block retired now with. The fence orders the
    /// caller's unpublishing store before the read, so a reader that could
    /// still see the block pinned at an epoch no later than the one read.
    pub(crate) fn retire_stamp(&self) -> u64 {
        fence(Ordering::SeqCst);
        self.global.load(Ordering::SeqCst)
    }

    /// Whether a block retired at `retired_at` may be reused now.
    pub(crate) fn safe(&self, retired_at: u64) -> bool {
        self.global.load(Ordering::SeqCst) >= retired_at + 2
    }
}

/// A pinned section: while it lives, no block retired after it began is
/// reused, so borrowed pool data stays valid. Not `Send`: it unpins the
/// thread that pinned.
///
/// It points at its thread's cell without counting a reference (two locked
/// instructions per get saved): the thread's entry in the heap's
/// thread-local list owns the cell for as long as the thread lives, and an
/// entry destroyed while one of its thread's guards is still alive (a guard
/// kept in another thread-local that is destroyed later) leaks its
/// reference instead of dropping it (see `TlsEntry`'s `Drop`).
#[derive(Debug)]
pub struct Guard {
    cell: NonNull<CacheCell>,
    _not_send: PhantomData<*const ()>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        // The thread's TLS entry owns the cell and leaks it rather than
        // free it under a live guard of its thread (`Guard` is not `Send`);
        // a spare cell is never freed.
        // SAFETY: so the cell this guard points at is still allocated.
        let cell = unsafe { self.cell.as_ref() };
        let nest = cell.nest.load(Ordering::Relaxed);
        cell.nest.store(nest - 1, Ordering::Relaxed);
        if nest == 1 {
            cell.pin.store(0, Ordering::Release);
            cell.release_if_idle();
        }
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::atomic::AtomicBool;

    /// A reader pinned before a block is unpublished never sees it freed:
    /// the writer unpublishes, stamps the retirement, and frees only once
    /// the epoch has moved two steps past the stamp.
    #[test]
    fn loom_epoch_handoff() {
        loom::model(|| {
            let epoch = Arc::new(Epoch::new());
            let cell = Arc::new(CacheCell::new(1));
            let published = Arc::new(AtomicU64::new(1)); // 1: the old block
            let freed = Arc::new(AtomicBool::new(false));
            let reader = {
                let (epoch, cell, published, freed) = (epoch.clone(), cell.clone(), published.clone(), freed.clone());
                loom::thread::spawn(move || {
                    let g = epoch.pin(&cell);
                    if published.load(Ordering::Acquire) == 1 {
                        assert!(!freed.load(Ordering::Acquire), "block freed under a pinned reader");
                    }
                    drop(g);
                })
            };
            published.store(2, Ordering::Release);
            let stamp = epoch.retire_stamp();
            for _ in 0..3 {
                epoch.try_advance([&cell].into_iter());
                if epoch.safe(stamp) {
                    freed.store(true, Ordering::Release);
                    break;
                }
                loom::thread::yield_now();
            }
            reader.join().unwrap();
        });
    }
}
