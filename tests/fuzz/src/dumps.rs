//! A dump file to load, built from the fuzzer's bytes.

use crate::Scratch;
use daxkv::Store;
use daxkv_server::dump::{MAGIC, dump as write_dump, load};
use std::sync::OnceLock;

/// The dump file the bytes describe. The first byte: bit 0 picks format
/// version 1 (else 2), bit 1 takes the rest as it is after the header;
/// otherwise the rest is frames, each a 2-byte length and that many payload
/// bytes, written with their length and a valid checksum (so that the
/// fuzzer reaches the payload's decoding).
fn file(data: &[u8]) -> Vec<u8> {
    let Some((&how, rest)) = data.split_first() else { return Vec::new() };
    let mut f = MAGIC.to_vec();
    f.extend_from_slice(&(if how & 1 != 0 { 1u32 } else { 2 }).to_le_bytes());
    if how & 2 != 0 {
        f.extend_from_slice(rest);
        return f;
    }
    let mut rest = rest;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_le_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let payload = &rest[2..2 + len];
        f.extend_from_slice(&(len as u32).to_le_bytes());
        f.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
        f.extend_from_slice(payload);
        rest = &rest[2 + len..];
    }
    f
}

/// Every pair of the store with its expiry, in key order.
type Contents = Vec<(Vec<u8>, Vec<u8>, Option<u64>)>;

fn contents(s: &Store) -> Contents {
    let mut it = s.iter();
    let mut all = Vec::new();
    while let Some((k, v, at)) = it.next_with_expiry() {
        all.push((k.to_vec(), v.to_vec(), at));
    }
    all
}

/// Load the dump the bytes describe (see [`file`]) into an empty store: it
/// loads or is refused with an error, never a panic; the store stays
/// sound; and what a load accepted dumps and loads again to the same
/// contents.
pub fn dump(data: &[u8]) {
    static WORLD: OnceLock<Scratch> = OnceLock::new();
    let s = &WORLD.get_or_init(|| Scratch::new("fuzz-dump")).store;
    s.clear().expect("empty the store");
    let loaded = load(s, &mut &file(data)[..]);
    let report = s.check().expect("check the store");
    assert!(report.is_ok(), "the store is damaged after a load ({loaded:?}): {:?}", report.problems);
    if loaded.is_err() {
        return;
    }
    let before = contents(s);
    let mut again = Vec::new();
    let n = write_dump(s, &mut again).expect("dump what was loaded");
    assert_eq!(n, before.len() as u64, "the dump's count");
    s.clear().expect("empty the store");
    let m = load(s, &mut &again[..]).expect("load a dump just written");
    assert_eq!(m, n, "pairs loaded from a dump just written");
    assert!(contents(s) == before, "a dump and load changed the contents");
}
