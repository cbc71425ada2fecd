//! Size classes: 16-byte steps to 128 B, then four classes per doubling up
//! to 16 KiB. Larger requests take whole pages (large extents).

/// Bytes per page, the unit of the heap's extents.
pub const PAGE: u64 = 4096;
/// Pages per slab (every small class is served from 64 KiB slabs).
pub const SLAB_PAGES: u64 = 16;
/// Bytes per slab.
pub const SLAB_BYTES: u64 = PAGE * SLAB_PAGES;
/// Largest size served from a slab; larger requests get page extents.
pub const MAX_SMALL: usize = 16384;

/// Number of size classes.
pub const NCLASSES: usize = 36;

const fn build() -> [u32; NCLASSES] {
    let mut t = [0u32; NCLASSES];
    let mut i = 0;
    while i < 8 {
        t[i] = 16 * (i as u32 + 1);
        i += 1;
    }
    let mut base = 128u32;
    while i < NCLASSES {
        let step = base / 4;
        let mut k = 1;
        while k <= 4 && i < NCLASSES {
            t[i] = base + step * k;
            i += 1;
            k += 1;
        }
        base *= 2;
    }
    t
}

/// Block size of each class, ascending.
pub const CLASS_SIZES: [u32; NCLASSES] = build();

/// The class serving `size` bytes, or `None` if it needs a large extent.
#[inline]
pub fn class_of(size: usize) -> Option<usize> {
    if size > MAX_SMALL {
        return None;
    }
    let size = size.max(1);
    if size <= 128 {
        return Some((size - 1) / 16);
    }
    // Four classes per doubling above 128: find the doubling, then the step.
    let log = usize::BITS - 1 - (size - 1).leading_zeros(); // floor(log2(size-1))
    let base = 1usize << log; // base < size <= 2*base
    let step = base / 4;
    let k = (size - base).div_ceil(step); // 1..=4
    Some(8 + (log as usize - 7) * 4 + k - 1)
}

/// Bytes of the block that `Heap::alloc(size)` returns (the class size, or
/// whole pages for a large extent): what a writer may fill, padding
/// included.
#[inline]
pub fn block_size_for(size: usize) -> u64 {
    match class_of(size) {
        Some(c) => CLASS_SIZES[c] as u64,
        None => (size as u64).div_ceil(PAGE) * PAGE,
    }
}

/// Blocks of class `c` in one slab.
#[inline]
pub fn blocks_per_slab(c: usize) -> u32 {
    (SLAB_BYTES / CLASS_SIZES[c] as u64) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_ascending_and_ends_at_max_small() {
        assert_eq!(CLASS_SIZES[0], 16);
        assert_eq!(CLASS_SIZES[7], 128);
        assert_eq!(CLASS_SIZES[8], 160);
        assert_eq!(CLASS_SIZES[NCLASSES - 1] as usize, MAX_SMALL);
        assert!(CLASS_SIZES.windows(2).all(|w| w[0] < w[1]));
        assert!(CLASS_SIZES.iter().all(|s| s % 16 == 0));
    }

    #[test]
    fn class_of_is_the_smallest_fit() {
        for size in 0..=MAX_SMALL {
            let c = class_of(size).unwrap();
            assert!(CLASS_SIZES[c] as usize >= size.max(1), "size {size} class {c}");
            if c > 0 {
                assert!((CLASS_SIZES[c - 1] as usize) < size.max(1), "size {size} not smallest: {c}");
            }
        }
        assert_eq!(class_of(MAX_SMALL + 1), None);
    }
}
