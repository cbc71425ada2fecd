//! Opening, locking, probing and mapping a pool file or DAX device.
//!
//! The only file in the crate that talks to the kernel about files.

use crate::error::OpenError;
use memmap2::{Mmap, MmapMut, MmapOptions};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::ptr::NonNull;

/// What kind of storage backs the file, as far as the persistence choice is
/// concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Medium {
    /// tmpfs, ramfs or hugetlbfs: memory only.
    Memory(&'static str),
    /// A character device (device DAX).
    DaxDevice,
    /// Any other file system.
    Other,
}

/// A live mapping of the whole pool.
pub(crate) enum Mapping {
    /// Made by hand with `MAP_SHARED_VALIDATE | MAP_SYNC`.
    #[cfg(target_os = "linux")]
    Sync { ptr: NonNull<u8>, len: usize },
    /// Made by memmap2 (also used for anonymous memory).
    Mmap(MmapMut),
    /// Made by memmap2 without write permission (`Region::open_read_only`).
    ReadOnly(Mmap),
}

impl Mapping {
    pub(crate) fn base(&mut self) -> NonNull<u8> {
        match self {
            #[cfg(target_os = "linux")]
            Mapping::Sync { ptr, .. } => *ptr,
            Mapping::Mmap(m) => NonNull::new(m.as_mut_ptr()).expect("mmap never returns null"),
            // Never written through: `Region` refuses writes to it.
            Mapping::ReadOnly(m) => NonNull::new(m.as_ptr().cast_mut()).expect("mmap never returns null"),
        }
    }

    /// `msync(MS_SYNC)` of a range of the mapping.
    pub(crate) fn sync_range(&self, off: usize, len: usize) -> io::Result<()> {
        match self {
            #[cfg(target_os = "linux")]
            Mapping::Sync { ptr, len: total } => {
                let page = page_size();
                let start = off & !(page - 1);
                let end = (off + len).min(*total);
                // SAFETY: the range is page-aligned and inside our mapping.
                let rc = unsafe { libc::msync(ptr.as_ptr().add(start).cast(), end - start, libc::MS_SYNC) };
                if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
            }
            Mapping::Mmap(m) => m.flush_range(off, len),
            // Nothing was written.
            Mapping::ReadOnly(_) => Ok(()),
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        if let Mapping::Sync { ptr, len } = self {
            // SAFETY: we made this mapping with mmap and nothing refers to it
            // after the owning Region is dropped.
            unsafe { libc::munmap(ptr.as_ptr().cast(), *len) };
        }
    }
}

pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as usize } else { 4096 }
}

/// Open (and if asked, create and size) the file, and take its lock
/// (shared if `read_only`, which also opens it without write access).
/// Returns the file and its length in bytes.
pub(crate) fn open_locked(
    path: &Path,
    create_size: Option<u64>,
    min_len: u64,
    read_only: bool,
) -> Result<(File, u64, Medium), OpenError> {
    if path.is_dir() {
        return Err(OpenError::IsDirectory { path: path.to_path_buf() });
    }
    let file = OpenOptions::new()
        .read(true)
        .write(!read_only)
        .create(create_size.is_some() && !read_only)
        .truncate(false)
        .open(path)
        .map_err(|e| match OpenError::io(path, "open", e) {
            OpenError::NotFound { path } if create_size.is_some() => OpenError::NoDirectory { path },
            e => e,
        })?;
    // A lock held a moment longer than its holder wanted is retried for up
    // to ~100 ms before the pool counts as in use: a process that forks
    // (any thread spawning a command) lends every open descriptor, and
    // with it the lock of a pool just closed, to the child until it execs.
    let mut tries = 0;
    loop {
        let mode = if read_only { libc::LOCK_SH } else { libc::LOCK_EX };
        // SAFETY: flock on a descriptor we own; no memory is passed.
        if unsafe { libc::flock(file.as_raw_fd(), mode | libc::LOCK_NB) } == 0 {
            break;
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EWOULDBLOCK) if tries < 50 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            Some(libc::EWOULDBLOCK) => return Err(OpenError::Locked { path: path.to_path_buf() }),
            _ => return Err(OpenError::io(path, "flock", e)),
        }
    }
    let meta = file.metadata().map_err(|e| OpenError::io(path, "stat", e))?;
    let ft = meta.file_type();
    let (mut len, medium) = if ft.is_char_device() {
        (dax_device_size(meta.rdev()).map_err(|e| OpenError::io(path, "device size", e))?, Medium::DaxDevice)
    } else if ft.is_file() {
        (meta.len(), fs_medium(&file).map_err(|e| OpenError::io(path, "statfs", e))?)
    } else {
        return Err(OpenError::Io {
            path: path.to_path_buf(),
            op: "open",
            source: io::Error::new(io::ErrorKind::InvalidInput, "not a regular file or DAX character device"),
        });
    };
    if len == 0
        && let Some(size) = create_size
    {
        size_file(&file, size).map_err(|source| OpenError::Size { path: path.to_path_buf(), size, source })?;
        len = size;
    }
    if len < min_len {
        return Err(OpenError::TooSmall { path: path.to_path_buf(), found: len, needed: min_len });
    }
    if usize::try_from(len).is_err() {
        return Err(OpenError::Size {
            path: path.to_path_buf(),
            size: len,
            source: io::Error::new(io::ErrorKind::InvalidInput, "larger than the address space"),
        });
    }
    Ok((file, len, medium))
}

/// Extend a file of `old` bytes to `size`, its blocks reserved and its new
/// length durable; on failure it is cut back to `old` (its contents are a
/// pool: never lost).
pub(crate) fn extend_file(file: &File, old: u64, size: u64) -> io::Result<()> {
    file.set_len(size)?;
    let off = libc::off_t::try_from(old).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "size too large"))?;
    let add =
        libc::off_t::try_from(size - old).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "size too large"))?;
    // SAFETY: plain syscall on our descriptor.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), off, add) };
    let done = match rc {
        0 | libc::EOPNOTSUPP | libc::EINVAL => file.sync_data(),
        e => Err(io::Error::from_raw_os_error(e)),
    };
    if done.is_err() {
        let _ = file.set_len(old);
    }
    done
}

fn size_file(file: &File, size: u64) -> io::Result<()> {
    file.set_len(size)?;
    let len = libc::off_t::try_from(size).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "size too large"))?;
    // Reserve the blocks now, so that a full file system is an error here
    // and not a SIGBUS on some later store into the mapping.
    // SAFETY: plain syscall on our descriptor.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
    match rc {
        0 => Ok(()),
        // Some file systems cannot preallocate; the file is sized anyway.
        libc::EOPNOTSUPP | libc::EINVAL => Ok(()),
        e => {
            let _ = file.set_len(0);
            Err(io::Error::from_raw_os_error(e))
        }
    }
}

fn dax_device_size(rdev: u64) -> io::Result<u64> {
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    let s = std::fs::read_to_string(format!("/sys/dev/char/{major}:{minor}/size"))?;
    s.trim().parse().map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "unreadable device size"))
}

fn fs_medium(file: &File) -> io::Result<Medium> {
    // SAFETY: statfs is plain old data; zeroed is a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor and a pointer to a live statfs.
    if unsafe { libc::fstatfs(file.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    const RAMFS_MAGIC: i64 = 0x8584_58f6_u32 as i32 as i64;
    const HUGETLBFS_MAGIC: i64 = 0x9584_58f6_u32 as i32 as i64;
    #[allow(clippy::unnecessary_cast)] // f_type's width differs between targets
    let t = st.f_type as i64;
    Ok(match t {
        TMPFS_MAGIC => Medium::Memory("tmpfs"),
        _ if t as i32 == RAMFS_MAGIC as i32 => Medium::Memory("ramfs"),
        _ if t as i32 == HUGETLBFS_MAGIC as i32 => Medium::Memory("hugetlbfs"),
        _ => Medium::Other,
    })
}

/// Map `len` bytes of `file` shared. Tries `MAP_SHARED_VALIDATE | MAP_SYNC`
/// first (accepted only on a DAX file system, where it makes the page tables
/// durable so that cache flushes alone persist data), then falls back.
/// Returns the mapping and whether `MAP_SYNC` was accepted.
pub(crate) fn map_file(file: &File, len: u64, path: &Path) -> Result<(Mapping, bool), OpenError> {
    let len = len as usize;
    #[cfg(target_os = "linux")]
    {
        // SAFETY: a fresh shared mapping of our own descriptor; the kernel
        // picks the address. On failure nothing is mapped.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED_VALIDATE | libc::MAP_SYNC,
                file.as_raw_fd(),
                0,
            )
        };
        if p != libc::MAP_FAILED
            && let Some(ptr) = NonNull::new(p.cast::<u8>())
        {
            return Ok((Mapping::Sync { ptr, len }, true));
        }
    }
    // SAFETY: the file stays open and locked by us for the mapping's life;
    // other processes are kept out by the flock (advisory, as for any pool).
    let m = unsafe { MmapOptions::new().len(len).map_mut(file) }.map_err(|e| OpenError::io(path, "mmap", e))?;
    Ok((Mapping::Mmap(m), false))
}

/// Map `len` bytes of `file` shared and read-only.
pub(crate) fn map_file_read_only(file: &File, len: u64, path: &Path) -> Result<Mapping, OpenError> {
    // The lock is advisory, as for any pool.
    // SAFETY: the file stays open and share-locked by us for the mapping's
    // life, so no daxkv process writes it meanwhile.
    let m = unsafe { MmapOptions::new().len(len as usize).map(file) }.map_err(|e| OpenError::io(path, "mmap", e))?;
    Ok(Mapping::ReadOnly(m))
}

/// Anonymous private memory of `len` bytes (volatile pools, tests, bench).
pub(crate) fn map_anon(len: usize) -> io::Result<Mapping> {
    Ok(Mapping::Mmap(MmapOptions::new().len(len).map_anon()?))
}

/// Whether the platform reports that CPU caches are in the persistence
/// domain (eADR): every NVDIMM region says `cpu_cache`.
pub(crate) fn platform_has_eadr() -> bool {
    let Ok(dir) = std::fs::read_dir("/sys/bus/nd/devices") else { return false };
    let mut any = false;
    for e in dir.flatten() {
        if let Ok(s) = std::fs::read_to_string(e.path().join("persistence_domain")) {
            if s.trim() != "cpu_cache" {
                return false;
            }
            any = true;
        }
    }
    any
}
