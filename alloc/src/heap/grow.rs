//! Growing a heap that is not in use into a larger area.
//!
//! The pages stay where they are and new pages follow them; the
//! descriptors and slab bitmaps move to just after the last page. A grow is
//! two steps with the owner's own commit between them:
//!
//! 1. [`GrowPlan::prepare`] copies the descriptors and bitmaps to their new
//!    place (zero for the new pages), flushed. Nothing in use is written:
//!    the new place lies past everything the current layout uses.
//! 2. The owner records the larger area durably (the store: its
//!    superblock); its drain makes the copy durable too. The current
//!    header still fits that area, so a crash here opens the heap as it
//!    was, and growing again finishes the job.
//! 3. [`GrowPlan::commit`] switches the header's `grown` word (one 8-byte
//!    store, drained). The previous layout's descriptors and bitmap, if
//!    they followed the pages, now lie in free pages: nothing reads a free
//!    page before writing it (a new slab's pages are zeroed when it is
//!    made, an extent's contents are its owner's), so they stay.
//!
//! The heap must not be in use. The descriptors and bitmaps are copied as
//! they are: after [`Heap::close`] the bitmaps are valid and move with the
//! heap; after a crash they are not read, and stale descriptors are
//! ignored by recovery in the new place as in the old.

use super::api::Heap;
use super::classes::{PAGE, SLAB_PAGES};
use super::error::HeapError;
use super::layout::{GROWN_AT, Layout, grown_word};
use crate::error::DrainError;
use crate::region::Region;

/// Bytes copied at a time.
const CHUNK: u64 = 1 << 20;

/// A grow of a heap not in use, prepared (its new metadata written and
/// flushed) and not yet switched to.
#[derive(Debug, Clone, Copy)]
pub struct GrowPlan {
    old: Layout,
    new: Layout,
}

impl GrowPlan {
    /// Prepare the heap in `[area_off, area_off + area_len)` to grow into an
    /// area of `new_len` bytes: the region must already be that large. The
    /// copy is flushed, not drained: the owner's drain when it records the
    /// larger area makes it durable. An area too small to add a slab's
    /// worth of pages past what the heap uses now is refused with
    /// [`HeapError::GrowTooSmall`], naming the smallest area that works;
    /// nothing is written then.
    pub fn prepare(region: &Region, area_off: u64, area_len: u64, new_len: u64) -> Result<GrowPlan, HeapError> {
        let old = Heap::read_header(region, area_off, area_len)?;
        region.check(area_off, new_len).map_err(|e| HeapError::BadHeader { what: e.to_string() })?;
        let end = area_off + new_len;
        let new = match old.grown_to(end) {
            Some(l) if l.pages > old.pages && l.desc_off >= old.used_end() => l,
            _ => return Err(HeapError::GrowTooSmall { len: new_len, needed: smallest(&old) - area_off }),
        };
        copy(region, old.desc_off, new.desc_off, old.pages * 8, new.pages * 8);
        copy(region, old.bitmap_off, new.bitmap_off, old.pages * 32, new.pages * 32);
        Ok(GrowPlan { old, new })
    }

    /// The smallest area the heap in `[area_off, area_off + area_len)` can
    /// grow into. Reads only.
    pub fn smallest_area(region: &Region, area_off: u64, area_len: u64) -> Result<u64, HeapError> {
        Ok(smallest(&Heap::read_header(region, area_off, area_len)?) - area_off)
    }

    /// Heap bytes (pages) before the grow.
    pub fn old_bytes(&self) -> u64 {
        self.old.heap_bytes()
    }

    /// Heap bytes (pages) after it.
    pub fn new_bytes(&self) -> u64 {
        self.new.heap_bytes()
    }

    /// Switch the heap to its new layout. The caller must have drained
    /// since [`GrowPlan::prepare`], having recorded the larger area durably
    /// (it is where the new layout lives).
    pub fn commit(&self, region: &Region) -> Result<(), DrainError> {
        let at = self.new.area_off + GROWN_AT;
        region.store_u64(at, grown_word(self.new.pages));
        region.flush(at, 8);
        region.drain()
    }
}

/// Copy `len` bytes from `from` to `to` and zero the `total - len` after
/// them (flushed, not drained).
fn copy(region: &Region, from: u64, to: u64, len: u64, total: u64) {
    let mut buf = vec![0u8; CHUNK.min(len) as usize];
    let mut done = 0;
    while done < len {
        let n = CHUNK.min(len - done) as usize;
        region.read(from + done, &mut buf[..n]);
        region.copy_nodrain(to + done, &buf[..n]);
        done += n as u64;
    }
    region.set_nodrain(to + len, 0, (total - len) as usize);
}

/// The end of the smallest area a heap of layout `old` can grow into: one
/// slab more, and its new metadata past what it uses now.
fn smallest(old: &Layout) -> u64 {
    let past = (old.used_end() - old.pages_off).div_ceil(PAGE).next_multiple_of(SLAB_PAGES);
    let pages = past.max(old.pages + SLAB_PAGES);
    old.pages_off + pages * (PAGE + 8 + 32)
}
