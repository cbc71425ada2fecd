//! Per-thread state that lets a durable insert return right after its
//! drain.
//!
//! On x86 a locked read-modify-write (a compare-and-swap, a fetch-add, an
//! `Arc` clone or drop, an `ArcSwap` load) waits for every cache-line
//! write-back in flight. A put that did one after its drain would stall
//! there for the whole write-back; a put that does none returns at once,
//! and the caller's next loads — the next put's hashing and index walk —
//! overlap the write-back instead. (The acknowledgement is unchanged: the
//! drain's fence orders every later store after the flushed lines.)
//!
//! So a one-drain insert leaves its last two steps to the thread's next
//! write to the same store, which runs them once it holds its own leaf
//! lock (whose compare-and-swap has waited for the write-back anyway):
//! - dropping its reference to the leaf it wrote;
//! - caching the new record in the point cache, through
//!   [`Hot::insert`] with the bucket stamp read *before* the publish: the
//!   insert gives up if anything changed the bucket since, so it can never
//!   cache a record that is no longer the key's (see `hot`). A thread that
//!   writes no more simply leaves the key for a get to cache.
//!
//! The same state keeps the index snapshot the thread last routed with,
//! reused while the index generation is unchanged, so that routing a
//! write takes no `ArcSwap` load. A thread holds at most one snapshot,
//! for the last store it wrote to; it is let go at the thread's next write
//! to another store, when the store is closed from this thread, or when
//! the thread ends.

use crate::hot::Hot;
use crate::index::{Index, LeafRef, Node};
use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Store identities, never reused, so that state left for one store is
/// never applied to another that happens to live at the same address.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A new store identity.
pub(crate) fn new_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// A point-cache insert left for later: key hash, bucket stamp read before
/// the publish, record.
#[derive(Clone, Copy)]
pub(crate) struct CacheFill {
    pub h: u32,
    pub stamp: u64,
    pub rec: u64,
}

#[derive(Default)]
struct Local {
    /// The store all of the below belongs to (0: none).
    store: u64,
    /// The index generation and the root loaded after reading it.
    snap: Option<(u64, Arc<Node>)>,
    /// The last insert's leaf reference and cache fill, left for later.
    pending: Option<(Arc<LeafRef>, CacheFill)>,
}

impl Local {
    /// Make the state the store's, letting go of another store's.
    fn claim(&mut self, store: u64) {
        if self.store != store {
            *self = Local { store, ..Local::default() };
        }
    }
}

thread_local! {
    static LOCAL: RefCell<Local> = RefCell::new(Local::default());
}

/// Run `f` on the current root of `index` (store `store`), loaded only if
/// the generation `g` (read by the caller just before) differs from the
/// snapshot kept from last time. (During the thread's teardown, when its
/// state is gone, `f` runs on a snapshot loaded for the call.)
#[inline]
pub(crate) fn with_root<T>(store: u64, index: &Index, g: u64, f: impl FnOnce(&Node) -> T) -> T {
    let mut f = Some(f);
    let kept = LOCAL.try_with(|l| {
        let mut l = l.borrow_mut();
        l.claim(store);
        if !matches!(&l.snap, Some((sg, _)) if *sg == g) {
            l.snap = Some((g, index.load_full()));
        }
        // The snapshot stays alive in `l` while `f` runs (the borrow is
        // held, so nothing replaces it).
        let f = f.take().expect("runs once");
        f(&l.snap.as_ref().expect("set above").1)
    });
    match kept {
        Ok(t) => t,
        Err(_) => (f.take().expect("did not run"))(&index.load()),
    }
}

/// Run what an earlier insert of this thread left for store `store`: drop
/// its leaf reference and try its point-cache fill. Call with a leaf lock
/// held (see the module docs).
#[inline]
pub(crate) fn settle(store: u64, hot: &Hot) {
    let pending = LOCAL
        .try_with(|l| {
            let mut l = l.borrow_mut();
            if l.store != store { None } else { l.pending.take() }
        })
        .ok()
        .flatten();
    if let Some((leaf, c)) = pending {
        hot.insert(c.h, c.stamp, c.rec);
        drop(leaf);
    }
}

/// Leave `leaf` (unlocked by the caller) and the point-cache fill `fill`
/// for the thread's next write to store `store`. If the thread's state
/// belongs to another store, still holds an earlier insert's work, or is
/// gone (thread teardown), the work is done now instead.
#[inline]
pub(crate) fn defer(store: u64, hot: &Hot, leaf: Arc<LeafRef>, fill: CacheFill) {
    let mut work = Some((leaf, fill));
    let _ = LOCAL.try_with(|l| {
        let mut l = l.borrow_mut();
        if l.store == store && l.pending.is_none() {
            l.pending = work.take();
        }
    });
    if let Some((leaf, c)) = work {
        hot.insert(c.h, c.stamp, c.rec);
        drop(leaf);
    }
}

/// Let go of everything kept for store `store` by this thread.
pub(crate) fn forget(store: u64) {
    // `try_with`: a store dropped during thread teardown finds no state.
    let _ = LOCAL.try_with(|l| {
        if let Ok(mut l) = l.try_borrow_mut()
            && l.store == store
        {
            *l = Local::default();
        }
    });
}
