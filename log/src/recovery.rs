//! Recovery: find the checkpoint, then walk the records after it and keep
//! every committed entry, stopping at the first record that is not the next
//! expected one.

use crate::error::LogError;
use crate::format::{self, Checkpoint, HEADER_LEN, KIND_WRAP, MIN_RECORD, REC_HEADER, RecHeader, SLOT_LEN, SlotFault};
use daxkv_alloc::Region;

/// The smallest log area accepted: the slots and a ring of 256 bytes.
pub const MIN_AREA: u64 = HEADER_LEN + 256;

/// Where the log lives in its region.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geometry {
    /// Offset of the area (slot 0) in the region.
    pub base: u64,
    /// Length of the area.
    pub len: u64,
    /// Offset of the ring in the region.
    pub data: u64,
    /// Bytes of the ring.
    pub cap: u64,
}

impl Geometry {
    pub fn new(region: &Region, base: u64, len: u64) -> Result<Geometry, LogError> {
        let bad = |why| Err(LogError::Geometry { base, len, why });
        if !base.is_multiple_of(64) {
            return bad("the area must start on a 64-byte boundary");
        }
        if !len.is_multiple_of(8) {
            return bad("the area's length must be a multiple of 8");
        }
        if len < MIN_AREA {
            return bad("the area is too small (at least 384 bytes)");
        }
        region.check(base, len)?;
        Ok(Geometry { base, len, data: base + HEADER_LEN, cap: len - HEADER_LEN })
    }

    /// Region offset of logical position `pos`.
    pub fn at(&self, pos: u64) -> u64 {
        self.data + pos % self.cap
    }

    /// Region offset of checkpoint slot `i`.
    pub fn slot(&self, i: u64) -> u64 {
        self.base + i * SLOT_LEN
    }
}

/// A committed entry found by recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its sequence number.
    pub seq: u64,
    /// Offset of its record in the region.
    pub offset: u64,
    /// Its operations, as appended.
    pub ops: Vec<Vec<u8>>,
}

/// What recovery found where it stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Found {
    /// Zeroed bytes: nothing was written there since the free space was
    /// last cleared. A normal end.
    Empty,
    /// A whole record with the wrong sequence number or generation: left
    /// from an earlier pass round the ring. A normal end.
    Stale {
        /// Its sequence number.
        seq: u64,
        /// Its generation.
        generation: u64,
    },
    /// The live window is full up to the checkpoint: a normal end.
    Full,
    /// Not a record header: wrong magic number or kind. After a crash a
    /// torn header looks like this; otherwise the log is damaged.
    BadMagic {
        /// The first 4 bytes found.
        magic: u32,
        /// The kind field found.
        kind: u16,
    },
    /// A record length that is not a multiple of 8, smaller than a record,
    /// or that runs past the ring's end or the live window.
    BadLength {
        /// The length found.
        len: u32,
    },
    /// The checksum does not match: a record torn by a crash while it was
    /// being committed, or damaged.
    BadChecksum {
        /// The checksum stored in the record.
        stored: u32,
        /// The checksum of the bytes found.
        computed: u32,
    },
    /// The checksum matches but the operations do not parse: written by a
    /// buggy or different writer.
    BadOps,
}

impl Found {
    /// Whether this is how a log ends when nothing is damaged and no commit
    /// was in progress. The others follow a crash during a commit (whose
    /// entry then was not acknowledged) or damage to the medium.
    pub fn is_clean(&self) -> bool {
        matches!(self, Found::Empty | Found::Stale { .. } | Found::Full)
    }
}

/// Where and why recovery stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanEnd {
    /// The sequence number that was expected there (the next to append).
    pub next_seq: u64,
    /// Offset in the region where that record was expected.
    pub offset: u64,
    /// What was found there instead.
    pub found: Found,
}

/// The committed entries not yet applied, in order, with the report of how
/// the scan ended. Iterating yields the entries.
#[derive(Debug)]
pub struct Recovery {
    entries: std::vec::IntoIter<Entry>,
    end: ScanEnd,
    applied_through: u64,
    damaged_slot: Option<(u64, SlotFault)>,
}

impl Recovery {
    /// Where and why the scan stopped.
    pub fn end(&self) -> &ScanEnd {
        &self.end
    }

    /// The checkpoint: every entry up to this sequence number was applied.
    pub fn applied_through(&self) -> u64 {
        self.applied_through
    }

    /// A checkpoint slot that did not hold a valid checkpoint (the other
    /// one did, so nothing was lost): its number and what was found. After
    /// a crash during a checkpoint this is expected; otherwise it is damage.
    /// `Log::open` rewrites the slot.
    pub fn damaged_slot(&self) -> Option<(u64, SlotFault)> {
        self.damaged_slot
    }
}

impl Iterator for Recovery {
    type Item = Entry;

    fn next(&mut self) -> Option<Entry> {
        self.entries.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.entries.size_hint()
    }
}

impl ExactSizeIterator for Recovery {}

/// Everything a scan learnt, for `Log::open`.
pub(crate) struct Scan {
    pub checkpoint: Checkpoint,
    /// Whether both slots hold `checkpoint`.
    pub slots_agree: bool,
    /// `(seq, logical position)` of every entry found.
    pub positions: Vec<(u64, u64)>,
    /// Logical position where the scan stopped: the next record goes there.
    pub end_pos: u64,
    pub recovery: Recovery,
}

/// The checkpoint to trust, whether both slots hold it, and the damaged slot.
type SlotsRead = (Checkpoint, bool, Option<(u64, SlotFault)>);

fn read_checkpoint(region: &Region, g: &Geometry) -> Result<SlotsRead, LogError> {
    let slot = |i| Checkpoint::decode(region.bytes(g.slot(i), SLOT_LEN as usize), g.len);
    match (slot(0), slot(1)) {
        (Ok(a), Ok(b)) => Ok((if b.counter > a.counter { b } else { a }, a == b, None)),
        (Ok(a), Err(f)) => Ok((a, false, Some((1, f)))),
        (Err(f), Ok(b)) => Ok((b, false, Some((0, f)))),
        (Err(first), Err(second)) => Err(LogError::BadHeader { offset: g.base, first, second }),
    }
}

/// Walk the log from its checkpoint. Reads only; the area must not be
/// written meanwhile.
pub(crate) fn scan(region: &Region, g: &Geometry) -> Result<Scan, LogError> {
    let (cp, slots_agree, damaged_slot) = read_checkpoint(region, g)?;
    let limit = cp.start_pos.saturating_add(g.cap);
    let mut pos = cp.start_pos;
    let mut seq = cp.start_seq;
    let mut entries = Vec::new();
    let mut positions = Vec::new();
    let found = loop {
        // The writer's rule (`next_slot`): a record starts where at least
        // MIN_RECORD bytes remain before the ring's end, else at the next
        // pass's start, and only if MIN_RECORD bytes of the window remain.
        if limit - pos < MIN_RECORD {
            break Found::Full;
        }
        let room = g.cap - pos % g.cap;
        if room < MIN_RECORD {
            pos += room;
            continue;
        }
        let off = g.at(pos);
        let head = region.bytes(off, REC_HEADER);
        if head.iter().all(|&b| b == 0) {
            break Found::Empty;
        }
        let h = RecHeader::decode(head);
        if !h.is_record() {
            break Found::BadMagic { magic: h.magic, kind: h.kind };
        }
        let len = u64::from(h.len);
        if len < MIN_RECORD || !len.is_multiple_of(8) || len > room || len > limit - pos {
            break Found::BadLength { len: h.len };
        }
        let rec = region.bytes(off, len as usize);
        let (stored, computed) = format::checksums(rec);
        if stored != computed {
            break Found::BadChecksum { stored, computed };
        }
        if h.seq != seq || h.generation != pos / g.cap {
            break Found::Stale { seq: h.seq, generation: h.generation };
        }
        if h.kind == KIND_WRAP {
            if pos + room > limit {
                break Found::Full;
            }
            pos += room;
            continue;
        }
        let Some(ops) = format::decode_ops(rec, h.nops) else {
            break Found::BadOps;
        };
        entries.push(Entry { seq, offset: off, ops });
        positions.push((seq, pos));
        seq += 1;
        pos += len;
    };
    let end = ScanEnd { next_seq: seq, offset: g.at(pos), found };
    let recovery = Recovery { entries: entries.into_iter(), end, applied_through: cp.start_seq - 1, damaged_slot };
    Ok(Scan { checkpoint: cp, slots_agree, positions, end_pos: pos, recovery })
}
