//! [`Region`]: a mapped pool and the safe API through which every layer
//! above reads it, writes it and makes it durable.

use crate::error::{BoundsError, DrainError, OpenError};
use crate::map::{self, Mapping, Medium};
use crate::persist::backend::{Backend, PersistInfo, PersistOptions, Persistence};
use crate::persist::msync::DirtyPages;
use crate::persist::table::Ops;
use crate::sync::{AtomicU64, Ordering};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::ptr::{self, NonNull};

#[cfg(feature = "sim")]
use crate::sim::{Sim, SimConfig, SiteKind};
#[cfg(feature = "sim")]
use std::sync::Arc;

/// How to open a region.
#[derive(Debug, Clone, Default)]
pub struct RegionOptions {
    /// Persistence backend and overrides.
    pub persist: PersistOptions,
    /// If set, create the file when missing (or empty) with this size.
    pub create_size: Option<u64>,
    /// Smallest acceptable size; smaller files get `OpenError::TooSmall`.
    pub min_len: u64,
}

enum Kind {
    /// pmem, eadr, volatile: everything is in the ops table.
    Table,
    /// msync: flushes mark pages, drains msync them.
    Msync(DirtyPages),
    /// The crash simulator watches every store, flush and drain.
    #[cfg(feature = "sim")]
    Sim(Arc<Sim>),
}

/// A mapped pool (file, DAX device or anonymous memory) and its
/// persistence backend.
///
/// Offsets are `u64` from the start of the region. Accessors panic on an
/// out-of-bounds or misaligned offset, like slice indexing; code handling
/// offsets read from media validates them first with [`Region::check`].
///
/// Concurrency: the region is shared memory. Atomic accessors
/// (`load_u64`, `store_u64`, `compare_exchange_u64`) may race with each
/// other; plain reads and writes of a range must not overlap a concurrent
/// plain write of the same range. The layers above guarantee that by their
/// protocols (payloads are written before they are published and never
/// changed while reachable; reuse waits for readers to leave).
pub struct Region {
    base: NonNull<u8>,
    len: usize,
    ops: Ops,
    kind: Kind,
    info: PersistInfo,
    mapping: Mapping,
    _file: Option<File>,
    path: Option<PathBuf>,
    /// The pages are memory (tmpfs, DAX, anonymous): touching them all
    /// costs no I/O.
    memory_pages: bool,
    /// Mapped without write permission ([`Region::open_read_only`]): every
    /// write panics instead of faulting.
    read_only: bool,
}

// SAFETY: `base` points into `mapping`, owned by the region and unmapped only
// on drop; every access goes through methods that bounds-check it, and the
// sharing discipline above is the callers' contract, as for any shared
// memory. The backend state (DirtyPages, Sim) is itself thread-safe.
unsafe impl Send for Region {}
// SAFETY: as for Send.
unsafe impl Sync for Region {}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region").field("len", &self.len).field("path", &self.path).field("info", &self.info).finish()
    }
}

fn choose(p: Persistence, medium: Medium, map_sync: bool) -> Result<(Backend, String), OpenError> {
    let env_forced = std::env::var("DAXKV_PERSISTENCE").is_ok();
    Ok(match p {
        Persistence::Force(Backend::Sim) => {
            return Err(OpenError::Backend {
                backend: "sim",
                why: "the simulator runs on in-memory images (Region::sim), not on files".into(),
            });
        }
        Persistence::Force(b) => {
            let by = if env_forced { "DAXKV_PERSISTENCE" } else { "option" };
            (b, format!("forced by {by}"))
        }
        Persistence::Auto => match medium {
            Medium::DaxDevice => {
                if map::platform_has_eadr() {
                    (Backend::Eadr, "device DAX; platform persistence domain is cpu_cache (eADR)".into())
                } else {
                    (Backend::Pmem, "device DAX".into())
                }
            }
            _ if map_sync => {
                if map::platform_has_eadr() {
                    (
                        Backend::Eadr,
                        "MAP_SYNC accepted (DAX file system); persistence domain is cpu_cache (eADR)".into(),
                    )
                } else {
                    (Backend::Pmem, "MAP_SYNC accepted: DAX file system".into())
                }
            }
            Medium::Memory(fs) => {
                (Backend::Volatile, format!("file is on {fs}: memory only, nothing survives power loss"))
            }
            Medium::Other => {
                (Backend::Msync, "MAP_SYNC refused: ordinary file system, pages written with msync".into())
            }
        },
    })
}

/// What a region reports about its backend.
fn persist_info(backend: Backend, reason: String, ops: &Ops, map_sync: bool) -> PersistInfo {
    PersistInfo {
        backend,
        reason,
        flush: ops.flush_instr,
        copy: ops.copy_isa,
        movnt_threshold: ops.threshold(),
        map_sync,
    }
}

impl Region {
    /// Open (or create, with `create_size`) the pool at `path`, lock it, map
    /// it and pick the persistence backend.
    pub fn open(path: &Path, opts: &RegionOptions) -> Result<Region, OpenError> {
        Self::open_inner(path, opts, None)
    }

    /// Open the pool at `path` as [`Region::open`] does, first extending
    /// the file to `len` bytes if it is a regular file shorter than that
    /// (the new bytes read as zero). For growing a pool: the caller writes
    /// the grown pool's metadata into the new space.
    pub fn open_extended(path: &Path, opts: &RegionOptions, len: u64) -> Result<Region, OpenError> {
        Self::open_inner(path, opts, Some(len))
    }

    fn open_inner(path: &Path, opts: &RegionOptions, extend_to: Option<u64>) -> Result<Region, OpenError> {
        let (file, mut len, medium) = map::open_locked(path, opts.create_size, opts.min_len.max(64), false)?;
        // A pool being grown: the file is extended first, and cut back if
        // it cannot be mapped (nothing has been written to the new part).
        let mut extended_from = None;
        if let Some(size) = extend_to
            && len < size
            && !matches!(medium, map::Medium::DaxDevice)
        {
            let err = |source| OpenError::Size { path: path.to_path_buf(), size, source };
            if usize::try_from(size).is_err() {
                return Err(err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "larger than the address space",
                )));
            }
            map::extend_file(&file, len, size).map_err(err)?;
            extended_from = Some(len);
            len = size;
        }
        let mapped = map::map_file(&file, len, path).and_then(|(mapping, map_sync)| {
            let (backend, reason) = choose(opts.persist.persistence, medium, map_sync)?;
            let ops = Ops::build(backend, &opts.persist)?;
            Ok((mapping, map_sync, backend, reason, ops))
        });
        let (mut mapping, map_sync, backend, reason, ops) = match mapped {
            Ok(m) => m,
            Err(e) => {
                if let Some(old) = extended_from {
                    let _ = file.set_len(old);
                }
                return Err(e);
            }
        };
        let len = len as usize;
        let kind = match backend {
            Backend::Msync => Kind::Msync(DirtyPages::new(len, map::page_size())),
            _ => Kind::Table,
        };
        let info = persist_info(backend, reason, &ops, map_sync);
        log::info!("{}: {}", path.display(), info);
        Ok(Region {
            base: mapping.base(),
            len,
            ops,
            kind,
            info,
            mapping,
            _file: Some(file),
            path: Some(path.to_path_buf()),
            memory_pages: map_sync || !matches!(medium, map::Medium::Other),
            read_only: false,
        })
    }

    /// Open the pool at `path` for reading only: the file is opened and
    /// mapped without write access under a shared lock (a pool another
    /// process holds open is `Locked`), with the `volatile` backend. Any
    /// write through the region panics. For tools that must not change
    /// what they read (salvage), also on read-only media.
    pub fn open_read_only(path: &Path, min_len: u64) -> Result<Region, OpenError> {
        let (file, len, medium) = map::open_locked(path, None, min_len.max(64), true)?;
        let mut mapping = map::map_file_read_only(&file, len, path)?;
        let ops = Ops::build(Backend::Volatile, &PersistOptions::default())?;
        let info = persist_info(Backend::Volatile, "opened read-only".into(), &ops, false);
        Ok(Region {
            base: mapping.base(),
            len: len as usize,
            ops,
            kind: Kind::Table,
            info,
            mapping,
            _file: Some(file),
            path: Some(path.to_path_buf()),
            memory_pages: !matches!(medium, map::Medium::Other),
            read_only: true,
        })
    }

    /// A region of anonymous memory. `Auto` means `volatile`; forcing `pmem`
    /// or `eadr` runs the real flush instructions on DRAM (benchmarks).
    pub fn anonymous(len: usize, persist: &PersistOptions) -> Result<Region, OpenError> {
        let (backend, reason) = match persist.persistence {
            Persistence::Auto => (Backend::Volatile, "anonymous memory".to_string()),
            Persistence::Force(Backend::Msync) | Persistence::Force(Backend::Sim) => {
                return Err(OpenError::Backend {
                    backend: if persist.persistence == Persistence::Force(Backend::Msync) { "msync" } else { "sim" },
                    why: "not available on anonymous memory".into(),
                });
            }
            Persistence::Force(b) => (b, "forced on anonymous memory".to_string()),
        };
        let ops = Ops::build(backend, persist)?;
        let mut mapping = map::map_anon(len.max(64)).map_err(|e| OpenError::io(Path::new("<anonymous>"), "mmap", e))?;
        let info = persist_info(backend, reason, &ops, false);
        Ok(Region {
            base: mapping.base(),
            len,
            ops,
            kind: Kind::Table,
            info,
            mapping,
            _file: None,
            path: None,
            memory_pages: true,
            read_only: false,
        })
    }

    /// A simulated region whose persisted image and cache view both start
    /// as `image` (whose length must be a multiple of 64).
    #[cfg(feature = "sim")]
    pub fn sim(image: &[u8], cfg: SimConfig) -> Region {
        assert!(
            image.len().is_multiple_of(64) && !image.is_empty(),
            "sim image length must be a non-zero multiple of 64"
        );
        let mut mapping = map::map_anon(image.len()).expect("anonymous mapping for the simulator");
        let base = mapping.base();
        // SAFETY: the fresh mapping is image.len() bytes long and private.
        unsafe { ptr::copy_nonoverlapping(image.as_ptr(), base.as_ptr(), image.len()) };
        let opts = PersistOptions::default();
        let ops = Ops::build(Backend::Sim, &opts).expect("sim ops");
        let info = persist_info(Backend::Sim, "crash simulator".into(), &ops, false);
        Region {
            base,
            len: image.len(),
            ops,
            kind: Kind::Sim(Arc::new(Sim::new(image, cfg))),
            info,
            mapping,
            _file: None,
            path: None,
            memory_pages: false,
            read_only: false,
        }
    }

    /// The simulator behind this region, if it is simulated.
    #[cfg(feature = "sim")]
    pub fn simulator(&self) -> Option<&Arc<Sim>> {
        match &self.kind {
            Kind::Sim(s) => Some(s),
            _ => None,
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.len as u64
    }

    /// Whether the region is empty (never, for an opened pool).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Fault in every page of the mapping now, writable
    /// (`MADV_POPULATE_WRITE`, Linux 5.14+), so that no later store takes a
    /// page fault: on tmpfs the first touch of a page costs a fault and the
    /// kernel's zeroing of it, 1-2 µs, which a fresh pool otherwise pays
    /// inside its first writes. Done only where the pages are memory
    /// (tmpfs, ramfs, DAX, anonymous memory); on an ordinary file system it
    /// would dirty the whole file in the page cache, so it is skipped there
    /// and under the crash simulator. Returns whether the pages were
    /// touched. The pages of a tmpfs file are already reserved by
    /// `posix_fallocate` at creation: this costs time (about 0.2 s per GiB
    /// here), not memory.
    pub fn prefault(&self) -> std::io::Result<bool> {
        if !self.memory_pages || !matches!(self.kind, Kind::Table) || self.len == 0 || self.read_only {
            return Ok(false);
        }
        #[cfg(target_os = "linux")]
        {
            // SAFETY: `base..base+len` is exactly our live, page-aligned
            // mapping; populating it changes no byte of its contents.
            let rc = unsafe { libc::madvise(self.base.as_ptr().cast(), self.len, libc::MADV_POPULATE_WRITE) };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(true)
        }
        #[cfg(not(target_os = "linux"))]
        Ok(false)
    }

    /// The file's path, if the region maps a file.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The backend in use and why it was chosen.
    pub fn persist_info(&self) -> &PersistInfo {
        &self.info
    }

    /// Whether `[off, off+len)` lies inside the region.
    pub fn check(&self, off: u64, len: u64) -> Result<(), BoundsError> {
        match off.checked_add(len) {
            Some(end) if end <= self.len as u64 => Ok(()),
            _ => Err(BoundsError { offset: off, len, region_len: self.len as u64 }),
        }
    }

    #[inline]
    #[track_caller]
    fn at(&self, off: u64, len: usize) -> *mut u8 {
        if let Err(e) = self.check(off, len as u64) {
            panic!("{e}");
        }
        // SAFETY: off + len <= self.len, checked above, so the pointer stays
        // inside the mapping.
        unsafe { self.base.as_ptr().add(off as usize) }
    }

    /// [`Region::at`] for a write.
    #[inline]
    #[track_caller]
    fn at_mut(&self, off: u64, len: usize) -> *mut u8 {
        assert!(!self.read_only, "write to a region opened read-only");
        self.at(off, len)
    }

    #[inline]
    #[track_caller]
    fn atomic(&self, off: u64) -> &AtomicU64 {
        let p = self.at(off, 8);
        assert!(off.is_multiple_of(8), "atomic access at unaligned offset {off}");
        // The mapping is page aligned and off a multiple of 8; plain accesses
        // of the same word are excluded by the callers' protocol (type docs).
        // SAFETY: p is in bounds, 8-byte aligned, and lives as long as self.
        unsafe { &*(p as *const AtomicU64) }
    }

    #[cfg(feature = "sim")]
    fn word_reader(&self) -> impl Fn(usize) -> u64 + '_ {
        move |w| {
            let mut b = [0u8; 8];
            self.read(w as u64 * 8, &mut b);
            u64::from_le_bytes(b)
        }
    }

    /// Copy `buf.len()` bytes at `off` into `buf`.
    #[inline]
    #[track_caller]
    pub fn read(&self, off: u64, buf: &mut [u8]) {
        let p = self.at(off, buf.len());
        // SAFETY: in-bounds source, distinct destination; no concurrent
        // writer of this range (type docs).
        unsafe { ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), buf.len()) };
    }

    /// Read a little-endian u64 at any alignment (plain load).
    #[inline]
    #[track_caller]
    pub fn read_u64(&self, off: u64) -> u64 {
        let mut b = [0u8; 8];
        self.read(off, &mut b);
        u64::from_le_bytes(b)
    }

    /// Borrow `len` bytes at `off` without copying. The caller guarantees
    /// the range is not written while borrowed (published pool data is
    /// immutable until reclaimed, and reclamation waits for readers).
    #[inline]
    #[track_caller]
    pub fn bytes(&self, off: u64, len: usize) -> &[u8] {
        let p = self.at(off, len);
        // SAFETY: in bounds, lives as long as &self; immutability while
        // borrowed is the caller's contract stated above.
        unsafe { std::slice::from_raw_parts(p, len) }
    }

    /// Hint that the cache line at `off` will be read soon (no effect on
    /// contents; out-of-range offsets are ignored). Lets a scan overlap the
    /// cache misses of many records instead of taking them one by one.
    #[inline]
    pub fn prefetch(&self, off: u64) {
        if off < self.len as u64 {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a prefetch never faults and changes no memory; the
            // address is inside the mapping anyway.
            unsafe {
                core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
                    self.base.as_ptr().add(off as usize).cast(),
                )
            };
        }
    }

    /// Hint that the cache line holding `*x` (any value in DRAM, such as a
    /// volatile lock word) will be read soon.
    #[inline]
    pub fn prefetch_ref<T>(x: &T) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch never faults and changes no memory; `x` is a
        // live reference anyway.
        unsafe {
            core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>((x as *const T).cast())
        };
        #[cfg(not(target_arch = "x86_64"))]
        let _ = x;
    }

    /// Hint that the `len` bytes at address `addr` in DRAM will be read
    /// soon (one prefetch per line). The address is never dereferenced and
    /// need not be valid any more: a hint kept beside a pointer that may
    /// have changed (or been freed) since costs at most a wasted prefetch.
    #[inline]
    pub fn prefetch_addr(addr: usize, len: usize) {
        // Counted in lines, with wrapping steps: no address, however close
        // to the top, can overflow the loop.
        let first = addr & !63;
        let lines = (addr - first).saturating_add(len.max(1)).div_ceil(64);
        for i in 0..lines {
            let line = first.wrapping_add(i.wrapping_mul(64));
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a prefetch never faults and changes no memory, whatever
            // the address; the pointer made from it is never dereferenced.
            unsafe {
                core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(line as *const i8)
            };
            #[cfg(not(target_arch = "x86_64"))]
            let _ = line;
        }
    }

    /// Hint that the cache lines of `[off, off + len)` will be read soon
    /// (one prefetch per line, all issued at once so their misses overlap).
    /// Lines outside the region are skipped.
    #[inline]
    pub fn prefetch_range(&self, off: u64, len: u64) {
        // Clamped to the region, so `line` cannot wrap past u64::MAX (a
        // damaged record offset near it made this loop for ever).
        let end = off.saturating_add(len.max(1)).min(self.len as u64);
        let mut line = off & !63;
        while line < end {
            self.prefetch(line.max(off));
            line += 64;
        }
    }

    /// Atomic load of an aligned little-endian u64 (acquire).
    #[inline]
    #[track_caller]
    pub fn load_u64(&self, off: u64) -> u64 {
        u64::from_le(self.atomic(off).load(Ordering::Acquire))
    }

    /// Store bytes with ordinary cached stores, without flushing: they are
    /// durable only after a later `flush` of the range and a `drain`.
    #[inline]
    #[track_caller]
    pub fn write(&self, off: u64, src: &[u8]) {
        let p = self.at_mut(off, src.len());
        // SAFETY: in-bounds destination, distinct source; no concurrent
        // access of this range (type docs).
        unsafe { ptr::copy_nonoverlapping(src.as_ptr(), p, src.len()) };
        #[cfg(feature = "sim")]
        if let Kind::Sim(s) = &self.kind {
            s.on_write(&self.word_reader(), off as usize, src.len());
        }
    }

    /// Plain little-endian u64 store at any alignment, not flushed.
    #[inline]
    #[track_caller]
    pub fn write_u64(&self, off: u64, v: u64) {
        self.write(off, &v.to_le_bytes());
    }

    /// Atomic store of an aligned u64 (release): the publish. An aligned
    /// 8-byte store is the only store that never tears on power loss. It
    /// still needs `flush` + `drain` to be durable.
    #[inline]
    #[track_caller]
    pub fn store_u64(&self, off: u64, v: u64) {
        assert!(!self.read_only, "write to a region opened read-only");
        self.atomic(off).store(v.to_le(), Ordering::Release);
        #[cfg(feature = "sim")]
        if let Kind::Sim(s) = &self.kind {
            s.on_write(&self.word_reader(), off as usize, 8);
        }
    }

    /// Atomic compare-and-exchange of an aligned u64 (acq-rel). Returns the
    /// previous value: `Ok` if it was `current` and `new` was stored.
    #[inline]
    #[track_caller]
    pub fn compare_exchange_u64(&self, off: u64, current: u64, new: u64) -> Result<u64, u64> {
        assert!(!self.read_only, "write to a region opened read-only");
        let r = self
            .atomic(off)
            .compare_exchange(current.to_le(), new.to_le(), Ordering::AcqRel, Ordering::Acquire)
            .map(u64::from_le)
            .map_err(u64::from_le);
        #[cfg(feature = "sim")]
        if let (Kind::Sim(s), Ok(_)) = (&self.kind, &r) {
            s.on_write(&self.word_reader(), off as usize, 8);
        }
        r
    }

    /// The flushcache copy: store `src` at `off` so that the next `drain`
    /// makes it durable (non-temporal stores for large copies, cached
    /// stores + line flush for small ones and for unaligned edges).
    #[inline]
    #[track_caller]
    pub fn copy_nodrain(&self, off: u64, src: &[u8]) {
        self.copy_with(off, src, false);
    }

    /// `copy_nodrain` of whole cache lines: `off` 64-byte aligned and
    /// `src` a multiple of 64 bytes long (otherwise this is plain
    /// `copy_nodrain`). Non-temporal stores whatever the size, where the
    /// backend has them: a line written whole need not be fetched from
    /// memory first, nor flushed.
    #[inline]
    #[track_caller]
    pub fn copy_lines_nodrain(&self, off: u64, src: &[u8]) {
        self.copy_with(off, src, true);
    }

    #[inline]
    #[track_caller]
    fn copy_with(&self, off: u64, src: &[u8], lines: bool) {
        let p = self.at_mut(off, src.len());
        // SAFETY: in-bounds destination in our mapping, distinct source.
        unsafe {
            if lines {
                self.ops.copy_lines_nodrain(p, src.as_ptr(), src.len())
            } else {
                self.ops.copy_nodrain(p, src.as_ptr(), src.len())
            }
        };
        match &self.kind {
            Kind::Table => {}
            Kind::Msync(d) => d.mark(off as usize, src.len()),
            #[cfg(feature = "sim")]
            Kind::Sim(s) => {
                s.on_copy(&self.word_reader(), off as usize, src.len(), SiteKind::Copy, std::panic::Location::caller())
            }
        }
    }

    /// The memset twin of `copy_nodrain`: fill `len` bytes at `off`.
    #[inline]
    #[track_caller]
    pub fn set_nodrain(&self, off: u64, byte: u8, len: usize) {
        let p = self.at_mut(off, len);
        // SAFETY: in-bounds destination in our mapping.
        unsafe { self.ops.set_nodrain(p, byte, len) };
        match &self.kind {
            Kind::Table => {}
            Kind::Msync(d) => d.mark(off as usize, len),
            #[cfg(feature = "sim")]
            Kind::Sim(s) => {
                s.on_copy(&self.word_reader(), off as usize, len, SiteKind::Set, std::panic::Location::caller())
            }
        }
    }

    /// Start write-back of every cache line touched by `[off, off+len)`.
    #[inline]
    #[track_caller]
    pub fn flush(&self, off: u64, len: usize) {
        let p = self.at(off, len);
        match &self.kind {
            // SAFETY: in-bounds range of our mapping.
            Kind::Table => unsafe { self.ops.flush(p, len) },
            Kind::Msync(d) => d.mark(off as usize, len),
            #[cfg(feature = "sim")]
            Kind::Sim(s) => s.on_flush(off as usize, len, SiteKind::Flush, std::panic::Location::caller()),
        }
    }

    /// Wait until everything flushed, copied or filled before is durable.
    #[inline]
    #[track_caller]
    pub fn drain(&self) -> Result<(), DrainError> {
        match &self.kind {
            Kind::Table => {
                self.ops.drain();
                Ok(())
            }
            Kind::Msync(d) => d.drain(|o, l| self.mapping.sync_range(o, l)).map_err(DrainError),
            #[cfg(feature = "sim")]
            Kind::Sim(s) => {
                s.on_drain(std::panic::Location::caller());
                Ok(())
            }
        }
    }

    /// `flush` then `drain`.
    #[inline]
    #[track_caller]
    pub fn persist(&self, off: u64, len: usize) -> Result<(), DrainError> {
        self.flush(off, len);
        self.drain()
    }

    /// `copy_nodrain` then `drain`.
    #[inline]
    #[track_caller]
    pub fn copy_persist(&self, off: u64, src: &[u8]) -> Result<(), DrainError> {
        self.copy_nodrain(off, src);
        self.drain()
    }
}
