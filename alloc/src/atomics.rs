//! Zero-filled atomic arrays for DRAM tables above the pool (the store's
//! point cache), allocated without touching their pages.

use std::sync::atomic::AtomicU64;

/// `n` atomic words, all zero. The memory comes from the allocator's zeroed
/// path (fresh anonymous pages for large sizes), so a table that is only
/// partly used costs resident memory only for the pages it touches.
pub fn zeroed_atomic_u64s(n: usize) -> Box<[AtomicU64]> {
    let words: Box<[u64]> = vec![0u64; n].into_boxed_slice();
    let raw: *mut [u64] = Box::into_raw(words);
    // SAFETY: `AtomicU64` has the same size, alignment and bit validity as
    // `u64` (std documents this for the type), so the slice of `n` zeroed
    // words is a valid `[AtomicU64]` of the same layout, and the box frees
    // it with the layout it was allocated with. `raw` came from
    // `Box::into_raw` just above and is owned by nobody else.
    unsafe { Box::from_raw(raw as *mut [AtomicU64]) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn words_start_zero_and_hold_stores() {
        for n in [0usize, 1, 9, 1 << 16] {
            let a = zeroed_atomic_u64s(n);
            assert_eq!(a.len(), n);
            assert!(a.iter().all(|w| w.load(Ordering::Relaxed) == 0));
            for (i, w) in a.iter().enumerate() {
                w.store(i as u64 * 3 + 1, Ordering::Relaxed);
            }
            assert!(a.iter().enumerate().all(|(i, w)| w.load(Ordering::Relaxed) == i as u64 * 3 + 1));
        }
    }
}
