//! The heap area on media:
//!
//! ```text
//! area_off  +0      header: magic u64, pages u64, desc_off u64, bitmap_off u64,
//!                   pages_off u64 (all offsets from the region start)
//!           desc    one u64 descriptor per page
//!           bitmap  one bit per 16 heap bytes: live blocks of each slab,
//!                   written only at clean close
//!           pages   the heap itself, page aligned
//! ```
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
        let desc_off = area_off + HEADER;
        let bitmap_off = desc_off + pages * 8;
        let pages_off = (bitmap_off + pages * 32).div_ceil(PAGE) * PAGE;
        if pages_off + pages * PAGE > area_off + area_len {
            return None;
        }
        Some(Layout { area_off, pages, desc_off, bitmap_off, pages_off })
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
