//! Zero-filled atomic arrays for DRAM tables above the pool (the store's
//! point cache), mapped without touching their pages.

use memmap2::{MmapMut, MmapOptions};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

/// `len` atomic words, all zero, in a private anonymous mapping of their
/// own: the kernel hands out zeroed pages on first touch, so creating the
/// table costs no time and a table that is only partly used takes resident
/// memory only for the pages it touches. (An allocator could instead reuse
/// freed heap memory and have to clear all of it first.) Page-aligned, so
/// every 64-byte group of words is one cache line.
///
/// A table of 2 MiB or more starts on a 2 MiB boundary and asks for
/// transparent huge pages (`MADV_HUGEPAGE`, which the kernel honours when
/// THP is `madvise` or `always`): a lookup at a random place in a 16 MiB
/// table then finds its translation in the TLB instead of walking the page
/// tables first. Where THP is off the table simply stays on 4 KiB pages.
pub struct ZeroedWords {
    map: Option<Arc<MmapMut>>,
    /// Byte offset of word 0 in `map`.
    start: usize,
    len: usize,
}

/// Huge page size the table aligns to.
const HUGE: usize = 2 << 20;

impl ZeroedWords {
    /// Map `len` zeroed words; an error if the kernel refuses the mapping.
    pub fn new(len: usize) -> std::io::Result<ZeroedWords> {
        if len == 0 {
            return Ok(ZeroedWords { map: None, start: 0, len });
        }
        let bytes = len.checked_mul(8).ok_or_else(|| std::io::Error::other("table size overflows"))?;
        if bytes < HUGE {
            let map = MmapOptions::new().len(bytes).map_anon()?;
            return Ok(ZeroedWords { map: Some(Arc::new(map)), start: 0, len });
        }
        // Map one huge page more than needed and use the part that starts
        // on a huge page boundary (the slack is never touched, so it takes
        // no memory).
        let mapped = bytes.checked_add(HUGE).ok_or_else(|| std::io::Error::other("table size overflows"))?;
        let map = MmapOptions::new().len(mapped).map_anon()?;
        let start = (HUGE - map.as_ptr() as usize % HUGE) % HUGE;
        if let Err(e) = map.advise_range(memmap2::Advice::HugePage, start, bytes) {
            log::debug!("no transparent huge pages for a table of {bytes} bytes: {e}");
        }
        Ok(ZeroedWords { map: Some(Arc::new(map)), start, len })
    }

    /// Fault the table's pages in from a background thread, 2 MiB at a
    /// time, so that its users do not take the page faults (and the
    /// kernel's zeroing) one by one on first touch. The thread keeps the
    /// mapping alive and stops early once the table is dropped. Contents
    /// are not changed: a page already written keeps what it holds.
    pub fn populate_in_background(&self) {
        let Some(m) = &self.map else { return };
        let m = Arc::clone(m);
        let (start, bytes) = (self.start, self.len * 8);
        let spawned = std::thread::Builder::new().name("daxkv-populate".into()).spawn(move || {
            const CHUNK: usize = 2 << 20;
            let (base, len) = (m.as_ptr() as usize + start, bytes);
            let mut off = 0;
            while off < len && Arc::strong_count(&m) > 1 {
                let n = CHUNK.min(len - off);
                // MADV_POPULATE_WRITE only faults pages in: a page not yet
                // touched becomes a zeroed page, as a first write would make
                // it, and no page's contents change.
                // SAFETY: [base + off, base + off + n) lies inside the
                // mapping `m` keeps mapped; see above for why other threads
                // may use the words meanwhile.
                let rc = unsafe { libc::madvise((base + off) as *mut libc::c_void, n, libc::MADV_POPULATE_WRITE) };
                if rc != 0 {
                    break;
                }
                off += n;
            }
        });
        if let Err(e) = spawned {
            log::debug!("table pages not populated in the background: {e}");
        }
    }

    /// Whether every page of the table is resident (for tests).
    pub fn resident(&self) -> bool {
        let Some(m) = &self.map else { return true };
        let bytes = self.len * 8;
        let pages = bytes.div_ceil(4096);
        let mut vec = vec![0u8; pages];
        // SAFETY: mincore reads the page table state of the table's words
        // (page-aligned, inside the mapping) into `vec`, which has one byte
        // per 4 KiB page of the range.
        let rc = unsafe { libc::mincore(m.as_ptr().add(self.start) as *mut libc::c_void, bytes, vec.as_mut_ptr()) };
        rc == 0 && vec.iter().all(|b| b & 1 == 1)
    }
}

impl std::ops::Deref for ZeroedWords {
    type Target = [AtomicU64];

    fn deref(&self) -> &[AtomicU64] {
        match &self.map {
            None => &[],
            // The mapping holds `len * 8` bytes from `start`, which is
            // page-aligned (more than the 8 `AtomicU64` needs); they are
            // zero-filled by the kernel and only ever accessed through this
            // shared slice of atomics.
            // SAFETY: valid, aligned, initialized (zero is a valid
            // `AtomicU64`) memory that lives as long as the borrow of `self`.
            Some(m) => unsafe { std::slice::from_raw_parts(m.as_ptr().add(self.start).cast::<AtomicU64>(), self.len) },
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
    fn background_population_makes_every_page_resident_and_keeps_contents() {
        let a = ZeroedWords::new(3 << 20).unwrap();
        assert!(!a.resident());
        a[12345].store(77, Ordering::Relaxed);
        a.populate_in_background();
        let t = std::time::Instant::now();
        while !a.resident() {
            assert!(t.elapsed().as_secs() < 60, "pages never became resident");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(a[12345].load(Ordering::Relaxed), 77);
        assert!(a.iter().enumerate().all(|(i, w)| i == 12345 || w.load(Ordering::Relaxed) == 0));
    }

    #[test]
    fn large_tables_start_on_a_huge_page_boundary() {
        for n in [(2 << 20) / 8, (16 << 20) / 8 + 8, (5 << 20) / 8 + 3] {
            let a = ZeroedWords::new(n).unwrap();
            assert_eq!(a.len(), n);
            assert_eq!(a.as_ptr() as usize % HUGE, 0, "table of {n} words");
            a[n - 1].store(5, Ordering::Relaxed);
            assert_eq!(a[n - 1].load(Ordering::Relaxed), 5);
            assert!(a.iter().take(n - 1).all(|w| w.load(Ordering::Relaxed) == 0));
        }
    }

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
