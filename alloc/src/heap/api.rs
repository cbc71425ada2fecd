//! [`Heap`]: the persistent allocator's public face.

use super::cache::{Cache, CacheCell, Epoch, Guard};
use super::classes::{CLASS_SIZES, MAX_SMALL, NCLASSES, PAGE, SLAB_BYTES, SLAB_PAGES, blocks_per_slab, class_of};
use super::error::{AllocError, HeapError};
use super::layout::{
    GROWN_AT, HEADER, Layout, MAGIC, TAG_CONT, TAG_LARGE, TAG_NONE, TAG_SLAB, desc, desc_class, desc_count, desc_tag,
};
use super::pages::PageRuns;
use super::slab::{BlockRef, ClassPool, UNTOUCHED_IDX};
use crate::region::Region;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

/// Blocks moved between a thread cache and its class per refill.
fn batch(class: usize) -> usize {
    (blocks_per_slab(class) as usize / 2).clamp(1, 32)
}

/// DRAM mirror of what each page is, for frees and lookups without media
/// reads: `desc(TAG_SLAB, class, head)` on every page of a slab,
/// `desc(TAG_LARGE, 0, pages)` on an extent's first page, 0 elsewhere.
type PageInfo = Box<[AtomicU64]>;

struct Shared {
    id: u64,
    region: Arc<Region>,
    layout: Layout,
    pages: parking_lot::Mutex<PageRuns>,
    info: PageInfo,
    classes: Vec<ClassPool>,
    cells: parking_lot::Mutex<Vec<Arc<CacheCell>>>,
    /// Retired blocks of threads that exited.
    orphans: parking_lot::Mutex<Vec<(u64, u64)>>,
    /// Cells lent to threads whose thread-locals are gone (also in
    /// `cells`); never freed, see `Heap::with_cell`.
    spares: parking_lot::Mutex<Vec<Arc<CacheCell>>>,
    epoch: Epoch,
    large_pages: AtomicU64,
    /// Whether new slabs are zeroed, so that their blocks are handed out
    /// as untouched (not on the volatile backend: no crash to survive).
    zero_slabs: bool,
}

/// Tag on a cached block's offset (blocks are 16-byte aligned): the block
/// is untouched (see [`Heap::alloc_untouched`]).
const UNTOUCHED: u64 = 1;

struct TlsEntry {
    id: u64,
    cell: Arc<CacheCell>,
    owner: Weak<Shared>,
}

impl Drop for TlsEntry {
    fn drop(&mut self) {
        if self.cell.pinned() {
            // A guard of this thread outlives its entry (thread-locals are
            // being destroyed and another one still holds a guard). The
            // guard points at the cell without a reference of its own, so
            // keep the cell allocated; and keep it registered, so that its
            // pin goes on holding back reuse until the guard drops.
            std::mem::forget(Arc::clone(&self.cell));
            return;
        }
        if let Some(sh) = self.owner.upgrade() {
            sh.retire_cell(&self.cell);
        }
    }
}

thread_local! {
    static TLS: RefCell<Vec<TlsEntry>> = const { RefCell::new(Vec::new()) };
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Occupancy of one size class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassStats {
    /// Block size in bytes.
    pub size: u32,
    /// Slabs serving the class.
    pub slabs: u64,
    /// Blocks in those slabs.
    pub blocks: u64,
    /// Blocks allocated and not freed.
    pub live: u64,
}

/// Space accounting of a heap. `live + retired + free == heap`, always.
#[derive(Debug, Clone, PartialEq)]
pub struct HeapStats {
    /// Bytes of the heap (pages × 4096).
    pub heap_bytes: u64,
    /// Bytes of allocated blocks (block sizes, not requested sizes).
    pub live_bytes: u64,
    /// Bytes freed but waiting for readers to leave before reuse.
    pub retired_bytes: u64,
    /// Bytes that can be allocated: free pages, free slab blocks (also in
    /// thread caches), and slab tails too small for a block.
    pub free_bytes: u64,
    /// Pages in no slab and no extent.
    pub free_pages: u64,
    /// Longest run of free pages.
    pub largest_free_run: u64,
    /// Pages held by large extents.
    pub large_pages: u64,
    /// Per-class occupancy, for classes with at least one slab.
    pub classes: Vec<ClassStats>,
    /// Share of the pages in use that hold no live data: 1 − live / used.
    pub fragmentation: f64,
}

/// The persistent allocator over a heap area of a [`Region`].
///
/// Blocks are named by their region offset. Small requests (≤ 16 KiB) are
/// served from 64 KiB slabs of one size class, larger ones from runs of
/// 4 KiB pages. Allocation and free issue no flush and no drain except when
/// a slab or extent is first handed out: its page descriptors are written,
/// flushed and drained before any of its blocks is returned (about one
/// drain per 64 KiB of small blocks, one per large block).
///
/// Caller's contract:
/// - a block may be published (made reachable from persistent data) as
///   soon as `alloc` returns it: its descriptors are durable. Its
///   *contents* are the caller's to make durable, or to make recognisable
///   as torn (a checksum) if it publishes them in the same drain;
/// - a block is freed only after every persistent reference to it is gone
///   durably; [`Heap::retire`] additionally waits for readers pinned with
///   [`Heap::pin`] to leave before the block can be handed out again.
///
/// After a crash, [`Heap::recover`] rebuilds the free space from the set of
/// reachable blocks the owner provides; after [`Heap::close`], the saved
/// state is loaded by [`Heap::open_clean`] without a walk.
#[derive(Clone)]
pub struct Heap {
    sh: Arc<Shared>,
}

impl std::fmt::Debug for Heap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Heap").field("layout", &self.sh.layout).finish_non_exhaustive()
    }
}

fn corrupt(offset: u64, why: impl Into<String>) -> HeapError {
    HeapError::Corrupt { offset, why: why.into() }
}

/// Recovery's note on a page of a slab met: where the slab's bitmap starts
/// (40 bits), its class and the page's place in the slab; never zero.
fn pack_page_slab(base: usize, class: usize, k: u64) -> u64 {
    1 << 63 | (k << 48) | ((class as u64) << 40) | base as u64
}

fn unpack_page_slab(v: u64) -> (usize, usize, u64) {
    ((v & ((1 << 40) - 1)) as usize, ((v >> 40) & 0xff) as usize, (v >> 48) & 0x7fff)
}

impl Heap {
    /// Bytes of heap (allocatable pages) an area of `area_len` bytes yields.
    pub fn capacity_for(area_len: u64) -> u64 {
        Layout::compute(0, area_len).map_or(0, |l| l.heap_bytes())
    }

    /// Heap bytes of the heap in `[area_off, area_off + area_len)`, read
    /// from its header.
    pub fn capacity_of(region: &Region, area_off: u64, area_len: u64) -> Result<u64, HeapError> {
        Ok(Self::read_header(region, area_off, area_len)?.heap_bytes())
    }

    /// Whether the heap in `[area_off, area_off + area_len)` has the
    /// largest layout of its kind for that area: the format-time one, or,
    /// once grown, the grown one (not so after a grow interrupted between
    /// the owner's commit and the switch).
    pub fn fills_area(region: &Region, area_off: u64, area_len: u64) -> Result<bool, HeapError> {
        let l = Self::read_header(region, area_off, area_len)?;
        let full = if l.is_grown() { l.grown_to(area_off + area_len) } else { Layout::compute(area_off, area_len) };
        Ok(full == Some(l))
    }

    fn new(region: Arc<Region>, layout: Layout) -> Heap {
        let info: PageInfo = (0..layout.pages).map(|_| AtomicU64::new(0)).collect();
        let zero_slabs = region.persist_info().backend != crate::Backend::Volatile;
        Heap {
            sh: Arc::new(Shared {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                region: region.clone(),
                layout,
                pages: parking_lot::Mutex::new(PageRuns::default()),
                info,
                classes: (0..NCLASSES)
                    .map(|c| if zero_slabs { ClassPool::tracking_untouched(c) } else { ClassPool::new(c) })
                    .collect(),
                cells: parking_lot::Mutex::new(Vec::new()),
                orphans: parking_lot::Mutex::new(Vec::new()),
                spares: parking_lot::Mutex::new(Vec::new()),
                epoch: Epoch::new(),
                large_pages: AtomicU64::new(0),
                zero_slabs,
            }),
        }
    }

    /// Format a fresh heap in `[area_off, area_off + area_len)`. The format
    /// is written and flushed, and durable after the caller's next drain,
    /// which must come before anything records where the heap is (the
    /// store drains before it writes its superblock).
    pub fn format(region: Arc<Region>, area_off: u64, area_len: u64) -> Result<Heap, HeapError> {
        let layout = Layout::compute(area_off, area_len).ok_or(HeapError::TooSmall { len: area_len })?;
        region.check(area_off, area_len).map_err(|e| HeapError::BadHeader { what: e.to_string() })?;
        // Descriptors all zero: nothing assigned.
        region.set_nodrain(layout.desc_off, 0, (layout.pages * 8) as usize);
        // The last word, `grown`, is zero: the format-time layout.
        let hdr = [MAGIC, layout.pages, layout.desc_off, layout.bitmap_off, layout.pages_off, 0];
        let mut bytes = Vec::with_capacity(48);
        for w in hdr {
            bytes.extend_from_slice(&w.to_le_bytes());
        }
        region.copy_nodrain(area_off, &bytes);
        let h = Heap::new(region, layout);
        h.sh.pages.lock().give(0, layout.pages);
        Ok(h)
    }

    /// Zero the header's words after the five of the format-time layout
    /// (the `grown` word and the reserved rest) and make that durable.
    /// For a heap formatted before heaps could grow: its format wrote the
    /// first five words only, so on media that was not zero beforehand the
    /// others may hold anything. Call it before the heap is opened.
    pub fn clear_header_tail(region: &Region, area_off: u64) -> Result<(), crate::DrainError> {
        region.set_nodrain(area_off + GROWN_AT, 0, (HEADER - GROWN_AT) as usize);
        region.drain()
    }

    pub(crate) fn read_header(region: &Region, area_off: u64, area_len: u64) -> Result<Layout, HeapError> {
        region.check(area_off, area_len.max(HEADER)).map_err(|e| HeapError::BadHeader { what: e.to_string() })?;
        let w = |i: u64| region.read_u64(area_off + i * 8);
        let words = [w(0), w(1), w(2), w(3), w(4), region.read_u64(area_off + GROWN_AT)];
        Layout::from_header(area_off, area_len, words).map_err(|what| HeapError::BadHeader { what })
    }

    fn read_desc(&self, page: u64) -> u64 {
        self.sh.region.read_u64(self.sh.layout.desc_off + page * 8)
    }

    /// Open a heap that was closed cleanly with [`Heap::close`]: load the
    /// saved descriptors and slab bitmaps; no walk.
    pub fn open_clean(region: Arc<Region>, area_off: u64, area_len: u64) -> Result<Heap, HeapError> {
        let layout = Self::read_header(&region, area_off, area_len)?;
        let h = Heap::new(region, layout);
        let sh = &h.sh;
        let mut runs = PageRuns::default();
        let mut free_start: Option<u64> = None;
        // One slab's bitmap words.
        let mut live = Vec::new();
        let mut p = 0;
        while p < layout.pages {
            let d = h.read_desc(p);
            let at = layout.desc_off + p * 8;
            let used = match desc_tag(d) {
                TAG_NONE => {
                    free_start.get_or_insert(p);
                    p += 1;
                    continue;
                }
                TAG_SLAB => {
                    let c = desc_class(d);
                    if c >= NCLASSES || p + SLAB_PAGES > layout.pages {
                        return Err(corrupt(at, format!("slab descriptor {d:#x}")));
                    }
                    let cap = blocks_per_slab(c) as u64;
                    let bm = layout.bitmap_off + p * 32;
                    live.clear();
                    live.extend((0..cap.div_ceil(64)).map(|w| sh.region.read_u64(bm + w * 8)));
                    let last = live.last().copied().unwrap_or(0);
                    if !cap.is_multiple_of(64) && last >> (cap % 64) != 0 {
                        return Err(corrupt(bm, "live bit past the end of a slab"));
                    }
                    sh.classes[c].install(p, &live);
                    for q in p..p + SLAB_PAGES {
                        sh.info[q as usize].store(desc(TAG_SLAB, c as u64, p), Ordering::Relaxed);
                    }
                    SLAB_PAGES
                }
                TAG_LARGE => {
                    let n = desc_count(d);
                    if n == 0 || p + n > layout.pages {
                        return Err(corrupt(at, format!("extent descriptor {d:#x}")));
                    }
                    sh.info[p as usize].store(desc(TAG_LARGE, 0, n), Ordering::Relaxed);
                    sh.large_pages.fetch_add(n, Ordering::Relaxed);
                    n
                }
                _ => return Err(corrupt(at, format!("descriptor {d:#x} where a slab or extent should start"))),
            };
            if let Some(s) = free_start.take() {
                runs.give(s, p - s);
            }
            p += used;
        }
        if let Some(s) = free_start {
            runs.give(s, layout.pages - s);
        }
        *sh.pages.lock() = runs;
        Ok(h)
    }

    /// Open after a crash: every block in `reachable` (region offsets of
    /// blocks the owner can reach) is live, everything else is free.
    pub fn recover(
        region: Arc<Region>,
        area_off: u64,
        area_len: u64,
        reachable: impl IntoIterator<Item = u64>,
    ) -> Result<Heap, HeapError> {
        let layout = Self::read_header(&region, area_off, area_len)?;
        let h = Heap::new(region, layout);
        let sh = &h.sh;
        let mut used = vec![false; layout.pages as usize];
        let mut claim = |from: u64, n: u64, off: u64| -> Result<(), HeapError> {
            for q in from..from + n {
                if std::mem::replace(&mut used[q as usize], true) {
                    return Err(corrupt(off, format!("block overlaps another reachable block at page {q}")));
                }
            }
            Ok(())
        };
        // The slabs met so far and their live blocks, built here and
        // installed once at the end. Per page of a slab met: its class,
        // its place in the slab and where the slab's bitmap starts in
        // `words`, so that a block costs two reads in random places, not
        // five (two descriptors, a map, the slab, its bitmap).
        let mut page_slab: Vec<u64> = vec![0; layout.pages as usize];
        let mut words: Vec<u64> = Vec::new();
        let mut slabs: Vec<(u64, usize, usize)> = Vec::new();
        for off in reachable {
            let page = layout.page_of(off).ok_or_else(|| corrupt(off, "reachable offset outside the heap"))?;
            let known = page_slab[page as usize];
            let (head, c, base) = if known != 0 {
                let (base, c, k) = unpack_page_slab(known);
                (page - k, c, base)
            } else {
                let d = h.read_desc(page);
                match desc_tag(d) {
                    TAG_LARGE => {
                        let n = desc_count(d);
                        if off != layout.page_off(page) || n == 0 || page + n > layout.pages {
                            return Err(corrupt(off, format!("not the start of an extent (descriptor {d:#x})")));
                        }
                        claim(page, n, off)?;
                        sh.info[page as usize].store(desc(TAG_LARGE, 0, n), Ordering::Relaxed);
                        sh.large_pages.fetch_add(n, Ordering::Relaxed);
                        continue;
                    }
                    TAG_SLAB | TAG_CONT => {
                        let head = if desc_tag(d) == TAG_SLAB { page } else { page.wrapping_sub(desc_count(d)) };
                        let hd = if head < layout.pages { h.read_desc(head) } else { 0 };
                        if desc_tag(hd) != TAG_SLAB
                            || desc_class(hd) >= NCLASSES
                            || head + SLAB_PAGES > layout.pages
                            || page - head >= SLAB_PAGES
                        {
                            return Err(corrupt(off, format!("no slab head for page {page} (descriptor {d:#x})")));
                        }
                        // A slab met for the first time (every page of a
                        // slab met is known): its other pages must say so
                        // too, as `new_slab` and `close` write them.
                        for k in 1..SLAB_PAGES {
                            if h.read_desc(head + k) != desc(TAG_CONT, 0, k) {
                                return Err(corrupt(
                                    off,
                                    format!("slab at page {head}: page {} misdescribed", head + k),
                                ));
                            }
                        }
                        if sh.info[head as usize].load(Ordering::Relaxed) != 0 {
                            return Err(corrupt(off, "slab overlaps an extent"));
                        }
                        claim(head, SLAB_PAGES, off)?;
                        let c = desc_class(hd);
                        let base = words.len();
                        words.resize(base + blocks_per_slab(c).div_ceil(64) as usize, 0);
                        slabs.push((head, c, base));
                        for k in 0..SLAB_PAGES {
                            sh.info[(head + k) as usize].store(desc(TAG_SLAB, c as u64, head), Ordering::Relaxed);
                            page_slab[(head + k) as usize] = pack_page_slab(base, c, k);
                        }
                        (head, c, base)
                    }
                    _ => return Err(corrupt(off, format!("page descriptor {d:#x} holds no blocks"))),
                }
            };
            let size = CLASS_SIZES[c] as u64;
            let rel = off - layout.page_off(head);
            if !rel.is_multiple_of(size) || rel / size >= blocks_per_slab(c) as u64 {
                return Err(corrupt(off, format!("not a block boundary of a {size}-byte slab")));
            }
            let idx = rel / size;
            let (word, bit) = (&mut words[base + (idx / 64) as usize], 1u64 << (idx % 64));
            if *word & bit != 0 {
                return Err(corrupt(off, "block reachable twice"));
            }
            *word |= bit;
        }
        for (head, c, base) in slabs {
            sh.classes[c].install(head, &words[base..base + blocks_per_slab(c).div_ceil(64) as usize]);
        }
        let mut runs = PageRuns::default();
        let mut start = None;
        for p in 0..=layout.pages {
            let free = p < layout.pages && !used[p as usize];
            match (free, start) {
                (true, None) => start = Some(p),
                (false, Some(s)) => {
                    runs.give(s, p - s);
                    start = None;
                }
                _ => {}
            }
        }
        *sh.pages.lock() = runs;
        // Slabs that ended up empty were still installed for their blocks'
        // sake; none are empty here (each had a reachable block).
        Ok(h)
    }

    /// The region the heap lives in.
    pub fn region(&self) -> &Arc<Region> {
        &self.sh.region
    }

    /// Run `f` with this thread's cache cell (registering one on first use).
    /// The thread-local list stays borrowed (shared) while `f` runs.
    ///
    /// A thread whose thread-locals are being destroyed (a store used from
    /// another thread-local's destructor) has no list any more: it borrows
    /// a spare cell instead, claimed for the call, or until the last guard
    /// pinned through it drops.
    #[inline]
    fn with_cell<R>(&self, f: impl FnOnce(&Arc<CacheCell>) -> R) -> R {
        let id = self.sh.id;
        let mut f = Some(f);
        let own = TLS.try_with(|t| {
            {
                let list = t.borrow();
                if let Some(e) = list.iter().find(|e| e.id == id) {
                    return (f.take().expect("called once"))(&e.cell);
                }
            }
            let cell = Arc::new(CacheCell::new(NCLASSES));
            self.sh.cells.lock().push(cell.clone());
            {
                let mut list = t.borrow_mut();
                list.retain(|e| e.owner.strong_count() > 0);
                list.push(TlsEntry { id, cell: cell.clone(), owner: Arc::downgrade(&self.sh) });
            }
            (f.take().expect("called once"))(&cell)
        });
        match own {
            Ok(r) => r,
            Err(_) => {
                let cell = self.sh.claim_spare();
                let r = (f.take().expect("not called yet"))(&cell);
                cell.release_if_idle();
                r
            }
        }
    }

    /// Allocate `size` bytes: the block's region offset, and whether the
    /// block is *untouched*: zero on media and not handed out since its
    /// slab was zeroed, so that no earlier contents (an old record, say)
    /// can reappear in it after a crash. A torn write into an untouched
    /// block leaves its zeros where it did not land, which a checksum
    /// tells from a whole write. Blocks of new slabs are untouched (slabs
    /// are zeroed when created, except on the volatile backend, where no
    /// crash can show old contents); freed and large blocks are not.
    pub fn alloc_untouched(&self, size: usize) -> Result<(u64, bool), AllocError> {
        match class_of(size) {
            Some(c) => {
                let (res, fresh) = self.with_cell(|cell| {
                    let mut cache = cell.cache.lock();
                    if let Some(off) = cache.bins[c].pop() {
                        return (Ok(off), false);
                    }
                    self.sh.alloc_slow(&mut cache, c, size)
                });
                if fresh {
                    // New slabs' descriptors (and zeroed blocks) durable
                    // before any of their blocks is handed out (see the
                    // type's contract); done here, with no lock or
                    // thread-local borrowed.
                    self.sh.region.drain().map_err(|e| AllocError::Drain(e.to_string()))?;
                }
                res.map(|o| (o & !UNTOUCHED, o & UNTOUCHED != 0))
            }
            None => self.sh.alloc_large(size).map(|o| (o, false)),
        }
    }

    /// Allocate `size` bytes; returns the block's region offset. The block's
    /// contents are unspecified.
    pub fn alloc(&self, size: usize) -> Result<u64, AllocError> {
        self.alloc_untouched(size).map(|(o, _)| o)
    }

    /// Usable bytes of the block at `off` (its class size or extent size).
    pub fn usable_size(&self, off: u64) -> Option<u64> {
        self.sh.block_size(off)
    }

    /// Free the block at `off` now. See the type's contract: no persistent
    /// reference to it may remain, and no reader may still use it (use
    /// [`Heap::retire`] when readers may).
    pub fn free(&self, off: u64) -> Result<(), AllocError> {
        let size = self.sh.block_size(off).ok_or(AllocError::InvalidFree { offset: off, why: "not a block" })?;
        if size > MAX_SMALL as u64 {
            return self.sh.free_large(off);
        }
        self.with_cell(|cell| {
            let mut cache = cell.cache.lock();
            self.sh.free_small(&mut cache, off, size)
        })
    }

    /// Pin this thread: blocks retired from now on are not reused while the
    /// guard lives.
    pub fn pin(&self) -> Guard {
        self.with_cell(|cell| self.sh.epoch.pin(cell))
    }

    /// Free the block at `off` once no reader pinned now can hold it.
    pub fn retire(&self, off: u64) -> Result<(), AllocError> {
        let size = self.sh.block_size(off).ok_or(AllocError::InvalidFree { offset: off, why: "not a block" })?;
        self.with_cell(|cell| {
            let mut cache = cell.cache.lock();
            let e = self.sh.epoch.retire_stamp();
            cache.retired.push_back((e, off));
            cache.retired_bytes += size;
            if cache.retired.len() >= 64 {
                self.sh.epoch.try_advance(self.sh.cells.lock().iter());
                self.sh.reclaim(&mut cache);
            }
        });
        Ok(())
    }

    /// Try to advance the epoch and reuse retired blocks of this thread.
    pub fn collect(&self) {
        self.sh.epoch.try_advance(self.sh.cells.lock().iter());
        self.with_cell(|cell| {
            let mut cache = cell.cache.lock();
            self.sh.reclaim(&mut cache);
        });
    }

    /// Save the free state for [`Heap::open_clean`] and make it durable.
    /// No other thread may be using the heap, and no guard may be alive.
    /// The owner records "closed cleanly" only after this returns.
    pub fn close(&self) -> Result<(), HeapError> {
        let sh = &self.sh;
        sh.quiesce();
        let l = sh.layout;
        let mut descs = vec![0u8; (l.pages * 8) as usize];
        let mut put = |p: u64, d: u64| descs[(p * 8) as usize..(p * 8 + 8) as usize].copy_from_slice(&d.to_le_bytes());
        for (c, pool) in sh.classes.iter().enumerate() {
            for (head, live) in pool.snapshot() {
                put(head, desc(TAG_SLAB, c as u64, 0));
                for k in 1..SLAB_PAGES {
                    put(head + k, desc(TAG_CONT, 0, k));
                }
                let mut bm = vec![0u8; (SLAB_PAGES * 32) as usize];
                for idx in live {
                    bm[idx as usize / 8] |= 1 << (idx % 8);
                }
                sh.region.copy_nodrain(l.bitmap_off + head * 32, &bm);
            }
        }
        for p in 0..l.pages {
            let i = sh.info[p as usize].load(Ordering::Relaxed);
            if desc_tag(i) == TAG_LARGE {
                put(p, i);
            }
        }
        sh.region.copy_nodrain(l.desc_off, &descs);
        sh.region.drain()?;
        Ok(())
    }

    /// Space accounting (flushes nothing; approximate while other threads
    /// allocate).
    pub fn stats(&self) -> HeapStats {
        let sh = &self.sh;
        let mut cached = [0u64; NCLASSES];
        let mut retired_bytes = 0;
        // A copy of the list: a thread that retires or squeezes takes its
        // cache lock and then `cells`, so holding `cells` while taking the
        // caches' locks would deadlock against it.
        let cells: Vec<Arc<CacheCell>> = sh.cells.lock().clone();
        for cell in &cells {
            let c = cell.cache.lock();
            for (k, b) in c.bins.iter().enumerate() {
                cached[k] += b.len() as u64;
            }
            retired_bytes += c.retired_bytes;
        }
        for &(_, off) in sh.orphans.lock().iter() {
            retired_bytes += sh.block_size(off).unwrap_or(0);
        }
        let (free_pages, largest) = {
            let p = sh.pages.lock();
            (p.free_pages(), p.largest())
        };
        let large_pages = sh.large_pages.load(Ordering::Relaxed);
        let mut classes = Vec::new();
        let mut small_alloc = 0u64; // bytes of slab blocks taken from slabs
        let mut free_bytes = free_pages * PAGE;
        for (k, pool) in sh.classes.iter().enumerate() {
            let o = pool.occupancy();
            if o.slabs == 0 {
                continue;
            }
            let size = CLASS_SIZES[k] as u64;
            free_bytes += o.slabs * (SLAB_BYTES - blocks_per_slab(k) as u64 * size);
            free_bytes += (o.free_blocks + cached[k]) * size;
            small_alloc += (o.blocks - o.free_blocks - cached[k]) * size;
            classes.push(ClassStats {
                size: size as u32,
                slabs: o.slabs,
                blocks: o.blocks,
                live: o.blocks - o.free_blocks - cached[k],
            });
        }
        let allocated = small_alloc + large_pages * PAGE; // live + retired
        let live_bytes = allocated.saturating_sub(retired_bytes);
        let used = l_used(sh.layout.heap_bytes(), free_pages);
        HeapStats {
            heap_bytes: sh.layout.heap_bytes(),
            live_bytes,
            retired_bytes,
            free_bytes,
            free_pages,
            largest_free_run: largest,
            large_pages,
            classes,
            fragmentation: if used == 0 { 0.0 } else { 1.0 - live_bytes as f64 / used as f64 },
        }
    }

    /// Check the heap against the owner's reachable set: every reachable
    /// block is allocated, and nothing allocated is unreachable except
    /// blocks retired and waiting for readers. Returns the number of live
    /// blocks.
    ///
    /// Works on sorted lists rather than hash sets: a million-key store
    /// hands in over a million offsets, and sorting them once and walking
    /// the lists side by side costs a fraction of hashing each one.
    pub fn audit(&self, reachable: impl IntoIterator<Item = u64>) -> Result<u64, String> {
        let (allocated, retired) = self.sh.allocated_and_retired();
        let mut reach: Vec<u64> = reachable.into_iter().collect();
        reach.sort_unstable();
        if let Some(w) = reach.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!("block {} reachable twice", w[0]));
        }
        if let Some(&off) = reach.iter().find(|o| retired.binary_search(o).is_ok()) {
            return Err(format!("reachable block {off} was retired"));
        }
        // Both lists sorted and without repeats: walk them side by side.
        let (mut i, mut j) = (0, 0);
        let mut leaked = 0usize;
        let mut first_leak = None;
        loop {
            match (reach.get(i), allocated.get(j)) {
                (Some(r), Some(a)) if r == a => {
                    i += 1;
                    j += 1;
                }
                (Some(&r), None) => return Err(format!("reachable block {r} is not allocated")),
                (Some(&r), Some(&a)) if r < a => return Err(format!("reachable block {r} is not allocated")),
                (_, Some(&a)) => {
                    if retired.binary_search(&a).is_err() {
                        leaked += 1;
                        first_leak.get_or_insert(a);
                    }
                    j += 1;
                }
                (None, None) => break,
            }
        }
        if let Some(off) = first_leak {
            return Err(format!("{leaked} allocated blocks are unreachable (leak), e.g. offset {off}"));
        }
        Ok(reach.len() as u64)
    }

    /// The blocks in use now, sorted: handed out and neither freed nor
    /// retired. A snapshot for tools that compare a pool with the heap
    /// (the crash explorer checks that no crash image reaches a block
    /// outside it); meant for a quiescent heap, as [`Heap::audit`] is.
    pub fn blocks_in_use(&self) -> Vec<u64> {
        let (mut allocated, retired) = self.sh.allocated_and_retired();
        allocated.retain(|o| retired.binary_search(o).is_err());
        allocated
    }
}

fn l_used(heap: u64, free_pages: u64) -> u64 {
    heap - free_pages * PAGE
}

impl Shared {
    /// Blocks handed out and not given back (thread caches excluded), and
    /// blocks retired and waiting for readers (also counted in the first
    /// list): both sorted.
    fn allocated_and_retired(&self) -> (Vec<u64>, Vec<u64>) {
        let mut cached: Vec<u64> = Vec::new();
        let mut retired: Vec<u64> = Vec::new();
        // A copy of the list, as in `stats`.
        let cells: Vec<Arc<CacheCell>> = self.cells.lock().clone();
        for cell in &cells {
            let c = cell.cache.lock();
            cached.extend(c.bins.iter().flatten().map(|&o| o & !UNTOUCHED));
            retired.extend(c.retired.iter().map(|&(_, o)| o));
        }
        retired.extend(self.orphans.lock().iter().map(|&(_, o)| o));
        cached.sort_unstable();
        retired.sort_unstable();
        let mut allocated: Vec<u64> = Vec::new();
        for (c, pool) in self.classes.iter().enumerate() {
            let size = CLASS_SIZES[c] as u64;
            for (head, live) in pool.snapshot() {
                let base = self.layout.page_off(head);
                allocated.extend(live.into_iter().map(|idx| base + idx as u64 * size));
            }
        }
        for p in 0..self.layout.pages {
            if desc_tag(self.info[p as usize].load(Ordering::Relaxed)) == TAG_LARGE {
                allocated.push(self.layout.page_off(p));
            }
        }
        allocated.sort_unstable();
        // A block in a thread's cache is free, though its slab counts it.
        allocated.retain(|o| cached.binary_search(o).is_err());
        (allocated, retired)
    }

    fn block_size(&self, off: u64) -> Option<u64> {
        let page = self.layout.page_of(off)?;
        let i = self.info[page as usize].load(Ordering::Acquire);
        match desc_tag(i) {
            TAG_SLAB => {
                let c = desc_class(i);
                let size = CLASS_SIZES[c] as u64;
                let rel = off - self.layout.page_off(desc_count(i));
                (rel.is_multiple_of(size) && rel / size < blocks_per_slab(c) as u64).then_some(size)
            }
            TAG_LARGE if off == self.layout.page_off(page) => Some(desc_count(i) * PAGE),
            _ => None,
        }
    }

    fn block_ref(&self, off: u64) -> BlockRef {
        let off = off & !UNTOUCHED;
        let page = self.layout.page_of(off).expect("block in heap");
        let i = self.info[page as usize].load(Ordering::Acquire);
        let head = desc_count(i);
        let size = CLASS_SIZES[desc_class(i)] as u64;
        (head, ((off - self.layout.page_off(head)) / size) as u32)
    }

    /// Hand pages to a new slab of class `c`: descriptors written and
    /// flushed (`alloc` drains them).
    fn new_slab(&self, c: usize) -> Option<u64> {
        let head = self.pages.lock().take(SLAB_PAGES)?;
        let mut d = Vec::with_capacity((SLAB_PAGES * 8) as usize);
        d.extend_from_slice(&desc(TAG_SLAB, c as u64, 0).to_le_bytes());
        for k in 1..SLAB_PAGES {
            d.extend_from_slice(&desc(TAG_CONT, 0, k).to_le_bytes());
        }
        let at = self.layout.desc_off + head * 8;
        self.region.write(at, &d);
        self.region.flush(at, d.len());
        if self.zero_slabs {
            self.region.set_nodrain(self.layout.page_off(head), 0, SLAB_BYTES as usize);
        }
        for q in head..head + SLAB_PAGES {
            self.info[q as usize].store(desc(TAG_SLAB, c as u64, head), Ordering::Release);
        }
        Some(head)
    }

    fn release_slabs(&self, heads: &[u64]) {
        if heads.is_empty() {
            return;
        }
        for &h in heads {
            for q in h..h + SLAB_PAGES {
                self.info[q as usize].store(0, Ordering::Release);
            }
        }
        let mut p = self.pages.lock();
        for &h in heads {
            p.give(h, SLAB_PAGES);
        }
    }

    /// Move free blocks of class `c` into `cache`; whether it started new
    /// slabs (whose descriptors the caller must drain before handing out
    /// a block).
    fn refill(&self, cache: &mut Cache, c: usize) -> bool {
        let mut got = Vec::new();
        let mut fresh = false;
        self.classes[c].refill(batch(c), &mut got, || {
            let h = self.new_slab(c);
            fresh |= h.is_some();
            h
        });
        let size = CLASS_SIZES[c] as u64;
        let block = |&(h, i): &(u64, u32)| {
            let tag = if i & UNTOUCHED_IDX != 0 { UNTOUCHED } else { 0 };
            (self.layout.page_off(h) + u64::from(i & !UNTOUCHED_IDX) * size) | tag
        };
        // Pop order: lowest offset last, so it is handed out first.
        cache.bins[c].extend(got.iter().rev().map(block));
        fresh
    }

    /// The block, and whether new slabs were started (see `refill`).
    fn alloc_slow(&self, cache: &mut Cache, c: usize, size: usize) -> (Result<u64, AllocError>, bool) {
        self.reclaim(cache);
        if let Some(off) = cache.bins[c].pop() {
            return (Ok(off), false);
        }
        let fresh = self.refill(cache, c);
        if let Some(off) = cache.bins[c].pop() {
            return (Ok(off), fresh);
        }
        // Out of pages: give back what caches and empty slabs hold, retry.
        self.squeeze(Some(cache));
        let fresh = self.refill(cache, c) | fresh;
        (cache.bins[c].pop().ok_or_else(|| self.full(size as u64)), fresh)
    }

    fn full(&self, requested: u64) -> AllocError {
        AllocError::PoolFull { requested, largest_free: self.pages.lock().largest() * PAGE }
    }

    /// Under pressure: advance the epoch, reclaim what is safe, return
    /// other threads' cached blocks and empty slabs.
    fn squeeze(&self, mine: Option<&mut Cache>) {
        let cells: Vec<Arc<CacheCell>> = self.cells.lock().clone();
        self.epoch.try_advance(cells.iter());
        if let Some(m) = mine {
            self.reclaim(m);
            self.give_back_all(m);
        }
        for cell in &cells {
            if let Some(mut other) = cell.cache.try_lock() {
                self.reclaim(&mut other);
                self.give_back_all(&mut other);
            }
        }
        self.reclaim_orphans();
        for pool in &self.classes {
            let heads = pool.release_empty();
            self.release_slabs(&heads);
        }
    }

    fn give_back_all(&self, cache: &mut Cache) {
        for c in 0..NCLASSES {
            if !cache.bins[c].is_empty() {
                let blocks: Vec<BlockRef> = cache.bins[c].drain(..).map(|o| self.block_ref(o)).collect();
                let r = self.classes[c].give_back(&blocks);
                self.release_slabs(&r.released);
            }
        }
    }

    fn alloc_large(&self, size: usize) -> Result<u64, AllocError> {
        let n = (size as u64).div_ceil(PAGE).max(1);
        let take = || self.pages.lock().take(n);
        let page = match take() {
            Some(p) => p,
            None => {
                self.squeeze(None);
                self.with_own_cache(|c| self.reclaim(c));
                take().ok_or_else(|| self.full(size as u64))?
            }
        };
        let d = desc(TAG_LARGE, 0, n);
        let at = self.layout.desc_off + page * 8;
        self.region.store_u64(at, d);
        self.region.flush(at, 8);
        self.info[page as usize].store(d, Ordering::Release);
        self.large_pages.fetch_add(n, Ordering::Relaxed);
        // The descriptor durable before the block is handed out. On failure
        // the extent stays taken until a recovery finds it unreachable.
        self.region.drain().map_err(|e| AllocError::Drain(e.to_string()))?;
        Ok(self.layout.page_off(page))
    }

    fn with_own_cache(&self, f: impl FnOnce(&mut Cache)) {
        let id = self.id;
        let cell = TLS.try_with(|t| t.borrow().iter().find(|e| e.id == id).map(|e| e.cell.clone())).ok().flatten();
        if let Some(cell) = cell {
            f(&mut cell.cache.lock());
        }
    }

    fn free_large(&self, off: u64) -> Result<(), AllocError> {
        let page = self.layout.page_of(off).ok_or(AllocError::InvalidFree { offset: off, why: "outside the heap" })?;
        let i = self.info[page as usize].swap(0, Ordering::AcqRel);
        if desc_tag(i) != TAG_LARGE {
            self.info[page as usize].store(i, Ordering::Release);
            return Err(AllocError::InvalidFree { offset: off, why: "not an allocated extent" });
        }
        let n = desc_count(i);
        self.large_pages.fetch_sub(n, Ordering::Relaxed);
        self.pages.lock().give(page, n);
        Ok(())
    }

    fn free_small(&self, cache: &mut Cache, off: u64, size: u64) -> Result<(), AllocError> {
        let c = class_of(size as usize).expect("small");
        let bin = &mut cache.bins[c];
        bin.push(off);
        if bin.len() > 2 * batch(c) {
            let keep = batch(c);
            let blocks: Vec<BlockRef> = bin.drain(..bin.len() - keep).map(|o| self.block_ref(o)).collect();
            let r = self.classes[c].give_back(&blocks);
            self.release_slabs(&r.released);
            if !r.double_frees.is_empty() {
                return Err(AllocError::InvalidFree { offset: off, why: "double free" });
            }
        }
        Ok(())
    }

    fn free_any(&self, cache: &mut Cache, off: u64) {
        match self.block_size(off) {
            Some(s) if s > MAX_SMALL as u64 => {
                let _ = self.free_large(off);
            }
            Some(s) => {
                let _ = self.free_small(cache, off, s);
            }
            None => {}
        }
    }

    /// Free this cache's retired blocks that no reader can hold any more.
    fn reclaim(&self, cache: &mut Cache) {
        while let Some(&(e, off)) = cache.retired.front() {
            if !self.epoch.safe(e) {
                break;
            }
            cache.retired.pop_front();
            cache.retired_bytes -= self.block_size(off).unwrap_or(0);
            self.free_any(cache, off);
        }
    }

    fn reclaim_orphans(&self) {
        let ready: Vec<u64> = {
            let mut o = self.orphans.lock();
            let (ready, keep): (Vec<_>, Vec<_>) = o.drain(..).partition(|&(e, _)| self.epoch.safe(e));
            *o = keep;
            ready.into_iter().map(|(_, off)| off).collect()
        };
        if ready.is_empty() {
            return;
        }
        let mut scratch = Cache { bins: vec![Vec::new(); NCLASSES], ..Cache::default() };
        for off in ready {
            self.free_any(&mut scratch, off);
        }
        self.give_back_all(&mut scratch);
    }

    /// A spare cell for a thread without thread-locals: an idle one, or a
    /// new one. Spare cells are never freed (a guard points at its cell
    /// without a reference), so there are at most as many as claims were
    /// ever held at once: one per live guard of such a thread, plus one
    /// for the call in progress (a put from a destructor holds two). An
    /// idle spare keeps its cached and retired blocks until it is claimed
    /// again, the heap is squeezed, or the pool is closed.
    fn claim_spare(&self) -> Arc<CacheCell> {
        let mut spares = self.spares.lock();
        if let Some(c) = spares
            .iter()
            .find(|c| c.claimed.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok())
        {
            return c.clone();
        }
        let cell = Arc::new(CacheCell::new_spare(NCLASSES));
        std::mem::forget(cell.clone());
        self.cells.lock().push(cell.clone());
        spares.push(cell.clone());
        cell
    }

    /// A thread is gone: return its cached blocks, keep its retired ones.
    fn retire_cell(&self, cell: &Arc<CacheCell>) {
        {
            let mut c = cell.cache.lock();
            self.give_back_all(&mut c);
            let retired: Vec<(u64, u64)> = c.retired.drain(..).collect();
            c.retired_bytes = 0;
            self.orphans.lock().extend(retired);
        }
        self.cells.lock().retain(|c| !Arc::ptr_eq(c, cell));
    }

    /// No thread is using the heap: every retired block is free now, and
    /// every cached block goes back to its slab.
    fn quiesce(&self) {
        let cells: Vec<Arc<CacheCell>> = self.cells.lock().clone();
        let mut retired: Vec<u64> = self.orphans.lock().drain(..).map(|(_, o)| o).collect();
        for cell in &cells {
            let mut c = cell.cache.lock();
            retired.extend(c.retired.drain(..).map(|(_, o)| o));
            c.retired_bytes = 0;
        }
        let mut scratch = Cache { bins: vec![Vec::new(); NCLASSES], ..Cache::default() };
        for off in retired {
            self.free_any(&mut scratch, off);
        }
        self.give_back_all(&mut scratch);
        for cell in &cells {
            let mut c = cell.cache.lock();
            self.give_back_all(&mut c);
        }
    }
}
