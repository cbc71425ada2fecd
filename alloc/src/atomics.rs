//! Zero-filled atomic arrays for DRAM tables above the pool (the store's
//! point cache), mapped without touching their pages.

use memmap2::{MmapMut, MmapOptions};
use std::sync::atomic::AtomicU64;

/// `len` atomic words, all zero, in a private anonymous mapping of their
/// own: the kernel hands out zeroed pages on first touch, so creating the
/// table costs no time and a table that is only partly used takes resident
/// memory only for the pages it touches. (An allocator could instead reuse
/// freed heap memory and have to clear all of it first.) Page-aligned, so
/// every 64-byte group of words is one cache line.
pub struct ZeroedWords {
    map: Option<MmapMut>,
    len: usize,
}

impl ZeroedWords {
    /// Map `len` zeroed words; an error if the kernel refuses the mapping.
    pub fn new(len: usize) -> std::io::Result<ZeroedWords> {
        let map = if len == 0 {
            None
        } else {
            let bytes = len.checked_mul(8).ok_or_else(|| std::io::Error::other("table size overflows"))?;
            Some(MmapOptions::new().len(bytes).map_anon()?)
        };
        Ok(ZeroedWords { map, len })
    }
}

impl std::ops::Deref for ZeroedWords {
    type Target = [AtomicU64];

    fn deref(&self) -> &[AtomicU64] {
        match &self.map {
            None => &[],
            // SAFETY: the mapping is `len * 8` bytes, page-aligned (more
            // than `AtomicU64`'s alignment of 8), zero-filled by the kernel
            // (all zeros is a valid `AtomicU64`), and lives as long as
            // `self`, which the returned slice borrows. It is never
            // accessed other than through this shared slice of atomics, so
            // the mutations through it are atomic operations only.
            Some(m) => unsafe { std::slice::from_raw_parts(m.as_ptr().cast::<AtomicU64>(), self.len) },
        }
    }
}

impl std::fmt::Debug for ZeroedWords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZeroedWords").field("len", &self.len).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn words_start_zero_aligned_and_hold_stores() {
        for n in [0usize, 1, 9, 1 << 16] {
            let a = ZeroedWords::new(n).unwrap();
            assert_eq!(a.len(), n);
            assert!(a.iter().all(|w| w.load(Ordering::Relaxed) == 0));
            if n > 0 {
                assert_eq!(a.as_ptr() as usize % 4096, 0);
            }
            for (i, w) in a.iter().enumerate() {
                w.store(i as u64 * 3 + 1, Ordering::Relaxed);
            }
            assert!(a.iter().enumerate().all(|(i, w)| w.load(Ordering::Relaxed) == i as u64 * 3 + 1));
        }
    }
}
