//! [`Store`]: opening, the point operations, and closing.

use crate::error::{Error, PoolError, Result};
use crate::format::{HEADER_BYTES, Superblock, VERSION};
use crate::hot::{Hot, Probe};
use crate::index::{Index, LeafRef};
use crate::leaf::{self, LEAF_BYTES, SLOTS};
use crate::local;
use crate::options::Options;
use crate::recovery;
use daxkv_alloc::{Guard, Heap, PersistInfo, Region, RegionOptions};
use daxkv_log::Log;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

/// Longest key, in bytes.
pub const MAX_KEY: usize = 16 * 1024;
/// Longest value, in bytes.
pub const MAX_VALUE: usize = 64 << 20;
/// Smallest pool.
pub const MIN_POOL: u64 = 1 << 20;

/// A persistent key-value store in one pool file. `Send + Sync`: share it
/// with `Arc` or by reference. Every write that returns `Ok` is durable
/// under the pool's persistence backend.
pub struct Store {
    pub(crate) region: Arc<Region>,
    pub(crate) heap: Heap,
    pub(crate) log: Log,
    pub(crate) log_lock: parking_lot::Mutex<()>,
    pub(crate) index: Index,
    pub(crate) head: u64,
    pub(crate) sb: parking_lot::Mutex<Superblock>,
    pub(crate) keys: AtomicI64,
    pub(crate) bytes: AtomicI64,
    /// Keys whose record carries an expiry (expired or not).
    pub(crate) expiring: AtomicI64,
    pub(crate) recoveries: AtomicU64,
    /// Leaves merged away (emptied or under-full) since open.
    pub(crate) merges: AtomicU64,
    /// Unfinished inserts the crash recovery at open dropped.
    pub(crate) dropped_at_recovery: u64,
    /// Key hash → current record, for gets (see `hot`).
    pub(crate) hot: Hot,
    pub(crate) opened_clean: bool,
    pub(crate) closed: AtomicBool,
    pub(crate) path: PathBuf,
    /// This store's identity for per-thread state (see `local`).
    pub(crate) id: u64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).field("keys", &self.len()).finish_non_exhaustive()
    }
}

/// A leaf left with at most this many keys by a delete is merged into its
/// predecessor (an emptied one is unlinked).
pub(crate) const MERGE_AT: u32 = 8;
/// ... when the two together hold at most this many keys, so that the
/// merged leaf still has room for inserts before it splits again.
pub(crate) const MERGE_MAX: u32 = 40;

/// Whether this thread's recent point reads mostly missed the point cache,
/// which decides how [`Store::read`] orders its work. A score per thread
/// (not per store: it is only a hint): a miss adds 2, a hit takes 1 away,
/// so it climbs while more than a third of the reads miss. Above
/// [`MissBias::EXPECT_MISS`] reads walk the index before the cache answers.
struct MissBias;

thread_local! {
    static MISS_BIAS: std::cell::Cell<u8> = const { std::cell::Cell::new(0) };
}

impl MissBias {
    const CAP: u8 = 64;
    const EXPECT_MISS: u8 = 32;

    #[inline]
    fn expect_miss() -> bool {
        MISS_BIAS.with(|b| b.get() > MissBias::EXPECT_MISS)
    }

    #[inline]
    fn hit() {
        MISS_BIAS.with(|b| b.set(b.get().saturating_sub(1)));
    }

    #[inline]
    fn miss() {
        MISS_BIAS.with(|b| b.set((b.get() + 2).min(MissBias::CAP)));
    }
}

/// A value borrowed from the pool without copying. The pool block it lives
/// in is not reused while this exists (the thread stays pinned).
pub struct ValueRef<'a> {
    bytes: &'a [u8],
    _pin: Guard,
}

impl std::ops::Deref for ValueRef<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.bytes
    }
}

impl AsRef<[u8]> for ValueRef<'_> {
    fn as_ref(&self) -> &[u8] {
        self.bytes
    }
}

/// Figures about a store.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Stats {
    /// Keys stored (expired keys not yet removed included).
    pub keys: u64,
    /// Bytes of keys plus values stored.
    pub bytes: u64,
    /// Keys stored with an expiry (expired ones not yet removed included).
    pub keys_with_expiry: u64,
    /// Size of the pool (its superblock's; the file may be longer after
    /// an interrupted [`Store::grow`]).
    pub pool_size: u64,
    /// Bytes of the heap area.
    pub heap_bytes: u64,
    /// Heap bytes in live blocks (records, leaves).
    pub heap_live_bytes: u64,
    /// Heap bytes free for allocation.
    pub heap_free_bytes: u64,
    /// Leaves in the tree.
    pub leaves: u64,
    /// The persistence backend.
    pub backend: daxkv_alloc::Backend,
    /// Why that backend was chosen.
    pub persistence_reason: String,
    /// Crash recoveries this pool has gone through.
    pub recoveries: u64,
    /// Whether this open found the pool closed cleanly (no recovery).
    pub opened_clean: bool,
    /// Leaves removed from the tree since open: emptied ones unlinked and
    /// under-full ones merged into their predecessor.
    pub merges: u64,
    /// Inserts that a crash cut short and the recovery at this open
    /// dropped: live bitmap bits whose slot was still zero or whose record
    /// failed its checksum. Such an insert was never acknowledged (its
    /// drain had not returned); see `docs/format.md`.
    pub dropped_at_recovery: u64,
    /// DRAM reserved for the point cache (see [`Options::point_cache`];
    /// pages it has not touched take no memory).
    pub point_cache_bytes: u64,
}

/// The outcome of [`Store::check`].
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct CheckReport {
    /// Leaves walked.
    pub leaves: u64,
    /// Keys found.
    pub keys: u64,
    /// Everything found wrong (empty when the store is sound).
    pub problems: Vec<String>,
}

impl CheckReport {
    /// Whether nothing is wrong.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The clock expiries are measured against: milliseconds since the Unix
/// epoch (0 if the system clock is set before it).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Whether an expiry (`None`: never) is still ahead of the clock; the
/// clock is read only for a time that is set.
#[inline]
pub(crate) fn unexpired(at: Option<u64>) -> bool {
    at.is_none_or(|at| at > now_ms())
}

pub(crate) fn check_key(key: &[u8]) -> Result<()> {
    if key.is_empty() {
        return Err(Error::EmptyKey);
    }
    if key.len() > MAX_KEY {
        return Err(Error::KeyTooLarge { len: key.len(), max: MAX_KEY });
    }
    Ok(())
}

pub(crate) fn check_value(v: &[u8]) -> Result<()> {
    if v.len() > MAX_VALUE {
        return Err(Error::ValueTooLarge { len: v.len(), max: MAX_VALUE });
    }
    Ok(())
}

/// What the store counts of its keys.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub keys: u64,
    /// Key and value bytes.
    pub bytes: u64,
    /// Keys whose record carries an expiry.
    pub expiring: u64,
}

/// Where a key is in a locked leaf.
pub(crate) struct Found {
    pub slot: usize,
    pub rec: u64,
}

impl Store {
    /// Create a new pool at `path` (the file must not exist or be empty).
    pub fn create(path: impl AsRef<Path>, opts: &Options) -> Result<Store, PoolError> {
        let path = path.as_ref();
        if opts.pool_size < MIN_POOL {
            return Err(PoolError::Options(format!("pool size {} is below the minimum {MIN_POOL}", opts.pool_size)));
        }
        let log_len = opts.log_len();
        if HEADER_BYTES + log_len + (512 << 10) > opts.pool_size {
            return Err(PoolError::Options(format!(
                "log of {log_len} bytes leaves no heap in a {}-byte pool",
                opts.pool_size
            )));
        }
        if let Ok(m) = std::fs::metadata(path)
            && m.is_file()
            && m.len() > 0
        {
            return Err(PoolError::Options(format!("{} exists; open it instead of creating it", path.display())));
        }
        let ro = RegionOptions { persist: opts.persist.clone(), create_size: Some(opts.pool_size), min_len: MIN_POOL };
        let region = Arc::new(Region::open(path, &ro)?);
        if opts.prefault
            && let Err(e) = region.prefault()
        {
            log::warn!("{}: pages not faulted in ({e}); the first writes will take the page faults", path.display());
        }
        let size = region.len();
        let mut s = Self::format(region, size, path, log_len)?;
        s.log.set_group_commit(opts.group_commit);
        s.size_point_cache(opts.point_cache);
        Ok(s)
    }

    /// Give the store its point cache: `bytes` of it, or by default 1/32 of
    /// the pool. (Stores are assembled without one; a store `open` made
    /// through `create` already has the right one and keeps it.)
    fn size_point_cache(&mut self, bytes: Option<u64>) {
        let bytes = bytes.unwrap_or(self.sb.lock().pool_size / 32);
        if self.hot.buckets() != Hot::buckets_for(bytes) {
            self.hot = Hot::new(bytes);
        }
    }

    /// Create a store in an already mapped, zeroed region (anonymous memory,
    /// or the crash simulator's images). `log_size` as in [`Options`].
    pub fn create_on(region: Arc<Region>, log_size: u64) -> Result<Store, PoolError> {
        let size = region.len();
        Self::create_on_sized(region, size, log_size)
    }

    /// [`Store::create_on`] with a pool of `pool_size` bytes at the start of
    /// the region, which leaves the rest of it to grow into
    /// ([`Store::grow_on`]).
    pub fn create_on_sized(region: Arc<Region>, pool_size: u64, log_size: u64) -> Result<Store, PoolError> {
        if pool_size < MIN_POOL || pool_size > region.len() {
            return Err(PoolError::Options(format!(
                "a pool of {pool_size} bytes is below the minimum {MIN_POOL} or beyond its region of {}",
                region.len()
            )));
        }
        let log_len = log_size.div_ceil(4096) * 4096;
        if HEADER_BYTES + log_len + (512 << 10) > pool_size {
            return Err(PoolError::Options(format!("log of {log_len} bytes leaves no heap")));
        }
        let mut s = Self::format(region, pool_size, Path::new("<memory>"), log_len)?;
        s.size_point_cache(None);
        Ok(s)
    }

    /// Open a store in an already mapped region (see [`Store::create_on`]):
    /// recovery runs as for [`Store::open`].
    pub fn open_on(region: Arc<Region>) -> Result<Store, PoolError> {
        if region.len() < HEADER_BYTES {
            return Err(PoolError::NotAPool { path: "<memory>".into(), found: Vec::new() });
        }
        let mut s = recovery::open(region, Path::new("<memory>"), false)?;
        s.size_point_cache(None);
        Ok(s)
    }

    /// The region the store lives in.
    pub fn region(&self) -> &Arc<Region> {
        &self.region
    }

    /// Format a mapped, zeroed region as a new pool.
    pub(crate) fn format(region: Arc<Region>, pool_size: u64, path: &Path, log_len: u64) -> Result<Store, PoolError> {
        let log_off = HEADER_BYTES;
        let heap_off = log_off + log_len;
        let heap_len = pool_size - heap_off;
        // Heap and first leaf are written first; the log's creation ends
        // with the one drain that makes all three durable, before the
        // superblock can make them a pool.
        let heap = Heap::format(region.clone(), heap_off, heap_len)?;
        let head =
            heap.alloc(LEAF_BYTES).map_err(|e| PoolError::Options(format!("no room for the first leaf: {e}")))?;
        leaf::init(&region, head, &[], 0);
        let log = Log::create(region.clone(), log_off, log_len)?;
        let mut sb = Superblock {
            version: VERSION,
            uuid: uuid(),
            pool_size,
            log_off,
            log_len,
            heap_off,
            heap_len,
            head_leaf: head,
            ..Superblock::default()
        };
        // The superblock goes last: a crash before it leaves no pool.
        sb.write(&region)?;
        let index = Index::build(vec![LeafRef::new(head, Arc::from(&b""[..]))]);
        log::info!("{}: created pool of {pool_size} bytes; {}", path.display(), region.persist_info());
        Ok(Store::assemble(region, heap, log, index, sb, Counts::default(), false, path))
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn assemble(
        region: Arc<Region>,
        heap: Heap,
        log: Log,
        index: Index,
        sb: Superblock,
        counts: Counts,
        opened_clean: bool,
        path: &Path,
    ) -> Store {
        Store {
            region,
            heap,
            log,
            log_lock: parking_lot::Mutex::new(()),
            index,
            head: sb.head_leaf,
            recoveries: AtomicU64::new(sb.recoveries),
            merges: AtomicU64::new(0),
            dropped_at_recovery: 0,
            hot: Hot::off(),
            sb: parking_lot::Mutex::new(sb),
            keys: AtomicI64::new(counts.keys as i64),
            bytes: AtomicI64::new(counts.bytes as i64),
            expiring: AtomicI64::new(counts.expiring as i64),
            opened_clean,
            closed: AtomicBool::new(false),
            path: path.to_path_buf(),
            id: local::new_id(),
        }
    }

    /// Open the pool at `path` (creating it if missing and
    /// `create_if_missing` is set). After a crash this replays the log and
    /// rebuilds the index and free space; after a clean close it does
    /// neither. A file that is not a daxkv pool, or whose superblocks are
    /// both damaged, gets a typed error and is not written to. Damage that
    /// the crash path's walk finds gets a typed error too, before any leaf
    /// is repaired; by then the log's committed entries have been replayed
    /// (which changes no committed data). The walk scans large pools on up
    /// to four threads.
    pub fn open(path: impl AsRef<Path>, opts: &Options) -> Result<Store, PoolError> {
        let mut s = Self::open_inner(path.as_ref(), opts)?;
        s.log.set_group_commit(opts.group_commit);
        s.size_point_cache(opts.point_cache);
        Ok(s)
    }

    fn open_inner(path: &Path, opts: &Options) -> Result<Store, PoolError> {
        let missing = match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Ok(m) => m.is_file() && m.len() == 0,
            Err(_) => false,
        };
        if missing && opts.create_if_missing {
            return Self::create(path, opts);
        }
        let ro = RegionOptions { persist: opts.persist.clone(), create_size: None, min_len: HEADER_BYTES };
        let region = Arc::new(Region::open(path, &ro)?);
        // A crash while the pool was being created leaves the superblocks
        // unwritten (all zero): nothing was ever acknowledged in it, so
        // creating it again loses nothing.
        if opts.create_if_missing && region.bytes(0, HEADER_BYTES as usize).iter().all(|&b| b == 0) {
            if region.len() < MIN_POOL {
                return Err(PoolError::Options(format!("{} is too small to create a pool in", path.display())));
            }
            let log_len = Options::new().pool_size(region.len()).log_len();
            log::warn!(
                "{}: found no superblock (a creation interrupted by a crash): creating the pool",
                path.display()
            );
            let size = region.len();
            return Self::format(region, size, path, log_len);
        }
        recovery::open(region, path, opts.verify)
    }

    /// The persistence backend in use and why it was chosen.
    pub fn persist_info(&self) -> &PersistInfo {
        self.region.persist_info()
    }

    /// The pool file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of keys, counting expired keys not yet removed (see
    /// [`Store::purge_expired`]).
    pub fn len(&self) -> u64 {
        self.keys.load(Ordering::Relaxed).max(0) as u64
    }

    /// Whether the store holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn stats_bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed).max(0) as u64
    }

    pub(crate) fn live(&self) -> Result<()> {
        if self.closed.load(Ordering::Relaxed) { Err(Error::Closed) } else { Ok(()) }
    }

    /// Find `key` in `leaf` (locked, or read optimistically).
    #[inline]
    pub(crate) fn find(&self, leaf: u64, key: &[u8], fp: u8) -> Option<Found> {
        let r = &*self.region;
        let bits = leaf::bitmap(r, leaf);
        for i in leaf::live(bits & leaf::fingerprint_matches(r, leaf, fp)) {
            let rec = leaf::slot(r, leaf, i);
            // The header, key and (for small records) value in one go: the
            // caller reads the value next.
            leaf::prefetch_record(r, rec);
            if leaf::record_key(r, rec) == key {
                return Some(Found { slot: i, rec });
            }
        }
        None
    }

    /// Optimistic read of `key`: `f` sees the record, if any, and may be
    /// called again if a writer interferes. The point cache answers first;
    /// on a miss the tree does, and a record it finds is cached.
    ///
    /// How the two overlap depends on this thread's recent reads (see
    /// [`MissBias`]). While the cache mostly answers, the lookup runs alone
    /// and a hit never walks the index. While it mostly misses, the index
    /// is walked while the bucket's miss is in flight, and the leaf's first
    /// line prefetched, so that a miss does not wait for the bucket, the
    /// walk and the leaf one after the other.
    ///
    /// An expired record is absent here (see [`Store::read_record`]).
    #[inline]
    pub(crate) fn read<T>(&self, key: &[u8], mut f: impl FnMut(Option<u64>) -> T) -> T {
        let r = &*self.region;
        self.read_record(key, |rec| f(rec.filter(|&rec| leaf::record_alive(r, rec))))
    }

    /// [`Store::read`] that also sees an expired record (it is still the
    /// key's record until it is deleted or replaced).
    #[inline]
    pub(crate) fn read_record<T>(&self, key: &[u8], mut f: impl FnMut(Option<u64>) -> T) -> T {
        let h = leaf::key_hash(key);
        let lookup = |f: &mut dyn FnMut(Option<u64>) -> T| match self
            .hot
            .lookup(h, |rec| leaf::record_key(&self.region, rec) == key)
        {
            Probe::Hit(rec) => {
                MissBias::hit();
                Err(f(Some(rec)))
            }
            Probe::Miss(stamp) => {
                if self.hot.buckets() > 0 {
                    MissBias::miss();
                }
                Ok(stamp)
            }
        };
        if MissBias::expect_miss() {
            self.hot.prefetch(h);
            let g = self.index.generation();
            let snap = self.index.load();
            let (off, leaf) = snap.route_off(key);
            leaf::prefetch(&self.region, off);
            match lookup(&mut f) {
                Err(out) => out,
                Ok(stamp) => self.read_tree(key, h, stamp, (g, off, leaf), &mut f),
            }
        } else {
            let stamp = match lookup(&mut f) {
                Err(out) => return out,
                Ok(stamp) => stamp,
            };
            let g = self.index.generation();
            let snap = self.index.load();
            let (off, leaf) = snap.route_off(key);
            self.read_tree(key, h, stamp, (g, off, leaf), &mut f)
        }
    }

    /// [`Store::read`] through the tree, after the point cache missed with
    /// `stamp`, starting at the leaf `(generation, offset, leaf)` that a
    /// walk of the index after reading that generation found.
    fn read_tree<T>(
        &self,
        key: &[u8],
        h: u32,
        stamp: u64,
        first: (u64, u64, &Arc<LeafRef>),
        f: &mut dyn FnMut(Option<u64>) -> T,
    ) -> T {
        let fp = leaf::fingerprint_of(h);
        let attempt = |g: u64, off: u64, leaf: &LeafRef, f: &mut dyn FnMut(Option<u64>) -> T| {
            // The leaf's offset comes from the index node, so its misses
            // overlap the load of the `LeafRef`'s version.
            leaf::prefetch(&self.region, off);
            let v = leaf.read_begin();
            let rec = self.find(off, key, fp).map(|x| x.rec);
            let out = f(rec);
            if leaf.validate(v) && self.index.unchanged_since(g) {
                if let Some(rec) = rec {
                    self.hot.insert(h, stamp, rec);
                }
                return Some(out);
            }
            None
        };
        let (g, off, leaf) = first;
        if let Some(out) = attempt(g, off, leaf, f) {
            return out;
        }
        loop {
            let g = self.index.generation();
            let snap = self.index.load();
            let (off, leaf) = snap.route_off(key);
            if let Some(out) = attempt(g, off, leaf, f) {
                return out;
            }
        }
    }

    /// Start the cache misses of looking up `keys`, so that the lookups
    /// that follow (a pipelined batch of requests, a multi-key read) find
    /// their leaves and records cached instead of waiting for each miss in
    /// turn. Only a hint: it takes no lock, validates nothing and changes
    /// nothing; a key it did not prefetch, or one that moved meanwhile, is
    /// simply looked up at memory speed.
    pub fn prefetch(&self, keys: &[&[u8]]) {
        if keys.is_empty() || self.closed.load(Ordering::Relaxed) {
            return;
        }
        let r = &*self.region;
        let _pin = self.heap.pin();
        // Passes, each starting the misses the next one needs for all keys
        // at once (prefetching whole leaves for many keys would only fill
        // the line-fill buffers). First the point cache's buckets; the
        // records of the keys found there; for the others, the leaves'
        // headers and lock words, then the slots whose fingerprints match,
        // then their records.
        let hashes: Vec<u32> = keys.iter().map(|k| leaf::key_hash(k)).collect();
        for &h in &hashes {
            self.hot.prefetch(h);
        }
        let mut uncached: Vec<(&[u8], u32)> = Vec::with_capacity(keys.len());
        for (k, &h) in keys.iter().zip(&hashes) {
            let mut cached = false;
            for rec in self.hot.candidates(h) {
                leaf::prefetch_record(r, rec);
                cached = true;
            }
            if !cached {
                uncached.push((k, h));
            }
        }
        if uncached.is_empty() {
            return;
        }
        let snap = self.index.load();
        let offs: Vec<u64> = uncached
            .iter()
            .map(|(k, _)| {
                let (off, leaf) = snap.route_off(k);
                leaf::prefetch_header(r, off);
                leaf.prefetch();
                off
            })
            .collect();
        let mut slots: Vec<u64> = Vec::with_capacity(uncached.len());
        for (&(_, h), &off) in uncached.iter().zip(&offs) {
            let fp = leaf::fingerprint_of(h);
            for i in leaf::live(leaf::bitmap(r, off) & leaf::fingerprint_matches(r, off, fp)) {
                let at = leaf::slot_off(off, i);
                r.prefetch(at);
                slots.push(at);
            }
        }
        for &at in &slots {
            leaf::prefetch_record(r, r.load_u64(at) & !leaf::UNVERIFIED);
        }
    }

    /// The value of `key`, copied out.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        check_key(key)?;
        self.live()?;
        let _pin = self.heap.pin();
        Ok(self.read(key, |rec| rec.map(|r| leaf::record_value(&self.region, r).to_vec())))
    }

    /// The value of `key`, borrowed from the pool (zero-copy).
    pub fn get_ref(&self, key: &[u8]) -> Result<Option<ValueRef<'_>>> {
        check_key(key)?;
        self.live()?;
        let pin = self.heap.pin();
        let rec = self.read(key, |rec| rec);
        Ok(rec.map(|rec| ValueRef { bytes: leaf::record_value(&self.region, rec), _pin: pin }))
    }

    /// Whether `key` is present.
    pub fn contains(&self, key: &[u8]) -> Result<bool> {
        check_key(key)?;
        self.live()?;
        let _pin = self.heap.pin();
        Ok(self.read(key, |rec| rec.is_some()))
    }

    /// Route `key` and lock its leaf, making sure the leaf still owns it.
    pub(crate) fn lock_leaf(&self, key: &[u8]) -> Arc<LeafRef> {
        // Fast path: route once; if the index did not change between the
        // route and reading the leaf's version, and nobody locked the leaf
        // since, the leaf still owns the key (only a split or unlink of this
        // leaf, both under its lock, can change that).
        //
        // The root comes from this thread's snapshot while the generation
        // is unchanged (no `ArcSwap` load), and the leaf is cloned only
        // once locked: until the lock's compare-and-swap, nothing here
        // waits for the write-back of an insert this thread just returned
        // from (see `local`).
        let g = self.index.generation();
        let locked = local::with_root(self.id, &self.index, g, |root| {
            let (off, leaf) = root.route_off(key);
            leaf::prefetch(&self.region, off);
            let v = leaf.read_begin();
            (self.index.unchanged_since(g) && !leaf.is_dead() && leaf.lock_if_unchanged(v)).then(|| leaf.clone())
        });
        if let Some(leaf) = locked {
            local::settle(self.id, &self.hot);
            return leaf;
        }
        loop {
            let leaf = self.index.load().route(key).clone();
            leaf.lock();
            if !leaf.is_dead() && Arc::ptr_eq(self.index.load().route(key), &leaf) {
                return leaf;
            }
            leaf.unlock();
        }
    }

    /// Allocate and write a record (durable at the next drain).
    /// Also returns whether the block was untouched (zero on media, see
    /// `Heap::alloc_untouched`), which a one-drain insert needs.
    pub(crate) fn new_record(&self, key: &[u8], h: u32, value: &[u8], expires: Option<u64>) -> Result<(u64, bool)> {
        let (rec, untouched) = self.heap.alloc_untouched(leaf::record_len(key, value, expires))?;
        leaf::write_record(&self.region, rec, key, h, value, expires);
        Ok((rec, untouched))
    }

    /// Store `value` under `key`, with no expiry. Durable when it returns.
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.put_with_expiry(key, value, None)
    }

    /// Store `value` under `key`, to expire at `expires` (milliseconds
    /// since the Unix epoch; `None`: never). From that time on, reads,
    /// scans and transactions find the key absent; its record stays in the
    /// pool, counted by [`Store::len`], until a write replaces or deletes
    /// it or [`Store::purge_expired`] removes it. A time already past
    /// stores a key that is absent at once. Durable when it returns.
    pub fn put_with_expiry(&self, key: &[u8], value: &[u8], expires: Option<u64>) -> Result<()> {
        check_key(key)?;
        check_value(value)?;
        self.live()?;
        let h = leaf::key_hash(key);
        // The cache line the put ends with, fetched while it waits for the
        // record's write-back.
        self.hot.prefetch(h);
        // Lock first, then write the record: the lock's atomic
        // read-modify-writes (and the index load's) wait for every cache
        // line write-back in flight, so issued after the record's flushes
        // they would cost one more barrier per put.
        let leaf = self.lock_leaf(key);
        self.write_and_put_locked(leaf, key, value, expires, h)
    }

    /// Write the record for `key` = `value` and insert it in the locked
    /// `leaf`; unlocks it (also on error) and frees the record if it was
    /// not published.
    fn write_and_put_locked(
        &self,
        leaf: Arc<LeafRef>,
        key: &[u8],
        value: &[u8],
        expires: Option<u64>,
        h: u32,
    ) -> Result<()> {
        // Counted as a new key now, while no write-back is in flight (a
        // fetch-add after the record's stores would wait for them);
        // `put_locked` corrects the counts for a replacement or a failure.
        self.count(key.len() + value.len(), 1, expires.is_some());
        let (rec, untouched) = match self.new_record(key, h, value, expires) {
            Ok(r) => r,
            Err(e) => {
                self.count(key.len() + value.len(), -1, expires.is_some());
                leaf.unlock();
                return Err(e);
            }
        };
        self.put_locked(leaf, key, value.len(), rec, untouched, h)
    }

    /// Count one key of `bytes` bytes, with an expiry or not, in (`sign`
    /// 1) or out (`sign` -1).
    #[inline]
    fn count(&self, bytes: usize, sign: i64, expires: bool) {
        self.keys.fetch_add(sign, Ordering::Relaxed);
        self.bytes.fetch_add(sign * bytes as i64, Ordering::Relaxed);
        if expires {
            self.expiring.fetch_add(sign, Ordering::Relaxed);
        }
    }

    /// Insert or replace with the record `rec` (key hash `h`) in the locked
    /// `leaf`; unlocks it (also on error). Frees `rec` if it fails before
    /// publishing it. `untouched`: `rec`'s block was zero on media before
    /// the record was written (`Heap::alloc_untouched`). The caller has
    /// already counted the put as a new key of `vlen`-byte value; this
    /// corrects the counts for a replacement or a failure.
    ///
    /// A new key whose record is in an untouched block, going into a slot
    /// that is zero on media ([`LeafRef::safe`]), is published in one
    /// drain; anything else takes two (record and slot, then bitmap).
    pub(crate) fn put_locked(
        &self,
        mut leaf: Arc<LeafRef>,
        key: &[u8],
        vlen: usize,
        rec: u64,
        untouched: bool,
        h: u32,
    ) -> Result<()> {
        let r = &*self.region;
        let fp = leaf::fingerprint_of(h);
        let unpublished = |leaf: &LeafRef, e: Error| {
            leaf.unlock();
            // Read before the block is freed: the failure path only.
            let expires = leaf::record_expires(r, rec);
            let _ = self.heap.free(rec);
            self.count(key.len() + vlen, -1, expires);
            Err(e)
        };
        loop {
            let bits = leaf::bitmap(r, leaf.off);
            if bits == u64::MAX {
                // Full: split, then find the key's leaf again.
                if let Err(e) = self.split(&leaf) {
                    return unpublished(&leaf, e);
                }
                leaf.unlock();
                leaf = self.lock_leaf(key);
                continue;
            }
            let old = self.find(leaf.off, key, fp);
            let safe = leaf.safe() & !bits;
            if old.is_none() && untouched && safe != 0 {
                // A new key, its record in a block that was zero on media,
                // into a slot that is zero on media: record, slot and
                // bitmap bit become durable in one drain. Should the bit
                // reach media and the rest not, recovery finds a zero slot
                // or a record whose checksum fails (the lines that did not
                // land are zeros, never an older record), and drops the
                // bit; the put was not acknowledged. The slot is flagged
                // so that recovery knows which records to check.
                let j = safe.trailing_zeros() as usize;
                leaf.set_safe(leaf.safe() & !(1 << j));
                // The bucket's stamp from before the publish: caching the
                // record later is safe only if nothing touched the bucket
                // since (see `local`).
                let stamp = self.hot.stamp(h);
                leaf::insert_unverified(r, leaf.off, j, rec, fp, bits | (1 << j));
                let d = r.drain();
                leaf.unlock();
                if d.is_ok() {
                    // Nothing after the drain may be a locked instruction
                    // (it would wait for the write-back): the leaf
                    // reference and the cache fill go to the thread's next
                    // write.
                    local::defer(self.id, &self.hot, leaf, local::CacheFill { h, stamp, rec });
                } else {
                    // Published, so not freed; the pool is unusable now.
                    self.hot.replace(h, None, None);
                }
                return d.map_err(Error::from);
            }
            // Two drains: the slot (and, for a replacement, the record)
            // durable before the bitmap names it, since the bitmap also
            // drops the old slot, whose record must survive a torn
            // replacement. Free slots that may hold stale offsets are
            // zeroed in the same first drain, so that later inserts into
            // them take the one-drain path.
            let j = (!bits).trailing_zeros() as usize;
            leaf::write_slot(r, leaf.off, j, rec, fp);
            let zeroed = !bits & !leaf.safe() & !(1 << j);
            leaf::zero_slots(r, leaf.off, zeroed);
            if let Err(e) = r.drain() {
                leaf.set_safe(0);
                return unpublished(&leaf, e.into());
            }
            leaf.set_safe((leaf.safe() | zeroed) & !(1 << j));
            let mut nb = bits | (1 << j);
            if let Some(o) = &old {
                nb &= !(1u64 << o.slot);
            }
            leaf::publish_bitmap(r, leaf.off, nb);
            let d = r.drain();
            // Published: from here the record is the key's, even if the
            // drain fails (the pool is then unusable), so it is not freed.
            // The cache must stop naming the old record before the leaf
            // unlocks, and may name the new one once it is durable.
            self.hot.replace(h, old.as_ref().map(|o| o.rec), d.is_ok().then_some(rec));
            leaf.unlock();
            if let Some(o) = old {
                // Counted as a new key: it replaced one.
                let ov = leaf::record_lens(r, o.rec).map_or(0, |(_, v)| v);
                self.count(key.len() + ov, -1, leaf::record_expires(r, o.rec));
                let _ = self.heap.retire(o.rec);
            }
            return d.map_err(Error::from);
        }
    }

    /// Remove `key`; returns whether it was present (an expired key is
    /// removed too, and was not present). Durable when it returns.
    pub fn delete(&self, key: &[u8]) -> Result<bool> {
        check_key(key)?;
        self.live()?;
        let h = leaf::key_hash(key);
        let leaf = self.lock_leaf(key);
        Ok(self.delete_locked(leaf, key, h, false)? == Some(true))
    }

    /// Delete in the locked leaf (`h`: the key's hash); unlocks it. Returns
    /// whether the removed record was alive (`None`: nothing removed); an
    /// expired record is removed as well. `expired_only`: leave a live
    /// record alone.
    pub(crate) fn delete_locked(
        &self,
        leaf: Arc<LeafRef>,
        key: &[u8],
        h: u32,
        expired_only: bool,
    ) -> Result<Option<bool>> {
        let r = &*self.region;
        let Some(f) = self.find(leaf.off, key, leaf::fingerprint_of(h)) else {
            leaf.unlock();
            return Ok(None);
        };
        let alive = leaf::record_alive(r, f.rec);
        if alive && expired_only {
            leaf.unlock();
            return Ok(None);
        }
        let nb = leaf::bitmap(r, leaf.off) & !(1u64 << f.slot);
        leaf::publish_bitmap(r, leaf.off, nb);
        let d = r.drain();
        self.hot.replace(h, Some(f.rec), None);
        if let Err(e) = d {
            leaf.unlock();
            return Err(e.into());
        }
        let klen = key.len() as i64;
        let vlen = leaf::record_lens(r, f.rec).map_or(0, |(_, v)| v as i64);
        if leaf::record_expires(r, f.rec) {
            self.expiring.fetch_sub(1, Ordering::Relaxed);
        }
        if nb.count_ones() <= MERGE_AT {
            self.merge_underfull(&leaf);
        }
        leaf.unlock();
        let _ = self.heap.retire(f.rec);
        self.keys.fetch_sub(1, Ordering::Relaxed);
        self.bytes.fetch_sub(klen + vlen, Ordering::Relaxed);
        Ok(Some(alive))
    }

    /// Remove the locked `leaf` from the tree if it holds at most
    /// [`MERGE_AT`] keys and its predecessor's lock can be had without
    /// waiting (lock order is predecessor first): an empty leaf is unlinked
    /// with one 8-byte publish (the predecessor's next pointer); an
    /// under-full one is merged into the predecessor when both fit in
    /// [`MERGE_MAX`] keys. The records stay where they are: only slots
    /// move.
    pub(crate) fn merge_underfull(&self, leaf: &Arc<LeafRef>) {
        let r = &*self.region;
        let bits = leaf::bitmap(r, leaf.off);
        if leaf.off == self.head || bits.count_ones() > MERGE_AT || leaf.is_dead() {
            return;
        }
        let snap = self.index.load();
        let sep = leaf.sep.clone();
        let Some(prev) = snap.before(&sep) else { return };
        let prev = prev.clone();
        drop(snap);
        if !prev.try_lock() {
            return;
        }
        if prev.is_dead() || leaf::next(r, prev.off) != leaf.off {
            prev.unlock();
            return;
        }
        let next = leaf::next(r, leaf.off);
        let durable = if bits == 0 {
            leaf::publish_next(r, prev.off, next);
            // Durable before the leaf is retired: once the epoch moves on,
            // another thread may reuse the block before any later drain
            // of this one (the crash explorer's reach check fails without
            // this drain).
            if r.drain().is_err() {
                // Not durable: the leaf stays in the index as well; harmless.
                prev.unlock();
                return;
            }
            true
        } else {
            let pbits = leaf::bitmap(r, prev.off);
            if pbits.count_ones() + bits.count_ones() > MERGE_MAX {
                prev.unlock();
                return;
            }
            // The leaf's slots go to free slots of the predecessor, written
            // and flushed but not published: its bitmap still hides them.
            let fps = leaf::fingerprints(r, leaf.off);
            let mut nb = pbits;
            for i in leaf::live(bits) {
                let j = (!nb).trailing_zeros() as usize;
                nb |= 1 << j;
                leaf::write_slot(r, prev.off, j, leaf::slot(r, leaf.off, i), fps[i]);
            }
            // Written slots are no longer zero, published or not.
            prev.set_safe(prev.safe() & !nb);
            // Two words change (the predecessor's bitmap and next pointer),
            // so they go through the log, as for a split; the slots must be
            // durable before the entry that publishes them can be.
            let ops = [
                crate::recovery::encode_set(leaf::bitmap_off(prev.off), nb),
                crate::recovery::encode_set(leaf::next_off(prev.off), next),
            ];
            if r.drain().is_err() {
                prev.unlock();
                return;
            }
            let _g = self.log_lock.lock();
            let Ok(seq) = self.log.append_commit(&ops) else {
                // Nothing published: the written slots stay hidden.
                prev.unlock();
                return;
            };
            leaf::publish_bitmap(r, prev.off, nb);
            leaf::publish_next(r, prev.off, next);
            // Published in memory either way; if the checkpoint failed, the
            // leaf's block is not reused until a recovery has settled it.
            self.log.checkpoint(seq).is_ok()
        };
        self.index.remove(&sep);
        leaf.kill();
        prev.unlock();
        self.merges.fetch_add(1, Ordering::Relaxed);
        // Retired, not freed: a reader that routed here before the index
        // changed (or waited on this leaf's lock) still reads the block
        // before its version check sends it back, and must find the leaf
        // as it was, not another block's bytes. The drain (or checkpoint)
        // above is what makes the reuse safe after a crash.
        if durable {
            let _ = self.heap.retire(leaf.off);
        }
    }

    /// Split the full, locked `leaf`: the upper half of its keys moves to a
    /// new leaf. Two words of the old leaf change (bitmap and next), so the
    /// change goes through the log; the leaf stays locked until the log
    /// entry is checkpointed, so a replay never overwrites later changes.
    pub(crate) fn split(&self, leaf: &Arc<LeafRef>) -> Result<()> {
        let r = &*self.region;
        let bits = leaf::bitmap(r, leaf.off);
        let fps = leaf::fingerprints(r, leaf.off);
        // Start all the records' cache misses before reading their keys.
        let recs: Vec<(usize, u64)> = leaf::live(bits).map(|i| (i, leaf::slot(r, leaf.off, i))).collect();
        for &(_, rec) in &recs {
            leaf::prefetch_record(r, rec);
        }
        let keys: Vec<&[u8]> = recs.iter().map(|&(_, rec)| leaf::record_key(r, rec)).collect();
        let cp = leaf::common_prefix(keys.iter().copied());
        let mut entries: Vec<(u64, usize, u64, &[u8])> =
            recs.iter().zip(&keys).map(|(&(i, rec), &k)| (leaf::key_prefix_at(k, cp), i, rec, k)).collect();
        // Only the median matters: the upper half moves, unsorted.
        let mid = entries.len() / 2;
        entries.select_nth_unstable_by(mid, |a, b| a.0.cmp(&b.0).then_with(|| a.3.cmp(b.3)));
        let upper = &entries[mid..];
        let sep: Arc<[u8]> = Arc::from(upper[0].3);
        let new_leaf = self.heap.alloc(LEAF_BYTES)?;
        let moved: Vec<(u64, u8)> = upper.iter().map(|&(_, i, rec, _)| (rec, fps[i])).collect();
        leaf::init(r, new_leaf, &moved, leaf::next(r, leaf.off));
        let upper_mask = upper.iter().fold(0u64, |m, &(_, i, _, _)| m | (1 << i));
        let lower = bits & !upper_mask;
        let ops = [
            crate::recovery::encode_set(leaf::bitmap_off(leaf.off), lower),
            crate::recovery::encode_set(leaf::next_off(leaf.off), new_leaf),
        ];
        // The new leaf must be durable before the log entry that makes it
        // reachable can be: an entry may reach media (evicted) before the
        // drain that commits it, and recovery would replay it.
        if let Err(e) = r.drain() {
            let _ = self.heap.free(new_leaf);
            return Err(e.into());
        }
        {
            let _g = self.log_lock.lock();
            let seq = match self.log.append_commit(&ops) {
                Ok(s) => s,
                Err(e) => {
                    let _ = self.heap.free(new_leaf);
                    return Err(e.into());
                }
            };
            leaf::publish_bitmap(r, leaf.off, lower);
            leaf::publish_next(r, leaf.off, new_leaf);
            self.log.checkpoint(seq)?;
        }
        debug_assert!(moved.len() <= SLOTS);
        let fresh = LeafRef::new(new_leaf, sep);
        // `init` wrote every slot past the moved ones as zero, and it is
        // durable: the new leaf's free slots take one-drain inserts.
        fresh.set_safe(u64::MAX.checked_shl(moved.len() as u32).unwrap_or(0));
        self.index.insert(fresh);
        Ok(())
    }

    /// Replace `key`'s value only if it is currently `expected` (`None`:
    /// absent, which an expired key is); `new = None` deletes. The new
    /// value has no expiry. `Ok(Err(current))` when it was not.
    pub fn compare_and_swap(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<std::result::Result<(), Option<Vec<u8>>>> {
        check_key(key)?;
        if let Some(v) = new {
            check_value(v)?;
        }
        self.live()?;
        let _pin = self.heap.pin();
        let h = leaf::key_hash(key);
        // Compare first, and write the record only on a match, after the
        // lock (as in `put`).
        let leaf = self.lock_leaf(key);
        let r = &*self.region;
        let cur = self
            .find(leaf.off, key, leaf::fingerprint_of(h))
            .filter(|f| leaf::record_alive(r, f.rec))
            .map(|f| leaf::record_value(r, f.rec));
        if cur != expected {
            let cur = cur.map(|c| c.to_vec());
            leaf.unlock();
            return Ok(Err(cur));
        }
        let Some(v) = new else {
            self.delete_locked(leaf, key, h, false)?;
            return Ok(Ok(()));
        };
        self.write_and_put_locked(leaf, key, v, None, h).map(Ok)
    }

    /// Figures about the store.
    pub fn stats(&self) -> Stats {
        let h = self.heap.stats();
        let info = self.region.persist_info();
        Stats {
            keys: self.len(),
            keys_with_expiry: self.expiring.load(Ordering::Relaxed).max(0) as u64,
            bytes: self.bytes.load(Ordering::Relaxed).max(0) as u64,
            pool_size: self.sb.lock().pool_size,
            heap_bytes: h.heap_bytes,
            heap_live_bytes: h.live_bytes,
            heap_free_bytes: h.free_bytes,
            leaves: self.index.leaves() as u64,
            backend: info.backend,
            persistence_reason: info.reason.clone(),
            recoveries: self.recoveries.load(Ordering::Relaxed),
            opened_clean: self.opened_clean,
            merges: self.merges.load(Ordering::Relaxed),
            dropped_at_recovery: self.dropped_at_recovery,
            point_cache_bytes: self.hot.bytes(),
        }
    }

    /// Close cleanly: save the index and free space so that the next open
    /// neither replays nor rebuilds. Also done on drop (errors then are
    /// logged). A pool too full to hold the saved index is left as a crash
    /// leaves it (with a warning in the log): its next open walks it.
    pub fn close(self) -> Result<()> {
        self.close_inner()
    }

    /// Drop the store without a clean close, leaving the pool as a crash
    /// would (everything acknowledged is durable; the next open recovers).
    /// For tests and benchmarks of recovery.
    pub fn abandon(self) {
        self.closed.store(true, Ordering::Release);
    }

    fn close_inner(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        recovery::save_clean(self)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        local::forget(self.id);
        if let Err(e) = self.close_inner() {
            log::error!("{}: clean close failed, the next open will recover: {e}", self.path.display());
        }
    }
}

fn uuid() -> [u8; 16] {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&(t as u64).to_le_bytes());
    b[8..].copy_from_slice(&(std::process::id() as u64 ^ (t >> 64) as u64).to_le_bytes());
    b
}
