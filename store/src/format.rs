//! The pool's superblocks. See `docs/format.md` for the picture.
//!
//! Two copies, at offsets 0 and 4096, each 256 bytes:
//!
//! ```text
//!   0  magic "DAXKVSB1"        8  version u32, flags u32
//!  16  uuid [u8; 16]          32  pool size u64
//!  40  log offset u64         48  log length u64
//!  56  heap offset u64        64  heap length u64
//!  72  head leaf u64          80  sequence u64 (bumped on every write)
//!  88  clean u64 (1 = closed cleanly)
//!  96  snapshot offset u64   104  snapshot length u64
//! 112  keys u64              120  value+key bytes u64
//! 128  recoveries u64       136  keys with an expiry u64
//! 144..252 zero
//! 252  crc32c of bytes 0..252
//! ```
//!
//! A write updates one copy and makes it durable, then the other: first
//! the copy that is damaged or older, so the newest valid copy is never
//! overwritten before a newer one is durable. Open takes the valid copy
//! with the higher sequence, so a torn write of either copy leaves the
//! other intact, and never an older state than the one open found.

use crate::error::PoolError;
use daxkv_alloc::Region;
use std::path::Path;

pub(crate) const MAGIC: [u8; 8] = *b"DAXKVSB1";
/// The format this code writes. Version 3 added records that carry an
/// expiry (flagged in their key-length word); version 4 heaps that grew
/// (the heap header's `grown` word).
pub(crate) const VERSION: u32 = 4;
/// The oldest format this code opens: a version 2 or 3 pool is a version 4
/// pool without expiring records (2) and never grown (2, 3), and the first
/// superblock write (at open) marks it version 4.
const OLDEST: u32 = 2;
pub(crate) const SB_LEN: usize = 256;
pub(crate) const SB_OFFSETS: [u64; 2] = [0, 4096];
/// Bytes before the log area.
pub(crate) const HEADER_BYTES: u64 = 8192;
/// The largest sequence number a valid superblock holds (see `decode`).
const MAX_SEQ: u64 = 1 << 48;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Superblock {
    /// The format version read (what `encode` writes is always [`VERSION`]).
    pub version: u32,
    pub uuid: [u8; 16],
    pub pool_size: u64,
    pub log_off: u64,
    pub log_len: u64,
    pub heap_off: u64,
    pub heap_len: u64,
    pub head_leaf: u64,
    pub seq: u64,
    pub clean: bool,
    pub snapshot_off: u64,
    pub snapshot_len: u64,
    pub keys: u64,
    pub bytes: u64,
    pub recoveries: u64,
    /// Keys whose record carries an expiry (valid when clean; zero in a
    /// version 2 superblock, which is right: it had none).
    pub expiring: u64,
}

fn put(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn get(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl Superblock {
    pub(crate) fn encode(&self) -> [u8; SB_LEN] {
        let mut b = [0u8; SB_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[16..32].copy_from_slice(&self.uuid);
        put(&mut b, 32, self.pool_size);
        put(&mut b, 40, self.log_off);
        put(&mut b, 48, self.log_len);
        put(&mut b, 56, self.heap_off);
        put(&mut b, 64, self.heap_len);
        put(&mut b, 72, self.head_leaf);
        put(&mut b, 80, self.seq);
        put(&mut b, 88, u64::from(self.clean));
        put(&mut b, 96, self.snapshot_off);
        put(&mut b, 104, self.snapshot_len);
        put(&mut b, 112, self.keys);
        put(&mut b, 120, self.bytes);
        put(&mut b, 128, self.recoveries);
        put(&mut b, 136, self.expiring);
        let crc = crc32c::crc32c(&b[..252]);
        b[252..256].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decode one copy: `Err` says why it is not valid.
    pub(crate) fn decode(b: &[u8]) -> Result<Superblock, Fault> {
        if b[0..8] != MAGIC {
            return Err(Fault::Magic);
        }
        let crc = u32::from_le_bytes(b[252..256].try_into().expect("4 bytes"));
        if crc32c::crc32c(&b[..252]) != crc {
            return Err(Fault::Checksum);
        }
        let version = u32::from_le_bytes(b[8..12].try_into().expect("4 bytes"));
        if !(OLDEST..=VERSION).contains(&version) {
            return Err(Fault::Version(version));
        }
        let clean = match get(b, 88) {
            0 => false,
            1 => true,
            v => return Err(Fault::Field(format!("clean flag {v}"))),
        };
        // Bumped once per open and close: no pool gets anywhere near this,
        // and a damaged one must not wrap it round.
        if get(b, 80) > MAX_SEQ {
            return Err(Fault::Field(format!("sequence {}", get(b, 80))));
        }
        Ok(Superblock {
            version,
            uuid: b[16..32].try_into().expect("16 bytes"),
            pool_size: get(b, 32),
            log_off: get(b, 40),
            log_len: get(b, 48),
            heap_off: get(b, 56),
            heap_len: get(b, 64),
            head_leaf: get(b, 72),
            seq: get(b, 80),
            clean,
            snapshot_off: get(b, 96),
            snapshot_len: get(b, 104),
            keys: get(b, 112),
            bytes: get(b, 120),
            recoveries: get(b, 128),
            expiring: get(b, 136),
        })
    }

    /// The areas must follow one another inside the pool.
    pub(crate) fn check_geometry(&self) -> Result<(), String> {
        let ok = self.log_off == HEADER_BYTES
            && self.log_off.checked_add(self.log_len) == Some(self.heap_off)
            && self.heap_off.checked_add(self.heap_len).is_some_and(|e| e <= self.pool_size)
            && self.head_leaf >= self.heap_off
            && self.head_leaf < self.heap_off + self.heap_len;
        if ok { Ok(()) } else { Err(format!("impossible geometry {self:?}")) }
    }

    /// Write both copies, each made durable before the next. The newest
    /// valid copy is never the one overwritten first: a copy that is
    /// damaged (a crash tore it) or older (a crash came between the two
    /// writes) goes first, so that a crash during either write leaves a
    /// valid copy at least as new as the one open chose.
    pub(crate) fn write(&mut self, r: &Region) -> Result<(), daxkv_alloc::DrainError> {
        self.seq += 1;
        let b = self.encode();
        let seq = |off: u64| {
            let mut c = [0u8; SB_LEN];
            r.read(off, &mut c);
            Superblock::decode(&c).ok().filter(|sb| sb.check_geometry().is_ok()).map(|sb| sb.seq)
        };
        let [a, b_off] = SB_OFFSETS;
        let order = match (seq(a), seq(b_off)) {
            (Some(x), Some(y)) if y < x => [b_off, a],
            (Some(_), None) => [b_off, a],
            _ => [a, b_off],
        };
        for off in order {
            r.copy_nodrain(off, &b);
            r.drain()?;
        }
        Ok(())
    }
}

/// Why one superblock copy is not valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fault {
    Magic,
    Checksum,
    Version(u32),
    Field(String),
}

/// Read both copies and pick the one to trust. Writes nothing.
pub(crate) fn read(r: &Region, path: &Path) -> Result<(Superblock, Option<usize>), PoolError> {
    let mut copies = Vec::new();
    let mut faults = Vec::new();
    for (i, off) in SB_OFFSETS.iter().enumerate() {
        let mut b = [0u8; SB_LEN];
        r.read(*off, &mut b);
        match Superblock::decode(&b).and_then(|sb| match sb.check_geometry() {
            Ok(()) => Ok(sb),
            Err(e) => Err(Fault::Field(e)),
        }) {
            Ok(sb) => copies.push((i, sb)),
            Err(f) => faults.push((i, f)),
        }
    }
    let damaged = faults.first().map(|(i, _)| *i);
    if let Some((_, sb)) = copies.iter().max_by_key(|(_, sb)| sb.seq) {
        if sb.pool_size > r.len() {
            return Err(PoolError::Truncated { path: path.into(), expected: sb.pool_size, found: r.len() });
        }
        return Ok((*sb, if copies.len() == 2 { None } else { damaged }));
    }
    let path = path.to_path_buf();
    if faults.iter().all(|(_, f)| *f == Fault::Magic) {
        let mut found = vec![0u8; 8];
        r.read(0, &mut found);
        return Err(PoolError::NotAPool { path, found });
    }
    if let Some((_, Fault::Version(v))) = faults.iter().find(|(_, f)| matches!(f, Fault::Version(_))) {
        return Err(PoolError::WrongVersion { path, found: *v, expected: VERSION });
    }
    let why = faults.iter().map(|(i, f)| format!("copy {i}: {f:?}")).collect::<Vec<_>>().join("; ");
    Err(PoolError::BadSuperblock { path, why })
}
