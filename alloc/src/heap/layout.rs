//! The heap area on media:
//!
//! ```text
//! area_off  +0      header: magic u64, pages u64, desc_off u64, bitmap_off u64,
//!                   pages_off u64 (all offsets from the region start; the
//!                   layout made at format, never rewritten), grown u64
//!           desc    one u64 descriptor per page
//!           bitmap  one bit per 16 heap bytes: live blocks of each slab,
//!                   written only at clean close
//!           pages   the heap itself, page aligned
//! ```
//!
//! A heap that was grown (see `heap::grow`) keeps its pages where they
//! were and adds pages after them; its descriptors and bitmap move to just
//! after the last page. The header's `grown` word says so: zero for a heap
//! in its format-time layout, otherwise the page count in its low 40 bits
//! and 24 check bits of it above them, one 8-byte store that
//! switches the heap from one layout to the next.
//!
//! A descriptor (little-endian u64): bits 0..8 tag, 8..16 class,
//! 16..64 a count. Tags: 0 nothing, 1 slab head (class), 2 large head
//! (count = pages), 3 slab continuation (count = distance to the head).
//! Descriptors are written when pages are handed to a slab or an extent and
//! flushed without a drain: the caller's drain before it publishes a block
//! makes them durable. Only descriptors of pages holding reachable blocks
//! are trusted after a crash; stale ones elsewhere are harmless.

use super::classes::{PAGE, SLAB_PAGES};

pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"DAXHEAP1");
pub(crate) const HEADER: u64 = 64;
/// Where the `grown` word is in the header.
pub(crate) const GROWN_AT: u64 = 40;
/// Descriptor and bitmap bytes per page.
const META_PER_PAGE: u64 = 8 + 32;

pub(crate) const TAG_NONE: u64 = 0;
pub(crate) const TAG_SLAB: u64 = 1;
pub(crate) const TAG_LARGE: u64 = 2;
pub(crate) const TAG_CONT: u64 = 3;

/// Where things are in the heap area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    pub area_off: u64,
    pub pages: u64,
    pub desc_off: u64,
    pub bitmap_off: u64,
    pub pages_off: u64,
}

impl Layout {
    /// The largest heap that fits `[area_off, area_off + area_len)`.
    pub(crate) fn compute(area_off: u64, area_len: u64) -> Option<Layout> {
        // per page: 4096 heap bytes + 8 descriptor bytes + 32 bitmap bytes
        let usable = area_len.checked_sub(HEADER + 2 * PAGE)?;
        let mut pages = usable / (PAGE + 8 + 32);
        pages -= pages % SLAB_PAGES;
        if pages < SLAB_PAGES {
            return None;
        }
        let l = Layout::fresh(area_off, pages)?;
        (l.pages_off + pages * PAGE <= area_off + area_len).then_some(l)
    }

    /// The layout a header describes, if it is one this code writes and it
    /// fits in `[area_off, area_off + area_len)`. A header of a smaller
    /// area fits too: a grow writes the superblock's larger area before it
    /// switches the heap (see `heap::grow`).
    pub(crate) fn from_header(area_off: u64, area_len: u64, w: [u64; 6]) -> Result<Layout, String> {
        let [magic, pages, desc_off, bitmap_off, pages_off, grown] = w;
        if magic != MAGIC {
            return Err(format!("magic {magic:#018x}, expected {MAGIC:#018x}"));
        }
        let end = area_off.checked_add(area_len).ok_or("area past the end of the address space")?;
        let fresh = Layout::fresh(area_off, pages);
        let found = Layout { area_off, pages, desc_off, bitmap_off, pages_off };
        if fresh != Some(found) || found.pages_off + pages * PAGE > end {
            return Err(format!("layout {found:?} does not fit an area of {area_len} bytes at {area_off}"));
        }
        if grown == 0 {
            return Ok(found);
        }
        let n = grown_pages(grown).ok_or_else(|| format!("grown word {grown:#018x} fails its check"))?;
        match Layout::grown(pages_off, n) {
            Some(l) if n > pages && l.bitmap_off + n * 32 <= end => Ok(Layout { area_off, ..l }),
            _ => Err(format!("grown to {n} pages from {pages}: does not fit an area of {area_len} bytes")),
        }
    }

    /// The format-time layout of `pages` pages at `area_off`.
    fn fresh(area_off: u64, pages: u64) -> Option<Layout> {
        if !valid_pages(pages) {
            return None;
        }
        let desc_off = area_off + HEADER;
        let bitmap_off = desc_off + pages * 8;
        let pages_off = (bitmap_off + pages * 32).div_ceil(PAGE) * PAGE;
        Some(Layout { area_off, pages, desc_off, bitmap_off, pages_off })
    }

    /// A grown layout: `pages` pages from `pages_off`, then descriptors and
    /// bitmap. (`area_off` is filled in by the caller.)
    fn grown(pages_off: u64, pages: u64) -> Option<Layout> {
        if !valid_pages(pages) {
            return None;
        }
        let desc_off = pages_off + pages * PAGE;
        Some(Layout { area_off: 0, pages, desc_off, bitmap_off: desc_off + pages * 8, pages_off })
    }

    /// The largest grown layout of this heap in an area ending at `end`.
    pub(crate) fn grown_to(&self, end: u64) -> Option<Layout> {
        let room = end.checked_sub(self.pages_off)?;
        let mut pages = (room / (PAGE + META_PER_PAGE)).min(MAX_PAGES);
        pages -= pages % SLAB_PAGES;
        Layout::grown(self.pages_off, pages).map(|l| Layout { area_off: self.area_off, ..l })
    }

    /// Whether this is a grown layout (metadata after the pages).
    pub(crate) fn is_grown(&self) -> bool {
        self.desc_off > self.pages_off
    }

    /// Where this layout's descriptors and bitmap end: the end of the
    /// pages for a format-time layout, of the bitmap for a grown one.
    pub(crate) fn used_end(&self) -> u64 {
        if self.is_grown() { self.bitmap_off + self.pages * 32 } else { self.pages_off + self.heap_bytes() }
    }

    pub(crate) fn page_of(&self, off: u64) -> Option<u64> {
        let rel = off.checked_sub(self.pages_off)?;
        let p = rel / PAGE;
        (p < self.pages).then_some(p)
    }

    pub(crate) fn page_off(&self, page: u64) -> u64 {
        self.pages_off + page * PAGE
    }

    pub(crate) fn heap_bytes(&self) -> u64 {
        self.pages * PAGE
    }
}

/// Most pages a heap may have: the `grown` word's 40 bits.
const MAX_PAGES: u64 = (1 << 40) - 1;

/// A page count a layout may have: whole slabs, at least one.
fn valid_pages(pages: u64) -> bool {
    pages >= SLAB_PAGES && pages.is_multiple_of(SLAB_PAGES) && pages <= MAX_PAGES
}

/// 24 check bits of a page count (a multiplicative hash: any change to the
/// count changes them with high probability).
fn grown_check(pages: u64) -> u64 {
    (pages ^ 0x5a5a_a5a5).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40
}

/// The `grown` word for a heap of `pages` pages.
pub(crate) fn grown_word(pages: u64) -> u64 {
    debug_assert!(pages <= MAX_PAGES);
    pages | grown_check(pages) << 40
}

fn grown_pages(w: u64) -> Option<u64> {
    let pages = w & MAX_PAGES;
    (w >> 40 == grown_check(pages)).then_some(pages)
}

pub(crate) fn desc(tag: u64, class: u64, count: u64) -> u64 {
    tag | (class << 8) | (count << 16)
}

pub(crate) fn desc_tag(d: u64) -> u64 {
    d & 0xff
}

pub(crate) fn desc_class(d: u64) -> usize {
    ((d >> 8) & 0xff) as usize
}

pub(crate) fn desc_count(d: u64) -> u64 {
    d >> 16
}
