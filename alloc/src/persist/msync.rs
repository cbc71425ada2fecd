//! Dirty-page tracking for the `msync` backend: `flush` marks the pages a
//! range touches, `drain` writes every marked page with `msync(MS_SYNC)`.
//!
//! Protocol: marks are lock-free (`fetch_or`); a drain takes the sync lock,
//! claims marked pages (`swap(0)`), syncs them, and only then releases the
//! lock. A drain that finds its pages already claimed by a concurrent drain
//! waits on the lock for that drain to finish, so no drain returns before
//! every page marked before it started is on storage.

use crate::sync::{AtomicU64, Mutex, Ordering};
use std::io;

pub(crate) struct DirtyPages {
    bits: Vec<AtomicU64>,
    page_shift: u32,
    sync_lock: Mutex<()>,
}

impl DirtyPages {
    pub(crate) fn new(region_len: usize, page_size: usize) -> Self {
        assert!(page_size.is_power_of_two());
        let pages = region_len.div_ceil(page_size);
        DirtyPages {
            bits: (0..pages.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            page_shift: page_size.trailing_zeros(),
            sync_lock: Mutex::new(()),
        }
    }

    /// Remember that `[off, off+len)` must be written at the next drain.
    pub(crate) fn mark(&self, off: usize, len: usize) {
        if len == 0 {
            return;
        }
        let first = off >> self.page_shift;
        let last = (off + len - 1) >> self.page_shift;
        for p in first..=last {
            self.bits[p / 64].fetch_or(1 << (p % 64), Ordering::AcqRel);
        }
    }

    /// Sync every marked page through `sync(offset, len)`, coalescing runs of
    /// adjacent pages. On failure the pages not yet synced are marked again
    /// and the error returned.
    pub(crate) fn drain(&self, mut sync: impl FnMut(usize, usize) -> io::Result<()>) -> io::Result<()> {
        let _held = self.sync_lock.lock();
        let page = 1usize << self.page_shift;
        let mut claimed: Vec<(usize, u64)> = Vec::new();
        for (i, w) in self.bits.iter().enumerate() {
            let v = w.swap(0, Ordering::AcqRel);
            if v != 0 {
                claimed.push((i, v));
            }
        }
        let mut run: Option<(usize, usize)> = None; // first page, count
        let mut result = Ok(());
        for &(i, v) in &claimed {
            let mut bits = v;
            while bits != 0 {
                let p = i * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                run = match run {
                    Some((s, n)) if s + n == p => Some((s, n + 1)),
                    Some((s, n)) => {
                        if result.is_ok() {
                            result = sync(s * page, n * page);
                        }
                        Some((p, 1))
                    }
                    None => Some((p, 1)),
                };
            }
        }
        if let Some((s, n)) = run
            && result.is_ok()
        {
            result = sync(s * page, n * page);
        }
        if result.is_err() {
            // Re-mark everything claimed: a page already synced is synced
            // again next time, which is harmless; none is forgotten.
            for &(i, v) in &claimed {
                self.bits[i].fetch_or(v, Ordering::AcqRel);
            }
        }
        result
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn coalesces_runs_and_clears() {
        let d = DirtyPages::new(64 * 4096 * 3, 4096);
        d.mark(0, 1);
        d.mark(4096, 8192); // pages 1, 2
        d.mark(100 * 4096 + 5, 10); // page 100
        let mut seen = Vec::new();
        d.drain(|o, l| {
            seen.push((o, l));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, vec![(0, 3 * 4096), (100 * 4096, 4096)]);
        seen.clear();
        d.drain(|o, l| {
            seen.push((o, l));
            Ok(())
        })
        .unwrap();
        assert!(seen.is_empty());
    }

    #[test]
    fn failed_sync_keeps_pages_dirty() {
        let d = DirtyPages::new(1 << 20, 4096);
        d.mark(8192, 1);
        assert!(d.drain(|_, _| Err(io::Error::other("EIO"))).is_err());
        let mut seen = Vec::new();
        d.drain(|o, l| {
            seen.push((o, l));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, vec![(8192, 4096)]);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;

    /// Two threads each mark a page and drain. Whatever the interleaving, a
    /// drain that returns has seen its own page written (by itself or by the
    /// other drain), never merely claimed by a drain still in progress.
    #[test]
    fn drain_returns_only_after_own_page_synced() {
        loom::model(|| {
            let d = Arc::new(DirtyPages::new(2 * 4096, 4096));
            let synced = Arc::new(loom::sync::Mutex::new(Vec::<usize>::new()));
            let handles: Vec<_> = (0..2)
                .map(|t| {
                    let d = d.clone();
                    let synced = synced.clone();
                    loom::thread::spawn(move || {
                        d.mark(t * 4096, 1);
                        d.drain(|o, l| {
                            let mut s = synced.lock().unwrap();
                            for p in (o..o + l).step_by(4096) {
                                s.push(p / 4096);
                            }
                            Ok(())
                        })
                        .unwrap();
                        assert!(synced.lock().unwrap().contains(&t), "drain returned before page {t} was synced");
                    })
                })
                .collect();
            for h in handles {
                h.join().unwrap();
            }
        });
    }
}
