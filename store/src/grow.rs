//! Growing a pool in place: the file gets longer, the heap gets the new
//! pages, and every key stays where it is (see `docs/format.md`, "Growing
//! a pool").

use crate::error::PoolError;
use crate::format::{self, HEADER_BYTES};
use crate::options::Options;
use crate::store::Store;
use daxkv_alloc::{GrowPlan, Heap, Region, RegionOptions};
use std::path::Path;
use std::sync::Arc;

/// What [`Store::grow`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grown {
    /// Pool bytes before.
    pub old_size: u64,
    /// Pool bytes after.
    pub new_size: u64,
    /// Heap bytes (room for keys and values) before.
    pub old_heap_bytes: u64,
    /// Heap bytes after.
    pub new_heap_bytes: u64,
}

impl Store {
    /// Grow the pool at `path` to `new_size` bytes, in place. The pool must
    /// not be open elsewhere. It is opened first (recovering it after a
    /// crash) and closed (cleanly, unless it is too full to save its index,
    /// as [`Store::close`] says), then grown: the file is extended, the
    /// heap's metadata is copied past the new pages, the superblock records
    /// the new size, and one 8-byte store switches the heap to its new
    /// layout. A crash at any point leaves a pool that opens with every
    /// key, at the old size or the new one; growing again finishes the job.
    /// A pool that was too full to close cleanly is opened and closed once
    /// more after the grow, so that its next open is a clean one.
    ///
    /// A size below the pool's, or too little growth to move the heap's
    /// metadata past what it uses now, is refused with the smallest size
    /// that works, before anything is written (a pool of format version 2
    /// or 3 whose heap header cannot be read as it is is opened first,
    /// which marks it version 4). Growing to the pool's own size does
    /// nothing, unless a grow to that size was interrupted: then it
    /// finishes it.
    pub fn grow(path: impl AsRef<Path>, new_size: u64, opts: &Options) -> Result<Grown, PoolError> {
        let path = path.as_ref();
        let opts = opts.clone().create_if_missing(false);
        // Refuse what can be refused from a read-only look.
        {
            let ro = Region::open_read_only(path, HEADER_BYTES)?;
            let (sb, _) = format::read(&ro, path)?;
            // (A header a version 2 or 3 pool has not had cleared yet may
            // not read: its step is checked after the open below.)
            let smallest = GrowPlan::smallest_area(&ro, sb.heap_off, sb.heap_len).map_or(0, |n| sb.heap_off + n);
            if new_size != sb.pool_size {
                refuse(sb.pool_size, smallest, new_size)?;
            }
        }
        // Recover it after a crash, and find damage, before growing it.
        Store::open(path, &opts)?
            .close()
            .map_err(|e| PoolError::Options(format!("{}: closing before the grow: {e}", path.display())))?;
        let ro = RegionOptions { persist: opts.persist.clone(), create_size: None, min_len: HEADER_BYTES };
        let region = Arc::new(Region::open_extended(path, &ro, new_size)?);
        let grown = grow_region(&region, new_size, path)?;
        let (sb, _) = format::read(&region, path)?;
        drop(region);
        if !sb.clean {
            // Closed too full to save its index: open and close it once
            // more, now with room, so that the next open is a clean one.
            // The grow is done either way.
            if let Err(e) = Store::open(path, &opts).map(|s| s.close()) {
                log::warn!("{}: grown, but reopening it to close it cleanly failed: {e}", path.display());
            }
        }
        Ok(grown)
    }

    /// [`Store::grow`] on an already mapped region that holds a pool not in
    /// use and is at least `new_size` bytes long. The pool is not opened
    /// first: after a crash it is grown as it is, and its next open
    /// recovers it in the grown layout.
    pub fn grow_on(region: Arc<Region>, new_size: u64) -> Result<Grown, PoolError> {
        grow_region(&region, new_size, Path::new("<memory>"))
    }
}

fn refuse(size: u64, smallest: u64, new_size: u64) -> Result<(), PoolError> {
    if new_size < size {
        return Err(PoolError::Options(format!("the pool is {size} bytes; it cannot shrink to {new_size}")));
    }
    if new_size < smallest {
        return Err(PoolError::Options(format!(
            "growing a {size}-byte pool to {new_size} bytes adds no room; grow it to at least {smallest} bytes"
        )));
    }
    Ok(())
}

fn grow_region(region: &Region, new_size: u64, path: &Path) -> Result<Grown, PoolError> {
    let (mut sb, _) = format::read(region, path)?;
    if new_size > region.len() {
        return Err(PoolError::Options(format!("region of {} bytes cannot hold {new_size}", region.len())));
    }
    let smallest = sb.heap_off + GrowPlan::smallest_area(region, sb.heap_off, sb.heap_len)?;
    let old_size = sb.pool_size;
    if new_size == old_size && Heap::fills_area(region, sb.heap_off, sb.heap_len)? {
        // Nothing to do. (A grow interrupted after its superblock write
        // left a heap that does not fill the area yet: it goes on below.)
        let heap = Heap::capacity_of(region, sb.heap_off, sb.heap_len)?;
        return Ok(Grown { old_size, new_size, old_heap_bytes: heap, new_heap_bytes: heap });
    }
    refuse(old_size, smallest, new_size)?;
    let new_heap_len = new_size - sb.heap_off;
    // (`refuse` has turned away every area `prepare` would.)
    let plan = GrowPlan::prepare(region, sb.heap_off, sb.heap_len, new_heap_len)?;
    sb.pool_size = new_size;
    sb.heap_len = new_heap_len;
    sb.write(region)?;
    plan.commit(region)?;
    log::info!(
        "{}: grown from {old_size} to {new_size} bytes; heap {} -> {} bytes",
        path.display(),
        plan.old_bytes(),
        plan.new_bytes()
    );
    Ok(Grown { old_size, new_size, old_heap_bytes: plan.old_bytes(), new_heap_bytes: plan.new_bytes() })
}
