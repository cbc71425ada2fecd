//! The portable dump format of `daxkv dump` / `daxkv load`.
//!
//! ```text
//! "DAXKVDMP"  u32 LE format version (2; 1 is read too)
//! frames:     u32 LE payload length | u32 LE crc32c(payload) | payload
//! ```
//!
//! Each payload is a bincode-encoded (standard config) [`Frame`]: a batch of
//! up to [`BATCH`] pairs with their expiries (version 1 dumps have batches
//! without), and last an `End` frame with the number of pairs,
//! so a truncated or damaged file is refused rather than half loaded
//! unnoticed (a load commits batch by batch: a refused file can leave the
//! batches before the damage in the store, and says so).

use daxkv::Store;
use std::io::{self, Read, Write};

/// Magic at the start of a dump.
pub const MAGIC: &[u8; 8] = b"DAXKVDMP";
/// Format version written (2 added expiries).
pub const VERSION: u32 = 2;
/// Pairs per frame.
pub const BATCH: usize = 512;
/// Largest frame accepted (a batch of the largest values would not fit one
/// frame, so large values go out in frames of their own).
const MAX_FRAME: usize = 1 << 30;

/// One unit of a dump.
#[derive(bincode::Encode, bincode::Decode, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Key-value pairs, in key order (version 1).
    Pairs(Vec<(Vec<u8>, Vec<u8>)>),
    /// The end: how many pairs came before.
    End(u64),
    /// Key-value pairs with their expiries (milliseconds since the Unix
    /// epoch, `None`: never), in key order (version 2).
    Entries(Vec<Entry>),
}

/// A key, its value and its expiry.
pub type Entry = (Vec<u8>, Vec<u8>, Option<u64>);

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn write_frame(w: &mut (impl Write + ?Sized), f: &Frame) -> io::Result<()> {
    let payload = bincode::encode_to_vec(f, bincode::config::standard()).map_err(io::Error::other)?;
    write_payload(w, &payload)
}

/// A frame's length, checksum and payload.
fn write_payload(w: &mut (impl Write + ?Sized), payload: &[u8]) -> io::Result<()> {
    let len = u32::try_from(payload.len()).map_err(|_| bad("frame too large"))?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(&crc32c::crc32c(payload).to_le_bytes())?;
    w.write_all(payload)
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
    // Read as the bytes come: a damaged length must not make room for a
    // gigabyte that is not there.
    let mut payload = Vec::new();
    r.take(len as u64).read_to_end(&mut payload)?;
    if payload.len() != len {
        return Err(bad("truncated dump"));
    }
    if crc32c::crc32c(&payload) != crc {
        return Err(bad("checksum mismatch: damaged dump"));
    }
    // The checksum guards against damage, not against a file made to fail:
    // the limit bounds what the lengths inside a frame may claim (bincode
    // makes room for a vector before it reads it).
    let config = bincode::config::standard().with_limit::<MAX_FRAME>();
    let (f, used) = bincode::decode_from_slice(&payload, config).map_err(|e| bad(format!("undecodable frame: {e}")))?;
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
    pairs: Vec<Entry>,
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

    /// Add one pair, which expires at `expires`.
    pub fn push(&mut self, k: impl Into<Vec<u8>>, v: impl Into<Vec<u8>>, expires: Option<u64>) -> io::Result<()> {
        let (k, v) = (k.into(), v.into());
        self.bytes += k.len() + v.len();
        self.pairs.push((k, v, expires));
        self.n += 1;
        if self.pairs.len() >= BATCH || self.bytes >= 64 << 20 {
            write_frame(self.w, &Frame::Entries(std::mem::take(&mut self.pairs)))?;
            self.bytes = 0;
        }
        Ok(())
    }

    /// Write what is left and the end frame; returns how many pairs.
    pub fn finish(self) -> io::Result<u64> {
        if !self.pairs.is_empty() {
            write_frame(self.w, &Frame::Entries(self.pairs))?;
        }
        write_frame(self.w, &Frame::End(self.n))?;
        self.w.flush()?;
        Ok(self.n)
    }
}

/// Write every pair of `store` (expired keys left out) to `w`; returns
/// how many.
pub fn dump(store: &Store, w: &mut impl Write) -> io::Result<u64> {
    let mut out = Writer::new(w)?;
    let mut it = store.iter();
    while let Some((k, v, at)) = it.next_with_expiry() {
        out.push(k, v, at)?;
    }
    out.finish()
}

/// Commit one frame's entries with one batch; returns how many there were.
fn store_entries(store: &Store, entries: impl Iterator<Item = Entry>) -> io::Result<u64> {
    let now = crate::cmd::generic::now_ms() as u64;
    let mut batch = crate::kv::Batch::default();
    let mut n = 0;
    for (k, v, at) in entries {
        n += 1;
        if at.is_none_or(|at| at > now) {
            batch.push_with_expiry(&k, Some(&v), at);
        }
    }
    batch.commit(store).map_err(io::Error::other)?;
    Ok(n)
}

/// Put every pair of the dump `r` into `store`, with its expiry; returns
/// how many pairs the dump holds (a pair that has expired by now is read
/// but not stored).
pub fn load(store: &Store, r: &mut impl Read) -> io::Result<u64> {
    let mut head = [0u8; 12];
    r.read_exact(&mut head).map_err(|_| bad("not a daxkv dump (too short)"))?;
    if &head[..8] != MAGIC {
        return Err(bad("not a daxkv dump (bad magic)"));
    }
    let version = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
    if !(1..=VERSION).contains(&version) {
        return Err(bad(format!("dump format version {version}, this build reads 1 to {VERSION}")));
    }
    let mut n = 0u64;
    loop {
        match read_frame(r).map_err(|e| bad(format!("{e} (after {n} pairs loaded)")))? {
            Frame::Pairs(pairs) if version == 1 => {
                n += store_entries(store, pairs.into_iter().map(|(k, v)| (k, v, None)))?;
            }
            Frame::Entries(entries) if version >= 2 => n += store_entries(store, entries.into_iter())?,
            Frame::Pairs(_) | Frame::Entries(_) => {
                return Err(bad(format!("a frame of another format version (after {n} pairs loaded)")));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn dump_of(version: u32, frames: &[Frame]) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&version.to_le_bytes());
        for f in frames {
            write_frame(&mut b, f).unwrap();
        }
        b
    }

    fn store(tag: &str) -> (Store, std::path::PathBuf) {
        let p = std::path::PathBuf::from(format!("/dev/shm/daxkv-dump-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_file(&p);
        let s = Store::open(&p, &daxkv::Options::new().pool_size(4 << 20).create_if_missing(true)).unwrap();
        (s, p)
    }

    #[test]
    fn version_1_dumps_load_and_frames_match_their_version() {
        let (s, p) = store("v1");
        let v1 = dump_of(1, &[Frame::Pairs(vec![(b"a".to_vec(), b"1".to_vec())]), Frame::End(1)]);
        assert_eq!(load(&s, &mut &v1[..]).unwrap(), 1);
        assert_eq!(s.get(b"a").unwrap().as_deref(), Some(&b"1"[..]));
        // Each version has its own frame of pairs.
        let mixed = dump_of(2, &[Frame::Pairs(vec![(b"b".to_vec(), b"2".to_vec())]), Frame::End(1)]);
        assert!(load(&s, &mut &mixed[..]).is_err());
        let mixed = dump_of(1, &[Frame::Entries(vec![(b"b".to_vec(), b"2".to_vec(), None)]), Frame::End(1)]);
        assert!(load(&s, &mut &mixed[..]).is_err());
        assert_eq!(s.get(b"b").unwrap(), None);
        assert!(load(&s, &mut &dump_of(3, &[Frame::End(0)])[..]).is_err());
        drop(s);
        let _ = std::fs::remove_file(p);
    }

    #[test]
    fn lengths_inside_a_frame_are_bounded() {
        let (s, p) = store("claims");
        // A checksummed frame whose vector claims 2^61 entries (varint
        // 0xfd: a u64 follows), and one whose key claims 2^40 bytes.
        let frame = |payload: &[u8]| {
            let mut b = dump_of(VERSION, &[]);
            write_payload(&mut b, payload).unwrap();
            b
        };
        let mut entries = vec![2u8, 0xfd];
        entries.extend_from_slice(&(1u64 << 61).to_le_bytes());
        let mut key = vec![2u8, 1, 0xfd];
        key.extend_from_slice(&(1u64 << 40).to_le_bytes());
        for payload in [entries, key] {
            let e = load(&s, &mut &frame(&payload)[..]).unwrap_err();
            assert!(e.to_string().contains("undecodable frame"), "{e}");
        }
        // A frame length past the file's end is a truncation.
        let mut b = dump_of(VERSION, &[]);
        b.extend_from_slice(&(1u32 << 29).to_le_bytes());
        b.extend_from_slice(&[0; 4]);
        assert!(load(&s, &mut &b[..]).unwrap_err().to_string().contains("truncated dump"));
        assert_eq!(s.len(), 0);
        drop(s);
        let _ = std::fs::remove_file(p);
    }

    #[test]
    fn expiries_round_trip_and_expired_pairs_are_not_stored() {
        let (s, p) = store("v2");
        let later = 4_102_444_800_000;
        let d = dump_of(
            2,
            &[
                Frame::Entries(vec![
                    (b"a".to_vec(), b"1".to_vec(), None),
                    (b"b".to_vec(), b"2".to_vec(), Some(later)),
                    (b"c".to_vec(), b"3".to_vec(), Some(1)),
                ]),
                Frame::End(3),
            ],
        );
        assert_eq!(load(&s, &mut &d[..]).unwrap(), 3);
        assert_eq!(s.len(), 2);
        assert_eq!(s.expiry(b"b").unwrap(), Some(Some(later)));
        let mut out = Vec::new();
        assert_eq!(dump(&s, &mut out).unwrap(), 2);
        let want = dump_of(
            2,
            &[
                Frame::Entries(vec![(b"a".to_vec(), b"1".to_vec(), None), (b"b".to_vec(), b"2".to_vec(), Some(later))]),
                Frame::End(2),
            ],
        );
        assert_eq!(out, want);
        drop(s);
        let _ = std::fs::remove_file(p);
    }
}
