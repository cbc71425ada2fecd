//! The portable dump format of `daxkv dump` / `daxkv load`.
//!
//! ```text
//! "DAXKVDMP"  u32 LE format version (1)
//! frames:     u32 LE payload length | u32 LE crc32c(payload) | payload
//! ```
//!
//! Each payload is a bincode-encoded (standard config) [`Frame`]: a batch of
//! up to [`BATCH`] pairs, and last an `End` frame with the number of pairs,
//! so a truncated or damaged file is refused rather than half loaded
//! unnoticed (a load commits batch by batch: a refused file can leave the
//! batches before the damage in the store, and says so).

use daxkv::Store;
use std::io::{self, Read, Write};

/// Magic at the start of a dump.
pub const MAGIC: &[u8; 8] = b"DAXKVDMP";
/// Format version written.
pub const VERSION: u32 = 1;
/// Pairs per frame.
pub const BATCH: usize = 512;
/// Largest frame accepted (a batch of the largest values would not fit one
/// frame, so large values go out in frames of their own).
const MAX_FRAME: usize = 1 << 30;

/// One unit of a dump.
#[derive(bincode::Encode, bincode::Decode, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Key-value pairs, in key order.
    Pairs(Vec<(Vec<u8>, Vec<u8>)>),
    /// The end: how many pairs came before.
    End(u64),
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn write_frame(w: &mut (impl Write + ?Sized), f: &Frame) -> io::Result<()> {
    let payload = bincode::encode_to_vec(f, bincode::config::standard()).map_err(io::Error::other)?;
    let len = u32::try_from(payload.len()).map_err(|_| bad("frame too large"))?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(&crc32c::crc32c(&payload).to_le_bytes())?;
    w.write_all(&payload)
}

fn read_frame(r: &mut impl Read) -> io::Result<Frame> {
    let mut head = [0u8; 8];
    r.read_exact(&mut head)
        .map_err(|e| if e.kind() == io::ErrorKind::UnexpectedEof { bad("truncated dump") } else { e })?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if len > MAX_FRAME {
        return Err(bad(format!("frame of {len} bytes: damaged dump")));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).map_err(|_| bad("truncated dump"))?;
    if crc32c::crc32c(&payload) != crc {
        return Err(bad("checksum mismatch: damaged dump"));
    }
    let (f, used) = bincode::decode_from_slice(&payload, bincode::config::standard())
        .map_err(|e| bad(format!("undecodable frame: {e}")))?;
    if used != payload.len() {
        return Err(bad("trailing bytes in a frame"));
    }
    Ok(f)
}

/// Writes a dump pair by pair: the header when made, frames of
/// [`BATCH`] pairs (or 64 MiB) as they fill, the end frame at
/// [`Writer::finish`].
pub struct Writer<'w, W: Write + ?Sized> {
    w: &'w mut W,
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
    bytes: usize,
    n: u64,
}

impl<'w, W: Write + ?Sized> Writer<'w, W> {
    /// Start a dump on `w`.
    pub fn new(w: &'w mut W) -> io::Result<Self> {
        w.write_all(MAGIC)?;
        w.write_all(&VERSION.to_le_bytes())?;
        Ok(Writer { w, pairs: Vec::new(), bytes: 0, n: 0 })
    }

    /// Add one pair.
    pub fn push(&mut self, k: impl Into<Vec<u8>>, v: impl Into<Vec<u8>>) -> io::Result<()> {
        let (k, v) = (k.into(), v.into());
        self.bytes += k.len() + v.len();
        self.pairs.push((k, v));
        self.n += 1;
        if self.pairs.len() >= BATCH || self.bytes >= 64 << 20 {
            write_frame(self.w, &Frame::Pairs(std::mem::take(&mut self.pairs)))?;
            self.bytes = 0;
        }
        Ok(())
    }

    /// Write what is left and the end frame; returns how many pairs.
    pub fn finish(self) -> io::Result<u64> {
        if !self.pairs.is_empty() {
            write_frame(self.w, &Frame::Pairs(self.pairs))?;
        }
        write_frame(self.w, &Frame::End(self.n))?;
        self.w.flush()?;
        Ok(self.n)
    }
}

/// Write every pair of `store` to `w`; returns how many.
pub fn dump(store: &Store, w: &mut impl Write) -> io::Result<u64> {
    let mut out = Writer::new(w)?;
    for kv in store.iter() {
        let (k, v) = kv.map_err(io::Error::other)?;
        out.push(k, v)?;
    }
    out.finish()
}

/// Put every pair of the dump `r` into `store`; returns how many.
pub fn load(store: &Store, r: &mut impl Read) -> io::Result<u64> {
    let mut head = [0u8; 12];
    r.read_exact(&mut head).map_err(|_| bad("not a daxkv dump (too short)"))?;
    if &head[..8] != MAGIC {
        return Err(bad("not a daxkv dump (bad magic)"));
    }
    let version = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
    if version != VERSION {
        return Err(bad(format!("dump format version {version}, this build reads {VERSION}")));
    }
    let mut n = 0u64;
    loop {
        match read_frame(r).map_err(|e| bad(format!("{e} (after {n} pairs loaded)")))? {
            Frame::Pairs(pairs) => {
                let ops: Vec<(Vec<u8>, Option<Vec<u8>>)> = pairs.into_iter().map(|(k, v)| (k, Some(v))).collect();
                let mut batch = crate::kv::Batch::default();
                for (k, v) in &ops {
                    batch.push(k, v.as_deref());
                }
                batch.commit(store).map_err(io::Error::other)?;
                n += ops.len() as u64;
            }
            Frame::End(count) => {
                if count != n {
                    return Err(bad(format!("dump says {count} pairs, found {n}")));
                }
                return Ok(n);
            }
        }
    }
}
