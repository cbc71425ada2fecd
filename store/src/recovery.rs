//! Opening an existing pool: the clean path (load the saved index and free
//! space) and the crash path (replay the log, walk the leaves, rebuild the
//! free space from what is reachable), and saving state at clean close.
//!
//! Log operations are absolute 8-byte writes, `(offset, value)`, so applying
//! one twice gives the same state; the store keeps a leaf locked until the
//! entry that changed it is checkpointed, so a replay never overwrites a
//! later change.

use crate::error::PoolError;
use crate::format::{self, Superblock};
use crate::index::{Index, LeafRef};
use crate::leaf::{self, LEAF_BYTES};
use crate::store::{Counts, Store};
use daxkv_alloc::{Heap, Region};
use daxkv_log::Log;
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

const OP_SET: u8 = 1;
const SNAP_MAGIC: u64 = u64::from_le_bytes(*b"DAXKVIX1");

/// Encode "store `value` at `off`".
pub(crate) fn encode_set(off: u64, value: u64) -> [u8; 17] {
    let mut b = [0u8; 17];
    b[0] = OP_SET;
    b[1..9].copy_from_slice(&off.to_le_bytes());
    b[9..17].copy_from_slice(&value.to_le_bytes());
    b
}

pub(crate) fn decode_set(b: &[u8]) -> Option<(u64, u64)> {
    if b.len() != 17 || b[0] != OP_SET {
        return None;
    }
    Some((u64::from_le_bytes(b[1..9].try_into().ok()?), u64::from_le_bytes(b[9..17].try_into().ok()?)))
}

fn corrupt(offset: u64, why: impl Into<String>) -> PoolError {
    PoolError::Corrupt { offset, why: why.into() }
}

/// Open a mapped pool.
pub(crate) fn open(region: Arc<Region>, path: &Path, verify: bool) -> Result<Store, PoolError> {
    let (mut sb, damaged) = format::read(&region, path)?;
    if let Some(copy) = damaged {
        log::warn!("{}: superblock copy {copy} is damaged; using the other and rewriting it", path.display());
    }
    if sb.version < 4 {
        // Made before heaps could grow: the heap header's `grown` word was
        // never written, and is zeroed before the heap reads it (and
        // before the superblock marks the pool version 4).
        Heap::clear_header_tail(&region, sb.heap_off)?;
    }
    // After a clean close the log's free space needs no clearing (no
    // record can be torn): that clear reads the whole ring.
    let (log, recovered) = if sb.clean {
        Log::open_after_clean_close(region.clone(), sb.log_off, sb.log_len)?
    } else {
        Log::open(region.clone(), sb.log_off, sb.log_len)?
    };
    let entries: Vec<daxkv_log::Entry> = recovered.collect();
    let log = if sb.clean && entries.is_empty() {
        match open_clean(&region, &mut sb, path, log, verify)? {
            Ok(store) => return Ok(store),
            Err(log) => log,
        }
    } else {
        log
    };
    // Crash path.
    let mut last = None;
    for e in &entries {
        for op in &e.ops {
            let (off, v) = decode_set(op).ok_or_else(|| corrupt(e.offset, "unknown log operation"))?;
            if !off.is_multiple_of(8) || !in_heap(&sb, off, 8) {
                return Err(corrupt(e.offset, format!("log entry {} writes outside the heap ({off})", e.seq)));
            }
            region.store_u64(off, v);
            region.flush(off, 8);
        }
        last = Some(e.seq);
    }
    if let Some(seq) = last {
        log.checkpoint(seq)?;
    }
    let (walk, heap) = walk(&region, &sb)?;
    let index = Index::build(walk.leaves);
    sb.recoveries = sb.recoveries.saturating_add(1);
    sb.clean = false;
    sb.snapshot_off = 0;
    sb.snapshot_len = 0;
    sb.write(&region)?;
    log::info!(
        "{}: recovered after a crash: {} log entries replayed, {} keys, {} unfinished inserts dropped; {}",
        path.display(),
        entries.len(),
        walk.counts.keys,
        walk.dropped,
        region.persist_info()
    );
    let mut store = Store::assemble(region, heap, log, index, sb, walk.counts, false, path);
    store.dropped_at_recovery = walk.dropped;
    // With `verify`, the check follows the recovery, which had to run first.
    if verify { verified(store, path, &[]) } else { Ok(store) }
}

/// `store` if `check()` (counting `also_live` as in use) finds nothing
/// wrong; else `PoolError::Damaged`, and the store is abandoned as a crash
/// would leave it: no clean close is written over the damage.
fn verified(store: Store, path: &Path, also_live: &[u64]) -> Result<Store, PoolError> {
    let problems = match store.check_with(also_live) {
        Ok(rep) if rep.is_ok() => return Ok(store),
        Ok(rep) => rep.problems,
        Err(e) => vec![e.to_string()],
    };
    store.abandon();
    Err(PoolError::Damaged { path: path.to_path_buf(), problems })
}

struct Walk {
    leaves: Vec<Arc<LeafRef>>,
    counts: Counts,
    /// Live slots whose record was not whole (inserts cut short).
    dropped: u64,
}

pub(crate) fn in_heap(sb: &Superblock, off: u64, len: u64) -> bool {
    off >= sb.heap_off && off.checked_add(len).is_some_and(|e| e <= sb.heap_off + sb.heap_len)
}

/// Follow the leaf chain from the head, check every live record, drop
/// inserts cut short and unlink empty leaves (other than the head); and
/// rebuild the heap from what the leaves reach.
///
/// The chain comes first (one pointer chase over header lines). Then the
/// records, read-only and split over threads: a million record headers in
/// random places were most of the recovery time. The heap is rebuilt on
/// its own thread meanwhile, from the blocks the scans send it. The
/// repairs come last, in chain order, and only when nothing was found
/// damaged.
fn walk(region: &Arc<Region>, sb: &Superblock) -> Result<(Walk, Heap), PoolError> {
    let r: &Region = region;
    let chain = chain(r, sb)?;
    let recover =
        |blocks: &mut dyn Iterator<Item = u64>| Heap::recover(region.clone(), sb.heap_off, sb.heap_len, blocks);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(4);
    let threads = threads.min(chain.len() / MIN_LEAVES_PER_THREAD);
    let threaded = if threads < 2 {
        None
    } else {
        let per = chain.len().div_ceil(threads);
        std::thread::scope(|s| {
            let (tx, rx) = std::sync::mpsc::channel::<Vec<u64>>();
            // A thread that cannot be started leaves its work to this one.
            let heap = std::thread::Builder::new()
                .name("daxkv-recover".into())
                .spawn_scoped(s, move || recover(&mut rx.into_iter().flatten()))
                .ok()?;
            let mut runs = chain.chunks(per);
            let first = runs.next().unwrap_or(&[]);
            let others: Vec<_> = runs
                .map(|run| {
                    let tx = tx.clone();
                    // A send fails only when the heap thread stopped at
                    // damage, which it reports.
                    let scanner = std::thread::Builder::new()
                        .name("daxkv-recover".into())
                        .spawn_scoped(s, move || scan(r, sb, run, &mut |b| drop(tx.send(b))));
                    scanner.map_err(|_| run)
                })
                .collect();
            let mut parts = vec![scan(r, sb, first, &mut |b| drop(tx.send(b)))];
            for h in others {
                parts.push(match h {
                    Ok(h) => joined(h),
                    Err(run) => scan(r, sb, run, &mut |b| drop(tx.send(b))),
                });
            }
            drop(tx);
            Some((parts.into_iter().collect(), joined(heap)))
        })
    };
    let (parts, heap) = match threaded {
        Some(done) => done,
        None => {
            let mut blocks = Vec::new();
            let part = scan(r, sb, &chain, &mut |b| blocks.push(b))?;
            (Ok(vec![part]), recover(&mut blocks.into_iter().flatten()))
        }
    };
    // Damage the scans met comes first, as it would in one pass.
    let parts: Vec<Part> = parts?;
    let heap = heap?;
    let mut w = Walk { leaves: Vec::new(), counts: Counts::default(), dropped: 0 };
    // Whether a bitmap or fingerprint was repaired (drained once, at the end).
    let mut dirty = false;
    let mut prev: Option<u64> = None;
    for (n, l) in parts.iter().flat_map(|p| &p.leaves).enumerate() {
        for &(i, fp) in &l.fixes {
            leaf::set_fingerprint(r, l.off, i, fp);
            dirty = true;
        }
        if l.kept != l.bits {
            leaf::publish_bitmap(r, l.off, l.kept);
            dirty = true;
        }
        if l.kept == 0 && l.off != sb.head_leaf {
            // Empty (left by an unlink that did not happen, or emptied by
            // the repair): unlink it from its predecessor.
            let next = chain.get(n + 1).copied().unwrap_or(0);
            leaf::publish_next(r, prev.expect("not the head"), next);
            r.drain()?;
            continue;
        }
        w.leaves.push(LeafRef::new(l.off, l.sep.clone()));
        prev = Some(l.off);
    }
    if dirty {
        r.drain()?;
    }
    for p in &parts {
        w.counts.keys += p.counts.keys;
        w.counts.bytes += p.counts.bytes;
        w.counts.expiring += p.counts.expiring;
        w.dropped += p.dropped;
    }
    for pair in w.leaves.windows(2) {
        if pair[1].sep <= pair[0].sep {
            return Err(corrupt(pair[1].off, "leaves out of key order"));
        }
    }
    Ok((w, heap))
}

/// A scoped thread's result; its panic goes on in the caller.
fn joined<T>(h: std::thread::ScopedJoinHandle<'_, T>) -> T {
    h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// The leaves a pool image's chain passes through, in chain order, as
/// recovery would first walk it (before it replays the log or unlinks
/// empty leaves). Reads only. For tools that compare an image with an
/// allocator: the crash explorer checks that no crash image's chain
/// passes through a leaf the live store had already let go.
pub fn leaf_chain(region: &Region) -> Result<Vec<u64>, PoolError> {
    let (sb, _) = crate::format::read(region, std::path::Path::new("<image>"))?;
    chain(region, &sb)
}

/// The leaves of the chain from the head, in order.
fn chain(r: &Region, sb: &Superblock) -> Result<Vec<u64>, PoolError> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut cur = sb.head_leaf;
    while cur != 0 {
        if !in_heap(sb, cur, LEAF_BYTES as u64) || !cur.is_multiple_of(8) {
            let from = out.last().map_or(72, |&l| leaf::next_off(l));
            return Err(corrupt(from, format!("leaf pointer {cur} outside the heap")));
        }
        if !seen.insert(cur) {
            return Err(corrupt(cur, "the leaf chain loops"));
        }
        out.push(cur);
        cur = leaf::next(r, cur);
    }
    Ok(out)
}

/// What the record pass found in one leaf.
struct Scanned {
    off: u64,
    bits: u64,
    /// `bits` without the slots whose inserts were cut short.
    kept: u64,
    /// Fingerprints to repair: (slot, fingerprint).
    fixes: Vec<(usize, u8)>,
    /// The leaf's separator: the least key kept (empty for the head),
    /// copied while it is in cache.
    sep: Arc<[u8]>,
}

/// What the record pass found in a run of leaves.
struct Part {
    leaves: Vec<Scanned>,
    counts: Counts,
    dropped: u64,
}

/// Leaves per thread below which one thread does all the work.
const MIN_LEAVES_PER_THREAD: usize = 512;

/// Leaves whose blocks go to the heap together.
const LEAVES_PER_BATCH: usize = 64;

/// Check the live records of `run` (read-only).
fn scan(r: &Region, sb: &Superblock, run: &[u64], emit: &mut dyn FnMut(Vec<u64>)) -> Result<Part, PoolError> {
    let mut p = Part { leaves: Vec::with_capacity(run.len()), counts: Counts::default(), dropped: 0 };
    // Blocks reachable from the leaves scanned since the last batch.
    let mut batch = Vec::new();
    // Two leaves ahead, start the leaf's misses; one ahead, its records'
    // (its slots arrived meanwhile). Taking those misses one by one was
    // most of the recovery time.
    let records = |l: u64| {
        for i in leaf::live(leaf::bitmap(r, l)) {
            leaf::prefetch_for_recovery(r, leaf::slot_word(r, l, i));
        }
    };
    for &l in run.iter().take(2) {
        leaf::prefetch(r, l);
    }
    if let Some(&l) = run.first() {
        records(l);
    }
    for (n, &cur) in run.iter().enumerate() {
        if let Some(&l) = run.get(n + 2) {
            leaf::prefetch(r, l);
        }
        if let Some(&l) = run.get(n + 1) {
            records(l);
        }
        let bits = leaf::bitmap(r, cur);
        let (mut kept, mut fixes) = (bits, Vec::new());
        let mut min: Option<&[u8]> = None;
        let fps = leaf::fingerprints(r, cur);
        for i in leaf::live(bits) {
            let word = leaf::slot_word(r, cur, i);
            let rec = word & !leaf::UNVERIFIED;
            if rec == 0 {
                // A one-drain insert whose bitmap reached media before its
                // slot did (see `Store::put_locked`): never acknowledged.
                kept &= !(1 << i);
                p.dropped += 1;
                continue;
            }
            if !in_heap(sb, rec, leaf::REC_HEADER) {
                return Err(corrupt(
                    leaf::slot_off(cur, i),
                    format!("record in slot {i} of leaf {cur} is out of bounds"),
                ));
            }
            let lens = leaf::record_lens(r, rec)
                .filter(|&(k, _)| k > 0 && leaf::record_size(r, rec).is_some_and(|n| in_heap(sb, rec, n)));
            let (k, v) = if word & leaf::UNVERIFIED != 0 {
                // Published by a one-drain insert: a record that is not
                // whole is one cut short (its lengths may be anything, so
                // they are checked first), never acknowledged.
                let Some((k, v, h)) = lens.and_then(|_| leaf::record_intact(r, rec)) else {
                    kept &= !(1 << i);
                    p.dropped += 1;
                    continue;
                };
                // Its fingerprint byte may not have reached media either.
                if fps[i] != leaf::fingerprint_of(h) {
                    fixes.push((i, leaf::fingerprint_of(h)));
                }
                (k, v)
            } else {
                // Durable before its slot was published (or before its
                // flag was cleared): it must be sound.
                lens.ok_or_else(|| corrupt(rec, format!("record in slot {i} of leaf {cur} is out of bounds")))?
            };
            let key = leaf::record_key(r, rec);
            if min.is_none_or(|m| key < m) {
                min = Some(key);
            }
            batch.push(rec);
            p.counts.keys += 1;
            p.counts.bytes += (k + v) as u64;
            p.counts.expiring += u64::from(leaf::record_expires(r, rec));
        }
        if kept != 0 || cur == sb.head_leaf {
            batch.push(cur);
        }
        let sep = Arc::from(if cur == sb.head_leaf { b"" } else { min.unwrap_or(b"") });
        p.leaves.push(Scanned { off: cur, bits, kept, fixes, sep });
        if (n + 1) % LEAVES_PER_BATCH == 0 {
            emit(std::mem::take(&mut batch));
        }
    }
    emit(batch);
    Ok(p)
}

/// Try the clean path; `None` if the saved index is unusable (then the
/// crash path runs, which needs nothing saved).
fn open_clean(
    region: &Arc<Region>,
    sb: &mut Superblock,
    path: &Path,
    log: Log,
    verify: bool,
) -> Result<Result<Store, Log>, PoolError> {
    let Some(leaves) = load_snapshot(region, sb) else {
        log::warn!("{}: saved index unreadable; recovering by walking the leaves", path.display());
        return Ok(Err(log));
    };
    let heap = match Heap::open_clean(region.clone(), sb.heap_off, sb.heap_len) {
        Ok(h) => h,
        Err(e) => {
            log::warn!("{}: saved free space unreadable ({e}); recovering by walking the leaves", path.display());
            return Ok(Err(log));
        }
    };
    let index = Index::build(leaves);
    let snap_off = sb.snapshot_off;
    let counts = Counts { keys: sb.keys, bytes: sb.bytes, expiring: sb.expiring };
    sb.clean = false;
    sb.snapshot_off = 0;
    sb.snapshot_len = 0;
    let mut store = Store::assemble(region.clone(), heap, log, index, *sb, counts, true, path);
    if verify {
        // Before the first write: a pool refused here is left as it was.
        store = verified(store, path, &[snap_off])?;
    }
    sb.write(region)?;
    let _ = store.heap.free(snap_off);
    log::info!("{}: opened after a clean close: {} keys; {}", path.display(), counts.keys, region.persist_info());
    Ok(Ok(store))
}

pub(crate) fn load_snapshot(r: &Region, sb: &Superblock) -> Option<Vec<Arc<LeafRef>>> {
    let (off, len) = (sb.snapshot_off, sb.snapshot_len);
    if len < 36 || !in_heap(sb, off, len) {
        return None;
    }
    let b = r.bytes(off, len as usize);
    let body = &b[..b.len() - 4];
    if crc32c::crc32c(body).to_le_bytes() != b[b.len() - 4..] {
        return None;
    }
    let word = |at: usize| body.get(at..at + 8).map(|s| u64::from_le_bytes(s.try_into().expect("8")));
    if word(0)? != SNAP_MAGIC {
        return None;
    }
    let n = word(8)?;
    // Every entry takes at least 12 bytes: a count the body cannot hold is
    // damage (and must not size an allocation).
    if n > (body.len() as u64).saturating_sub(32) / 12 {
        return None;
    }
    let mut at = 32;
    let mut leaves: Vec<Arc<LeafRef>> = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let leaf = word(at)?;
        let klen = u32::from_le_bytes(body.get(at + 8..at + 12)?.try_into().ok()?) as usize;
        let key = body.get(at + 12..at.checked_add(12 + klen)?)?;
        if !in_heap(sb, leaf, LEAF_BYTES as u64) || !leaf.is_multiple_of(8) {
            return None;
        }
        if leaves.last().is_some_and(|l| *l.sep >= *key) {
            return None;
        }
        leaves.push(LeafRef::new(leaf, Arc::from(key)));
        at += 12 + klen;
    }
    if leaves.first().is_none_or(|l| !l.sep.is_empty() || l.off != sb.head_leaf) {
        return None;
    }
    Some(leaves)
}

/// Clean close: save the index, then the heap's free space, then mark the
/// superblock clean. A crash anywhere in between leaves a pool that the
/// crash path opens.
pub(crate) fn save_clean(s: &Store) -> Result<(), crate::Error> {
    let entries = s.index.entries();
    let mut b = Vec::with_capacity(36 + entries.len() * 32);
    b.extend_from_slice(&SNAP_MAGIC.to_le_bytes());
    b.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    b.extend_from_slice(&s.len().to_le_bytes());
    b.extend_from_slice(&(s.stats_bytes()).to_le_bytes());
    for (sep, leaf) in &entries {
        b.extend_from_slice(&leaf.off.to_le_bytes());
        b.extend_from_slice(&(sep.len() as u32).to_le_bytes());
        b.extend_from_slice(sep);
    }
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    let snap = match s.heap.alloc(b.len()) {
        Ok(o) => o,
        Err(e) => {
            log::warn!("{}: no room to save the index at close ({e}); the next open will walk", s.path.display());
            return Ok(());
        }
    };
    s.region.copy_nodrain(snap, &b);
    s.region.drain()?;
    s.heap.close().map_err(|e| crate::Error::Corrupt { offset: 0, why: e.to_string() })?;
    let mut sb = s.sb.lock();
    sb.clean = true;
    sb.snapshot_off = snap;
    sb.snapshot_len = b.len() as u64;
    sb.keys = s.len();
    sb.bytes = s.stats_bytes();
    sb.expiring = s.expiring.load(std::sync::atomic::Ordering::Relaxed).max(0) as u64;
    sb.recoveries = s.recoveries.load(std::sync::atomic::Ordering::Relaxed);
    sb.write(&s.region)?;
    Ok(())
}
