//! [`Log`]: appending, group commit, checkpoints and space reclamation.

use crate::error::LogError;
use crate::format::{self, Checkpoint, MIN_RECORD, REC_HEADER, SLOT_LEN};
use crate::group::GroupCommit;
use crate::recovery::{self, Geometry, Recovery};
use crate::sync::{AtomicU64, Condvar, Mutex, Ordering, lock, wait};
use daxkv_alloc::Region;
use std::collections::VecDeque;
use std::sync::Arc;

/// Where the next record goes and what is still live. Guarded by
/// `Log::tail`; every write of a record or checkpoint slot happens under it.
#[derive(Debug)]
struct Tail {
    /// Sequence number of the next entry.
    next_seq: u64,
    /// Logical position of the next record.
    pos: u64,
    /// Logical position where the live window starts: the durable
    /// checkpoint's `start_pos`. Space before it is free.
    head: u64,
    /// The durable checkpoint's `start_seq`.
    start_seq: u64,
    /// The durable checkpoint's counter.
    counter: u64,
    /// `(seq, logical position)` of every entry after the checkpoint.
    live: VecDeque<(u64, u64)>,
    /// Whether the place of the next record holds a cleared (zero) header,
    /// so that recovery ends there with `Found::Empty`. Not when the live
    /// window left no room for it; then recovery ends with `Found::Full`,
    /// and the checkpoint that frees room clears it.
    terminated: bool,
    /// Appenders waiting on `space` (a checkpoint with none to wake makes
    /// no wake-up call, which is a system call even with no waiter).
    waiters: u32,
}

#[derive(Debug, Default)]
struct Counters {
    appends: AtomicU64,
    bytes: AtomicU64,
    commits: AtomicU64,
    commit_drains: AtomicU64,
    drains: AtomicU64,
    space_waits: AtomicU64,
    checkpoints: AtomicU64,
}

/// Counters of a log since it was created or opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Entries appended.
    pub appends: u64,
    /// Bytes of records appended (entries and wrap markers).
    pub bytes: u64,
    /// Calls of `commit` (including those that found their entry durable).
    pub commits: u64,
    /// Drains issued by committers; `commit_drains / commits` below 1 is
    /// group commit at work.
    pub commit_drains: u64,
    /// Every drain the log issued: commits, checkpoints, open.
    pub drains: u64,
    /// Times an appender waited for a checkpoint to free space.
    pub space_waits: u64,
    /// Checkpoints written (each writes both slots).
    pub checkpoints: u64,
}

/// Where an entry goes, decided under the tail lock.
enum Place {
    /// At the tail, or at the next pass's start after a wrap.
    Fits { wrap: bool },
    /// Nothing is live and the entry only fits from the next pass's start:
    /// move the checkpoint there first.
    Restart,
    /// Not before a checkpoint frees space.
    Full { free: u64 },
}

/// A redo log in the area `[base, base + len)` of a region. See the crate
/// docs for the contract. `Log` is `Send + Sync`: share it by reference or
/// `Arc` between committing threads.
#[derive(Debug)]
pub struct Log {
    region: Arc<Region>,
    geo: Geometry,
    tail: Mutex<Tail>,
    /// Signalled when a checkpoint frees space.
    space: Condvar,
    /// Highest sequence number whose record is written (copied, not yet
    /// necessarily drained). Stored under `tail`, after the copy.
    appended: AtomicU64,
    /// Appenders between entering `append` and publishing `appended` (not
    /// counting those waiting for space). A leader about to drain waits a
    /// moment for them, so that their entries ride on its drain.
    appending: AtomicU64,
    group: GroupCommit,
    /// Spins of a leader waiting for appends in progress (`written`).
    leader_spins: std::sync::atomic::AtomicU32,
    counters: Counters,
}

/// Group-commit tuning: how long committers wait for each other so that
/// one drain covers several entries. Waiting longer shares more drains
/// between concurrent committers and costs a lone committer nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupCommitOptions {
    /// Spins (each a `pause`, some tens of nanoseconds) a committer about to
    /// drain waits for appends in progress to finish, so that their entries
    /// ride on its drain. Default 128.
    pub leader_wait_spins: u32,
    /// Spins a committer whose entry is being drained by another waits for
    /// that drain to end before it sleeps. Default 256.
    pub follower_spins: u32,
}

impl Default for GroupCommitOptions {
    fn default() -> Self {
        GroupCommitOptions { leader_wait_spins: LEADER_SPINS, follower_spins: crate::sync::FOLLOWER_SPINS }
    }
}

impl Log {
    /// Format `[base, base + len)` of `region` as an empty log and return
    /// it. `base` must be 64-byte aligned, `len` a multiple of 8 and at
    /// least [`crate::MIN_AREA`]. Whatever the area held is lost.
    pub fn create(region: Arc<Region>, base: u64, len: u64) -> Result<Log, LogError> {
        let geo = Geometry::new(&region, base, len)?;
        // The ring is cleared before a header makes it a log, so that no
        // record of an earlier log in the same place can be taken for ours.
        let mut drains = 1;
        if zero(&region, geo.data, geo.cap) {
            region.drain()?;
            drains += 1;
        }
        let cp = Checkpoint { counter: 1, start_seq: 1, start_pos: 0, area_len: len };
        // Both slots in one barrier: until it, the area is not a log (a
        // crash leaves no valid slot, or one), after it, it is.
        for i in 0..2 {
            region.copy_nodrain(geo.slot(i), &cp.encode());
        }
        region.drain()?;
        let log = Log::build(region, geo, cp, 1, 0, VecDeque::new());
        log.counters.drains.store(drains, Ordering::Relaxed);
        Ok(log)
    }

    /// Open the log in `[base, base + len)` of `region`: read the
    /// checkpoint, find the committed entries after it, and make the log
    /// ready to append after the last of them. Returns the log and those
    /// entries, which the owner must apply (idempotently) and then
    /// [`checkpoint`](Log::checkpoint).
    ///
    /// Anything after the last committed entry (a record torn by a crash,
    /// or a damaged one and all that follows it, see
    /// [`Recovery::end`]) is cleared. A crash during `open` is harmless:
    /// it changes nothing the next `open` reads before clearing it again.
    pub fn open(region: Arc<Region>, base: u64, len: u64) -> Result<(Log, Recovery), LogError> {
        Self::open_inner(region, base, len, false)
    }

    /// [`Log::open`] for a log its owner closed cleanly: every entry was
    /// checkpointed and the owner then made a durable note of that (a
    /// clean flag) before stopping, so no record can have been torn by a
    /// crash. If the scan indeed finds no entry, the free space is not
    /// cleared (the clear reads the whole ring, milliseconds for a large
    /// one); if it finds any, this is exactly `open`.
    pub fn open_after_clean_close(region: Arc<Region>, base: u64, len: u64) -> Result<(Log, Recovery), LogError> {
        Self::open_inner(region, base, len, true)
    }

    fn open_inner(region: Arc<Region>, base: u64, len: u64, clean: bool) -> Result<(Log, Recovery), LogError> {
        let geo = Geometry::new(&region, base, len)?;
        let scan = recovery::scan(&region, &geo)?;
        let cp = scan.checkpoint;
        let mut drains = 0;
        if !scan.slots_agree {
            // Rewrite the slot(s) not holding the checkpoint, one barrier
            // each, so that a crash now leaves one valid slot.
            let good = cp.encode();
            for i in 0..2 {
                if region.bytes(geo.slot(i), SLOT_LEN as usize) != good {
                    region.copy_nodrain(geo.slot(i), &good);
                    region.drain()?;
                    drains += 1;
                }
            }
        }
        // Clear the free space: a record that was being written at a crash,
        // and was not recovered, must never be recovered later when a new
        // record of the same length ends before it.
        let used = scan.end_pos - cp.start_pos;
        let torn_possible = !(clean && scan.positions.is_empty());
        if torn_possible {
            zero_ring(&region, &geo, scan.end_pos, geo.cap - used);
        }
        // What was read may not be durable yet (a process crash with the
        // msync backend leaves dirty pages): make it so before building on it.
        flush_ring(&region, &geo, cp.start_pos, used);
        region.flush(geo.base, 2 * SLOT_LEN as usize);
        region.drain()?;
        drains += 1;
        let next_seq = scan.recovery.end().next_seq;
        let live = scan.positions.into_iter().collect();
        let log = Log::build(region, geo, cp, next_seq, scan.end_pos, live);
        log.counters.drains.store(drains, Ordering::Relaxed);
        Ok((log, scan.recovery))
    }

    /// Read the log in `[base, base + len)` without changing anything: the
    /// entries `open` would return and where it would stop. Nothing may
    /// write the area meanwhile (no open `Log` on it).
    pub fn scan(region: &Region, base: u64, len: u64) -> Result<Recovery, LogError> {
        let geo = Geometry::new(region, base, len)?;
        Ok(recovery::scan(region, &geo)?.recovery)
    }

    fn build(
        region: Arc<Region>,
        geo: Geometry,
        cp: Checkpoint,
        next_seq: u64,
        pos: u64,
        live: VecDeque<(u64, u64)>,
    ) -> Log {
        let mut tail = Tail {
            next_seq,
            pos,
            head: cp.start_pos,
            start_seq: cp.start_seq,
            counter: cp.counter,
            live,
            terminated: false,
            waiters: 0,
        };
        // create and open leave the free space zeroed.
        tail.terminated = next_slot(&geo, tail.head, pos).is_some();
        Log {
            region,
            geo,
            tail: Mutex::new(tail),
            space: Condvar::new(),
            appended: AtomicU64::new(next_seq - 1),
            appending: AtomicU64::new(0),
            group: GroupCommit::new(next_seq - 1),
            leader_spins: std::sync::atomic::AtomicU32::new(LEADER_SPINS),
            counters: Counters::default(),
        }
    }

    /// Bytes the record of an entry holding `ops` takes in the ring.
    pub fn entry_size<O: AsRef<[u8]>>(ops: &[O]) -> u64 {
        format::entry_len(ops)
    }

    /// Bytes of the ring: the largest entry that can be appended.
    pub fn capacity(&self) -> u64 {
        self.geo.cap
    }

    /// The region the log lives in.
    pub fn region(&self) -> &Arc<Region> {
        &self.region
    }

    /// Append an entry holding `ops` and return its sequence number. The
    /// entry is written but not durable: [`commit`](Log::commit) it. Waits
    /// while the log is full until a checkpoint frees space (so another
    /// thread must checkpoint; see [`try_append`](Log::try_append)).
    /// An entry larger than [`capacity`](Log::capacity) is
    /// [`LogError::TooLarge`].
    pub fn append<O: AsRef<[u8]>>(&self, ops: &[O]) -> Result<u64, LogError> {
        self.append_inner(ops, true)
    }

    /// Like [`append`](Log::append), but a full log is [`LogError::Full`]
    /// instead of a wait.
    pub fn try_append<O: AsRef<[u8]>>(&self, ops: &[O]) -> Result<u64, LogError> {
        self.append_inner(ops, false)
    }

    /// Append then commit: returns once the entry is durable.
    pub fn append_commit<O: AsRef<[u8]>>(&self, ops: &[O]) -> Result<u64, LogError> {
        let seq = self.append(ops)?;
        self.commit(seq)?;
        Ok(seq)
    }

    fn append_inner<O: AsRef<[u8]>>(&self, ops: &[O], wait_for_space: bool) -> Result<u64, LogError> {
        let len = format::entry_len(ops);
        if len > self.geo.cap || len > u64::from(u32::MAX) || ops.len() > u32::MAX as usize {
            return Err(LogError::TooLarge { size: len, capacity: self.geo.cap });
        }
        // Encode and checksum the body before taking the lock.
        let _in_flight = InFlight::enter(&self.appending);
        let mut rec = format::encode_entry(ops, len);
        let mut t = lock(&self.tail);
        let wrap = loop {
            match self.place(&t, len) {
                Place::Fits { wrap } => break wrap,
                Place::Restart => {
                    let (old, start) = (t.pos, t.pos + (self.geo.cap - t.pos % self.geo.cap));
                    let start_seq = t.next_seq;
                    t.pos = start;
                    t.terminated = false;
                    if let Err(e) = self.write_checkpoint(&mut t, start_seq, start) {
                        if t.head != start {
                            t.pos = old;
                        }
                        return Err(e);
                    }
                }
                Place::Full { free } if !wait_for_space => return Err(LogError::Full { size: len, free }),
                Place::Full { .. } => {
                    self.counters.space_waits.fetch_add(1, Ordering::Relaxed);
                    self.appending.fetch_sub(1, Ordering::Release);
                    t.waiters += 1;
                    t = wait(&self.space, t);
                    t.waiters -= 1;
                    self.appending.fetch_add(1, Ordering::Relaxed);
                }
            }
        };
        let seq = t.next_seq;
        let cap = self.geo.cap;
        let mut bytes = len;
        if wrap {
            let room = cap - t.pos % cap;
            if room >= MIN_RECORD {
                self.region.copy_nodrain(self.geo.at(t.pos), &format::wrap_marker(seq, t.pos / cap));
            }
            t.pos += room;
            bytes += room;
        }
        let pos = t.pos;
        let end = pos + len;
        let sealed = rec.seal(seq, pos / cap);
        // The entry, and the cleared header of the next record with it.
        match next_slot(&self.geo, t.head, end) {
            Some(next) if next == end && !end.is_multiple_of(cap) => {
                self.region.copy_nodrain(self.geo.at(pos), sealed);
                t.terminated = true;
            }
            Some(next) => {
                // `next` is a pass's start (ring offset 0), where every pass
                // began with a record: it holds a whole record of an earlier
                // pass, whose generation ends recovery cleanly, or zeros
                // (create and open clear the free space). No header to clear.
                debug_assert_eq!(next % self.geo.cap, 0);
                self.region.copy_nodrain(self.geo.at(pos), &sealed[..len as usize]);
                t.terminated = true;
            }
            None => {
                self.region.copy_nodrain(self.geo.at(pos), &sealed[..len as usize]);
                t.terminated = false;
            }
        }
        t.live.push_back((seq, pos));
        t.pos += len;
        t.next_seq += 1;
        // A read-modify-write, not a plain store: on x86 a locked
        // instruction orders this thread's CLWBs and non-temporal stores
        // before it, so a leader on another core that sees `seq` and drains
        // finds them complete.
        self.appended.swap(seq, Ordering::AcqRel);
        drop(t);
        self.counters.appends.fetch_add(1, Ordering::Relaxed);
        self.counters.bytes.fetch_add(bytes, Ordering::Relaxed);
        Ok(seq)
    }

    fn place(&self, t: &Tail, len: u64) -> Place {
        let cap = self.geo.cap;
        let used = t.pos - t.head;
        let room = cap - t.pos % cap;
        let (need, wrap) = if len <= room { (len, false) } else { (room + len, true) };
        if used + need <= cap {
            Place::Fits { wrap }
        } else if wrap && t.live.is_empty() {
            Place::Restart
        } else {
            Place::Full { free: cap - used }
        }
    }

    /// Set the group-commit waits (see [`GroupCommitOptions`]).
    pub fn set_group_commit(&self, o: GroupCommitOptions) {
        self.leader_spins.store(o.leader_wait_spins, std::sync::atomic::Ordering::Relaxed);
        self.group.set_follower_spins(o.follower_spins);
    }

    /// The group-commit waits in use.
    pub fn group_commit(&self) -> GroupCommitOptions {
        GroupCommitOptions {
            leader_wait_spins: self.leader_spins.load(std::sync::atomic::Ordering::Relaxed),
            follower_spins: self.group.follower_spins(),
        }
    }

    /// Return once entry `seq` (and every earlier one) is durable. Committers
    /// running at once share drains: one of them drains for all whose
    /// entries were written when it began.
    pub fn commit(&self, seq: u64) -> Result<(), LogError> {
        let appended = self.appended.load(Ordering::Acquire);
        if seq > appended {
            return Err(LogError::NotAppended { seq, next: appended + 1 });
        }
        self.counters.commits.fetch_add(1, Ordering::Relaxed);
        // The drain is the region's fence; the appenders' copies were issued
        // before they released the tail lock, which happens-before our read
        // of `appended`.
        let r = self.group.commit(seq, || self.written(), || self.region.drain());
        let drains = match &r {
            Ok(n) => u64::from(*n),
            Err(_) => 1,
        };
        self.counters.commit_drains.fetch_add(drains, Ordering::Relaxed);
        self.counters.drains.fetch_add(drains, Ordering::Relaxed);
        r.map(drop).map_err(LogError::from)
    }

    /// What a leader's drain will cover: `appended`, after waiting a few
    /// hundred nanoseconds at most for appends in progress to finish. The
    /// wait costs a single committer nothing (it is not appending) and
    /// lets concurrent committers share drains even when a drain is as
    /// quick as an append.
    fn written(&self) -> u64 {
        for _ in 0..self.leader_spins.load(std::sync::atomic::Ordering::Relaxed) {
            if self.appending.load(Ordering::Acquire) == 0 {
                break;
            }
            std::hint::spin_loop();
        }
        self.appended.load(Ordering::Acquire)
    }

    /// Same as [`commit`](Log::commit).
    pub fn wait_durable(&self, seq: u64) -> Result<(), LogError> {
        self.commit(seq)
    }

    /// Every entry up to this sequence number is durable.
    pub fn durable_seq(&self) -> u64 {
        self.group.durable()
    }

    /// The sequence number the next `append` will return.
    pub fn next_seq(&self) -> u64 {
        lock(&self.tail).next_seq
    }

    /// Every entry up to this sequence number is applied and its space free.
    pub fn applied_through(&self) -> u64 {
        lock(&self.tail).start_seq - 1
    }

    /// Declare every entry up to `applied_through` applied, and reclaim its
    /// space. The owner's writes that apply them must be written to the
    /// region (copied with `copy_nodrain`, or stored and flushed) before
    /// the call; the log drains to make them durable, then writes the
    /// checkpoint (see `write_checkpoint`), and only then reuses the space
    /// and wakes appenders waiting for it. Recovery after this returns
    /// entries from `applied_through + 1` on.
    pub fn checkpoint(&self, applied_through: u64) -> Result<(), LogError> {
        let mut t = lock(&self.tail);
        if applied_through >= t.next_seq {
            return Err(LogError::NotAppended { seq: applied_through, next: t.next_seq });
        }
        if applied_through < t.start_seq {
            return Ok(());
        }
        let idx = t.live.partition_point(|&(s, _)| s <= applied_through);
        let start = t.live.get(idx).map_or(t.pos, |&(_, p)| p);
        self.write_checkpoint(&mut t, applied_through + 1, start)?;
        t.live.drain(..idx);
        let waiting = t.waiters > 0;
        drop(t);
        if waiting {
            self.space.notify_all();
        }
        Ok(())
    }

    /// Make `(start_seq, start_pos)` the durable checkpoint: drain, slot 0,
    /// drain, slot 1. The opening drain makes durable the applied state the
    /// checkpoint stands for and the previous checkpoint's slot 1, so that a
    /// crash tearing slot 0 finds slot 1 valid; slot 1 is left to the next
    /// drain (slot 0 is the durable copy until then). Under the tail lock,
    /// so checkpoints do not interleave.
    fn write_checkpoint(&self, t: &mut Tail, start_seq: u64, start_pos: u64) -> Result<(), LogError> {
        self.region.drain()?;
        let cp = Checkpoint { counter: t.counter + 1, start_seq, start_pos, area_len: self.geo.len };
        let bytes = cp.encode();
        self.region.copy_nodrain(self.geo.slot(0), &bytes);
        self.region.drain()?;
        self.counters.drains.fetch_add(2, Ordering::Relaxed);
        t.counter = cp.counter;
        t.start_seq = start_seq;
        t.head = start_pos;
        if !t.terminated
            && let Some(next) = next_slot(&self.geo, t.head, t.pos)
        {
            self.region.copy_nodrain(self.geo.at(next), &[0u8; REC_HEADER]);
            t.terminated = true;
        }
        self.region.copy_nodrain(self.geo.slot(1), &bytes);
        self.counters.checkpoints.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Counters since create or open.
    pub fn stats(&self) -> LogStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        LogStats {
            appends: get(&c.appends),
            bytes: get(&c.bytes),
            commits: get(&c.commits),
            commit_drains: get(&c.commit_drains),
            drains: get(&c.drains),
            space_waits: get(&c.space_waits),
            checkpoints: get(&c.checkpoints),
        }
    }
}

/// Most spins of a leader waiting for appends in progress.
const LEADER_SPINS: u32 = 128;

/// Counts an appender in `Log::appending` while alive.
struct InFlight<'a>(&'a AtomicU64);

impl<'a> InFlight<'a> {
    fn enter(count: &'a AtomicU64) -> InFlight<'a> {
        count.fetch_add(1, Ordering::Relaxed);
        InFlight(count)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Release);
    }
}

/// Where the record after logical position `pos` starts (`pos`, or the
/// next pass's start when less than a record fits before the ring's end),
/// if a record fits there inside the live window starting at `head`.
/// Recovery applies the same rule: it ends with `Found::Full` otherwise.
fn next_slot(geo: &Geometry, head: u64, pos: u64) -> Option<u64> {
    let room = geo.cap - pos % geo.cap;
    let next = if room < MIN_RECORD { pos + room } else { pos };
    (head + geo.cap >= next + MIN_RECORD).then_some(next)
}

/// Clear `[off, off + len)` to zero with `copy_nodrain`'s twin, skipping
/// chunks already zero (clearing costs write bandwidth; reading is cheaper).
/// Clear `[off, off + len)`, skipping chunks already zero. Returns whether
/// anything was written.
fn zero(region: &Region, off: u64, len: u64) -> bool {
    const CHUNK: u64 = 4096;
    let mut at = off;
    let mut wrote = false;
    while at < off + len {
        let n = CHUNK.min(off + len - at) as usize;
        if region.bytes(at, n).iter().any(|&b| b != 0) {
            region.set_nodrain(at, 0, n);
            wrote = true;
        }
        at += n as u64;
    }
    wrote
}

/// The at most two physical pieces of the logical range `[pos, pos + len)`.
fn ring_pieces(geo: &Geometry, pos: u64, len: u64) -> impl Iterator<Item = (u64, u64)> {
    let phys = pos % geo.cap;
    let first = len.min(geo.cap - phys);
    [(geo.data + phys, first), (geo.data, len - first)].into_iter().filter(|&(_, n)| n > 0)
}

fn zero_ring(region: &Region, geo: &Geometry, pos: u64, len: u64) {
    for (off, n) in ring_pieces(geo, pos, len) {
        let _ = zero(region, off, n);
    }
}

fn flush_ring(region: &Region, geo: &Geometry, pos: u64, len: u64) {
    for (off, n) in ring_pieces(geo, pos, len) {
        region.flush(off, n as usize);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recovery::Found;
    use daxkv_alloc::PersistOptions;

    const BASE: u64 = 4096;

    fn region() -> Arc<Region> {
        Arc::new(Region::anonymous(1 << 20, &PersistOptions::default()).unwrap())
    }

    fn op(seq: u64, n: usize) -> Vec<u8> {
        (0..n).map(|i| (seq as usize * 31 + i) as u8).collect()
    }

    #[test]
    fn append_commit_reopen() {
        let r = region();
        let log = Log::create(r.clone(), BASE, 8192).unwrap();
        assert_eq!(log.next_seq(), 1);
        for s in 1..=5u64 {
            let seq = log.append_commit(&[op(s, s as usize * 10), op(s + 100, 3)]).unwrap();
            assert_eq!(seq, s);
            assert_eq!(log.durable_seq(), s);
        }
        drop(log);
        let (log, rec) = Log::open(r.clone(), BASE, 8192).unwrap();
        assert_eq!(rec.end().found, Found::Empty);
        assert_eq!(rec.end().next_seq, 6);
        let got: Vec<_> = rec.collect();
        assert_eq!(got.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
        for e in &got {
            assert_eq!(e.ops, vec![op(e.seq, e.seq as usize * 10), op(e.seq + 100, 3)]);
        }
        assert_eq!(log.next_seq(), 6);
        log.checkpoint(3).unwrap();
        assert_eq!(log.applied_through(), 3);
        drop(log);
        let rec = Log::scan(&r, BASE, 8192).unwrap();
        assert_eq!(rec.applied_through(), 3);
        assert_eq!(rec.map(|e| e.seq).collect::<Vec<_>>(), vec![4, 5]);
    }

    /// Entries that end exactly at the ring's end, or too close to it for a
    /// record: the next one starts the next pass, where no header is
    /// cleared. Recovery must still end cleanly there, on the earlier
    /// pass's record.
    #[test]
    fn ends_cleanly_at_a_pass_start() {
        let r = region();
        let len = 1024; // ring of 896 bytes
        let log = Log::create(r.clone(), BASE, len).unwrap();
        let mut passes_ended = 0;
        for s in 1..=120u64 {
            // 64-byte entries (14 per pass, the last ending at the ring's
            // end), and now and then a 56-byte one, which leaves 8 bytes.
            let n = if s % 23 == 0 { 12 } else { 20 };
            assert_eq!(log.try_append(&[op(s, n)]).unwrap(), s);
            log.commit(s).unwrap();
            log.checkpoint(s - 1).unwrap();
            let room = log.geo.cap - lock(&log.tail).pos % log.geo.cap;
            if room == log.geo.cap || room < MIN_RECORD {
                passes_ended += 1;
            }
            let rec = Log::scan(&r, BASE, len).unwrap();
            assert!(rec.end().found.is_clean(), "after {s}: {:?}", rec.end());
            assert_eq!(rec.map(|e| e.seq).collect::<Vec<_>>(), vec![s]);
        }
        assert!(passes_ended >= 5, "only {passes_ended} entries ended a pass");
    }

    /// After a clean close (no entry left), `open_after_clean_close` skips
    /// clearing the free space and the log goes on working across passes;
    /// with entries left it clears, exactly as `open` does.
    #[test]
    fn open_after_clean_close() {
        let r = region();
        let len = 1024;
        let junk_at = |log: &Log| {
            let t = lock(&log.tail);
            log.geo.at(t.pos + 200)
        };
        let log = Log::create(r.clone(), BASE, len).unwrap();
        for s in 1..=3u64 {
            log.append_commit(&[op(s, 30)]).unwrap();
        }
        let junk = junk_at(&log);
        log.checkpoint(3).unwrap();
        drop(log);
        // Bytes in the free space, well past the end: left alone.
        r.write(junk, &[0xa5; 16]);
        let (log, rec) = Log::open_after_clean_close(r.clone(), BASE, len).unwrap();
        assert_eq!(rec.count(), 0);
        assert_eq!(r.bytes(junk, 16), &[0xa5; 16], "cleared after a clean close");
        // It keeps working, round the ring several times.
        let mut applied = 3;
        for s in 4..=60u64 {
            assert_eq!(log.append_commit(&[op(s, 40)]).unwrap(), s);
            if s % 4 == 0 {
                applied = s - 1;
                log.checkpoint(applied).unwrap();
            }
        }
        let junk = junk_at(&log);
        drop(log);
        r.write(junk, &[0xa5; 16]);
        // Entries left: the same as `open`, free space cleared.
        let (log, rec) = Log::open_after_clean_close(r.clone(), BASE, len).unwrap();
        assert_eq!(rec.map(|e| e.seq).collect::<Vec<_>>(), (applied + 1..=60).collect::<Vec<_>>());
        assert_eq!(r.bytes(junk, 16), &[0u8; 16], "not cleared with entries left");
        assert_eq!(log.append_commit(&[b"x"]).unwrap(), 61);
    }

    /// Many passes round a small ring, checkpointing behind: every reopen
    /// sees exactly the unapplied entries, including across wraps.
    #[test]
    fn wraps_many_times() {
        let r = region();
        let len = 1024;
        let log = Log::create(r.clone(), BASE, len).unwrap();
        let mut applied = 0;
        for s in 1..=400u64 {
            let n = (s * 7 % 90) as usize;
            assert_eq!(log.try_append(&[op(s, n)]).unwrap(), s);
            log.commit(s).unwrap();
            if s % 3 == 0 {
                applied = s - 2;
                log.checkpoint(applied).unwrap();
            }
            if s % 37 == 0 {
                let rec = Log::scan(&r, BASE, len).unwrap();
                assert!(rec.end().found.is_clean(), "{:?}", rec.end());
                let seqs: Vec<_> = rec.map(|e| e.seq).collect();
                assert_eq!(seqs, (applied + 1..=s).collect::<Vec<_>>());
            }
        }
        assert!(log.stats().bytes > 10 * log.capacity(), "did not wrap often");
        drop(log);
        let (log, rec) = Log::open(r, BASE, len).unwrap();
        let got: Vec<_> = rec.collect();
        assert_eq!(got.iter().map(|e| e.seq).collect::<Vec<_>>(), (applied + 1..=400).collect::<Vec<_>>());
        assert_eq!(got[0].ops, vec![op(applied + 1, ((applied + 1) * 7 % 90) as usize)]);
        assert_eq!(log.append_commit(&[b"x"]).unwrap(), 401);
    }

    #[test]
    fn too_large_full_and_not_appended() {
        let r = region();
        let log = Log::create(r, BASE, 1024).unwrap();
        let cap = log.capacity();
        assert_eq!(cap, 1024 - 128);
        let big = vec![0u8; cap as usize];
        assert!(matches!(log.append(&[&big]), Err(LogError::TooLarge { capacity, .. }) if capacity == cap));
        // exactly the capacity fits
        let fit = vec![1u8; cap as usize - 40];
        assert_eq!(Log::entry_size(&[&fit]), cap);
        assert_eq!(log.try_append(&[&fit]).unwrap(), 1);
        assert!(matches!(log.try_append(&[b"y"]), Err(LogError::Full { free: 0, .. })));
        assert!(matches!(log.commit(2), Err(LogError::NotAppended { seq: 2, next: 2 })));
        assert!(matches!(log.checkpoint(2), Err(LogError::NotAppended { .. })));
        log.commit(1).unwrap();
        log.checkpoint(1).unwrap();
        assert_eq!(log.try_append(&[b"y"]).unwrap(), 2);
    }

    /// An entry that fits neither before the ring's end nor after a wrap
    /// with the wrapped-over space counted, in an empty log: the checkpoint
    /// moves to the next pass instead of waiting forever.
    #[test]
    fn restart_at_next_pass_when_empty() {
        let r = region();
        let log = Log::create(r.clone(), BASE, 1024).unwrap();
        let cap = log.capacity() as usize;
        let half = vec![2u8; cap / 2];
        let s1 = log.append_commit(&[&half]).unwrap();
        log.checkpoint(s1).unwrap();
        let most = vec![3u8; cap - 100];
        let s2 = log.try_append(&[&most]).unwrap();
        log.commit(s2).unwrap();
        let rec = Log::scan(&r, BASE, 1024).unwrap();
        assert_eq!(rec.map(|e| (e.seq, e.ops)).collect::<Vec<_>>(), vec![(s2, vec![most])]);
    }

    /// `append` on a full log waits for a checkpoint from another thread.
    #[test]
    fn full_log_waits_for_checkpoint() {
        let r = region();
        let log = Log::create(r, BASE, 1024).unwrap();
        let chunk = vec![5u8; 300];
        let s1 = log.append_commit(&[&chunk]).unwrap();
        let s2 = log.append_commit(&[&chunk]).unwrap();
        assert!(matches!(log.try_append(&[&chunk]), Err(LogError::Full { .. })));
        std::thread::scope(|s| {
            let h = s.spawn(|| log.append_commit(&[&chunk]).unwrap());
            while log.stats().space_waits == 0 {
                std::thread::yield_now();
            }
            log.checkpoint(s1).unwrap();
            assert_eq!(h.join().unwrap(), s2 + 1);
        });
        assert!(log.stats().space_waits >= 1);
    }

    #[test]
    fn damaged_slot_is_reported_and_rewritten() {
        let r = region();
        let log = Log::create(r.clone(), BASE, 2048).unwrap();
        log.append_commit(&[b"a"]).unwrap();
        drop(log);
        r.write(BASE + 40, &[0xff]);
        let (_log, rec) = Log::open(r.clone(), BASE, 2048).unwrap();
        assert!(matches!(rec.damaged_slot(), Some((0, crate::SlotFault::BadChecksum { .. }))));
        assert_eq!(rec.count(), 1);
        let rec = Log::scan(&r, BASE, 2048).unwrap();
        assert_eq!(rec.damaged_slot(), None, "open rewrote the slot");
        r.write(BASE, &[0u8; 128]);
        assert!(matches!(Log::scan(&r, BASE, 2048), Err(LogError::BadHeader { .. })));
    }

    #[test]
    fn bad_geometry_is_an_error() {
        let r = region();
        assert!(matches!(Log::create(r.clone(), 8, 4096), Err(LogError::Geometry { .. })));
        assert!(matches!(Log::create(r.clone(), 0, 100), Err(LogError::Geometry { .. })));
        assert!(matches!(Log::create(r, 1 << 20, 4096), Err(LogError::Bounds(_))));
    }
}
