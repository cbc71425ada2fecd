//! The on-media format of the log area: two checkpoint slots, then a ring
//! of 8-byte aligned records. Every integer is little-endian with a fixed
//! width.
//!
//! ```text
//! area:  [slot 0: 64 B][slot 1: 64 B][ring: capacity = len - 128 bytes ...]
//!
//! slot (64 B, both hold the same checkpoint except while one is rewritten)
//!   0  u64 magic "DAXKVLOG"     32 u64 start_seq  first entry not yet applied
//!   8  u32 format version (1)   40 u64 start_pos  logical position of its record
//!  12  u32 zero                 48 u64 zero
//!  16  u64 area length          56 u32 zero
//!  24  u64 checkpoint counter   60 u32 crc32c of bytes 0..60
//!
//! record (entry or wrap marker, length a multiple of 8, at least 40 B)
//!   0  u32 magic "DXLE"         16 u64 generation (pass number = pos / capacity)
//!   4  u16 kind: 1 entry, 2 wrap 24 u32 record length in bytes
//!   6  u16 zero                 28 u32 number of operations
//!   8  u64 sequence number      32 operations: u32 length, bytes; repeated
//!   .. zero padding to len - 4
//!   len-4  u32 crc32c of bytes 32..len-4 followed by bytes 0..32
//! ```
//!
//! A logical position `pos` grows without bound; the record lives at ring
//! offset `pos % capacity` and carries generation `pos / capacity`, so a
//! record left from an earlier pass fails the generation check. A record
//! that does not fit before the ring's end is preceded by a wrap marker
//! (carrying the sequence number of the entry after it), or by nothing when
//! fewer than [`MIN_RECORD`] bytes remain; the entry then starts the next
//! pass. The checksum takes the body first so that a writer can checksum
//! the operations before it knows its sequence number, and finish the
//! checksum with the 32 header bytes once it does.

/// Bytes of one checkpoint slot.
pub(crate) const SLOT_LEN: u64 = 64;
/// Bytes before the ring: the two checkpoint slots.
pub const HEADER_LEN: u64 = 2 * SLOT_LEN;
/// Bytes of a record header.
pub(crate) const REC_HEADER: usize = 32;
/// Bytes of the checksum at a record's end.
const CRC_LEN: usize = 4;
/// The smallest record: a header and a checksum, padded to 8 (a wrap marker
/// or an entry without operations). When less than this remains before the
/// ring's end, writers and readers both skip to the next pass.
pub const MIN_RECORD: u64 = 40;
/// Version of this format, in the slots.
pub const FORMAT_VERSION: u32 = 1;

/// Bound on start sequence numbers and positions, far beyond any log's
/// life, so that arithmetic on values read from media cannot overflow.
const MAX_START: u64 = 1 << 62;
const LOG_MAGIC: u64 = u64::from_le_bytes(*b"DAXKVLOG");
const REC_MAGIC: u32 = u32::from_le_bytes(*b"DXLE");
pub(crate) const KIND_ENTRY: u16 = 1;
pub(crate) const KIND_WRAP: u16 = 2;

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// What is wrong with a checkpoint slot found on media.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SlotFault {
    /// The slot does not start with the log's magic number.
    #[error("bad magic {found:#018x}")]
    BadMagic {
        /// The first 8 bytes found.
        found: u64,
    },
    /// The checksum over the slot does not match.
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadChecksum {
        /// The checksum stored in the slot.
        stored: u32,
        /// The checksum of the bytes found.
        computed: u32,
    },
    /// A format version this build does not read.
    #[error("format version {found}, this build reads {FORMAT_VERSION}")]
    BadVersion {
        /// The version found.
        found: u32,
    },
    /// The slot was written for an area of another length.
    #[error("written for an area of {found} bytes, opened with {expected}")]
    WrongLength {
        /// The area length in the slot.
        found: u64,
        /// The area length given to open.
        expected: u64,
    },
    /// A start sequence number of 0 (which no entry has) or a start
    /// sequence number or position of 2^62 or more (which no log reaches).
    #[error("impossible start: sequence number {seq}, position {pos}")]
    BadStart {
        /// The start sequence number found.
        seq: u64,
        /// The start position found.
        pos: u64,
    },
}

/// The durable checkpoint: entries before `start_seq` are applied and their
/// space is free; the live window is `[start_pos, start_pos + capacity)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    pub counter: u64,
    pub start_seq: u64,
    pub start_pos: u64,
    pub area_len: u64,
}

impl Checkpoint {
    pub fn encode(&self) -> [u8; SLOT_LEN as usize] {
        let mut b = [0u8; SLOT_LEN as usize];
        b[0..8].copy_from_slice(&LOG_MAGIC.to_le_bytes());
        b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[16..24].copy_from_slice(&self.area_len.to_le_bytes());
        b[24..32].copy_from_slice(&self.counter.to_le_bytes());
        b[32..40].copy_from_slice(&self.start_seq.to_le_bytes());
        b[40..48].copy_from_slice(&self.start_pos.to_le_bytes());
        let crc = crc32c::crc32c(&b[..60]);
        b[60..64].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8], expected_len: u64) -> Result<Checkpoint, SlotFault> {
        let magic = u64_at(b, 0);
        if magic != LOG_MAGIC {
            return Err(SlotFault::BadMagic { found: magic });
        }
        let stored = u32_at(b, 60);
        let computed = crc32c::crc32c(&b[..60]);
        if stored != computed {
            return Err(SlotFault::BadChecksum { stored, computed });
        }
        let version = u32_at(b, 8);
        if version != FORMAT_VERSION {
            return Err(SlotFault::BadVersion { found: version });
        }
        let area_len = u64_at(b, 16);
        if area_len != expected_len {
            return Err(SlotFault::WrongLength { found: area_len, expected: expected_len });
        }
        let cp = Checkpoint { counter: u64_at(b, 24), start_seq: u64_at(b, 32), start_pos: u64_at(b, 40), area_len };
        if cp.start_seq == 0 || cp.start_seq >= MAX_START || cp.start_pos >= MAX_START {
            return Err(SlotFault::BadStart { seq: cp.start_seq, pos: cp.start_pos });
        }
        Ok(cp)
    }
}

/// Round up to a multiple of 8.
pub(crate) fn align8(n: u64) -> u64 {
    n.div_ceil(8) * 8
}

/// Record length of an entry holding `ops`.
pub(crate) fn entry_len<O: AsRef<[u8]>>(ops: &[O]) -> u64 {
    let body: u64 = ops.iter().map(|o| 4 + o.as_ref().len() as u64).sum();
    align8(REC_HEADER as u64 + body + CRC_LEN as u64)
}

/// An encoded entry whose sequence number and generation are not yet known,
/// followed by [`REC_HEADER`] zero bytes: the cleared header of the next
/// record, copied with the entry when it is the next record's place.
pub(crate) struct Unsealed {
    bytes: Vec<u8>,
    len: usize,
    body_crc: u32,
}

/// Encode `ops` into a record (`len` from [`entry_len`], at most u32::MAX).
pub(crate) fn encode_entry<O: AsRef<[u8]>>(ops: &[O], len: u64) -> Unsealed {
    let len = len as usize;
    let mut bytes = vec![0u8; len + REC_HEADER];
    bytes[0..4].copy_from_slice(&REC_MAGIC.to_le_bytes());
    bytes[4..6].copy_from_slice(&KIND_ENTRY.to_le_bytes());
    bytes[24..28].copy_from_slice(&(len as u32).to_le_bytes());
    bytes[28..32].copy_from_slice(&(ops.len() as u32).to_le_bytes());
    let mut at = REC_HEADER;
    for op in ops {
        let op = op.as_ref();
        bytes[at..at + 4].copy_from_slice(&(op.len() as u32).to_le_bytes());
        bytes[at + 4..at + 4 + op.len()].copy_from_slice(op);
        at += 4 + op.len();
    }
    let body_crc = crc32c::crc32c(&bytes[REC_HEADER..len - CRC_LEN]);
    Unsealed { bytes, len, body_crc }
}

impl Unsealed {
    /// Fill in the sequence number and generation and finish the checksum.
    /// Returns the record followed by [`REC_HEADER`] zero bytes.
    pub fn seal(&mut self, seq: u64, generation: u64) -> &[u8] {
        let (b, n) = (&mut self.bytes, self.len);
        b[8..16].copy_from_slice(&seq.to_le_bytes());
        b[16..24].copy_from_slice(&generation.to_le_bytes());
        let crc = crc32c::crc32c_append(self.body_crc, &b[..REC_HEADER]);
        b[n - CRC_LEN..n].copy_from_slice(&crc.to_le_bytes());
        b
    }
}

/// A wrap marker: the entry `seq` starts the pass after `generation`.
pub(crate) fn wrap_marker(seq: u64, generation: u64) -> [u8; MIN_RECORD as usize] {
    let mut u = Unsealed { bytes: vec![0u8; MIN_RECORD as usize], len: MIN_RECORD as usize, body_crc: 0 };
    u.bytes[0..4].copy_from_slice(&REC_MAGIC.to_le_bytes());
    u.bytes[4..6].copy_from_slice(&KIND_WRAP.to_le_bytes());
    u.bytes[24..28].copy_from_slice(&(MIN_RECORD as u32).to_le_bytes());
    u.body_crc = crc32c::crc32c(&u.bytes[REC_HEADER..MIN_RECORD as usize - CRC_LEN]);
    let mut out = [0u8; MIN_RECORD as usize];
    out.copy_from_slice(&u.seal(seq, generation)[..MIN_RECORD as usize]);
    out
}

/// The fixed fields of a record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecHeader {
    pub magic: u32,
    pub kind: u16,
    pub seq: u64,
    pub generation: u64,
    pub len: u32,
    pub nops: u32,
}

impl RecHeader {
    pub fn decode(b: &[u8]) -> RecHeader {
        RecHeader {
            magic: u32_at(b, 0),
            kind: u16_at(b, 4),
            seq: u64_at(b, 8),
            generation: u64_at(b, 16),
            len: u32_at(b, 24),
            nops: u32_at(b, 28),
        }
    }

    /// Whether magic and kind are those of a record.
    pub fn is_record(&self) -> bool {
        self.magic == REC_MAGIC && (self.kind == KIND_ENTRY || self.kind == KIND_WRAP)
    }
}

/// The stored and the computed checksum of a whole record.
pub(crate) fn checksums(rec: &[u8]) -> (u32, u32) {
    let n = rec.len();
    let stored = u32_at(rec, n - CRC_LEN);
    let body = crc32c::crc32c(&rec[REC_HEADER..n - CRC_LEN]);
    (stored, crc32c::crc32c_append(body, &rec[..REC_HEADER]))
}

/// The operations of a checksummed entry record, or `None` if they do not
/// parse (lengths running past the record, or more than padding left over).
pub(crate) fn decode_ops(rec: &[u8], nops: u32) -> Option<Vec<Vec<u8>>> {
    let body = &rec[REC_HEADER..rec.len() - CRC_LEN];
    let mut ops = Vec::with_capacity((nops as usize).min(body.len() / 4));
    let mut at = 0usize;
    for _ in 0..nops {
        if body.len() - at < 4 {
            return None;
        }
        let n = u32_at(body, at) as usize;
        at += 4;
        if body.len() - at < n {
            return None;
        }
        ops.push(body[at..at + n].to_vec());
        at += n;
    }
    (body.len() - at < 8).then_some(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_round_trip() {
        let ops: Vec<Vec<u8>> = vec![b"put k v".to_vec(), vec![], vec![7u8; 300]];
        let len = entry_len(&ops);
        assert_eq!(len % 8, 0);
        assert_eq!(len, align8(32 + (4 + 7) + 4 + (4 + 300) + 4));
        let mut u = encode_entry(&ops, len);
        let sealed = u.seal(42, 3);
        assert_eq!(&sealed[len as usize..], &[0u8; REC_HEADER], "cleared next header");
        let rec = sealed[..len as usize].to_vec();
        let h = RecHeader::decode(&rec);
        assert!(h.is_record());
        assert_eq!((h.kind, h.seq, h.generation, h.len as u64, h.nops), (KIND_ENTRY, 42, 3, len, 3));
        let (stored, computed) = checksums(&rec);
        assert_eq!(stored, computed);
        assert_eq!(decode_ops(&rec, h.nops).unwrap(), ops);
        // every single-bit flip is caught by the checksum
        for i in 0..rec.len() * 8 {
            let mut bad = rec.clone();
            bad[i / 8] ^= 1 << (i % 8);
            let (s, c) = checksums(&bad);
            assert_ne!(s, c, "flip of bit {i} not detected");
        }
    }

    #[test]
    fn wrap_marker_is_a_valid_record() {
        let w = wrap_marker(9, 1);
        let h = RecHeader::decode(&w);
        assert_eq!((h.kind, h.seq, h.generation, h.len as u64, h.nops), (KIND_WRAP, 9, 1, MIN_RECORD, 0));
        let (s, c) = checksums(&w);
        assert_eq!(s, c);
    }

    #[test]
    fn ops_that_overrun_are_rejected() {
        let ops = [b"abc".as_slice()];
        let len = entry_len(&ops);
        let mut u = encode_entry(&ops, len);
        let rec = u.seal(1, 0)[..len as usize].to_vec();
        assert!(decode_ops(&rec, 3).is_none());
        let mut long = rec.clone();
        long[32..36].copy_from_slice(&1000u32.to_le_bytes());
        assert!(decode_ops(&long, 1).is_none());
        assert!(decode_ops(&rec, 0).is_none(), "unparsed bytes beyond padding");
    }

    #[test]
    fn checkpoint_slot_round_trip_and_faults() {
        let cp = Checkpoint { counter: 5, start_seq: 17, start_pos: 123_456, area_len: 1 << 20 };
        let b = cp.encode();
        assert_eq!(Checkpoint::decode(&b, 1 << 20), Ok(cp));
        assert_eq!(Checkpoint::decode(&b, 1 << 21), Err(SlotFault::WrongLength { found: 1 << 20, expected: 1 << 21 }));
        let mut bad = b;
        bad[33] ^= 0x10;
        assert!(matches!(Checkpoint::decode(&bad, 1 << 20), Err(SlotFault::BadChecksum { .. })));
        assert!(matches!(Checkpoint::decode(&[0u8; 64], 1 << 20), Err(SlotFault::BadMagic { found: 0 })));
    }
}
