//! Persistent leaves and records.
//!
//! A leaf (592 bytes, all little-endian u64 words, offsets in the leaf):
//!
//! ```text
//!   0  bitmap: bit i set = slot i holds a live record   (the publish word)
//!   8  next leaf (region offset, 0 = last)
//!  16  fingerprints: 64 bytes, byte i = one-byte hash of slot i's key
//!  80  slots: 64 × u64, region offsets of records
//! ```
//!
//! Slots are unsorted. A record is `klen u32, vlen u32, crc u32, key,
//! value`, then, when bit 31 of the key-length word is set, its expiry
//! (u64, milliseconds since the Unix epoch). The checksum
//! ([`record_crc`]) lets recovery tell a record that reached media whole
//! from one whose insert was cut short: an insert into
//! a slot known to be durably zero publishes its bitmap bit in the same
//! drain as the record (see `Store::put_locked`), so after a crash a live
//! bit may name a zero slot or a torn record, and recovery drops it.

pub(crate) use crate::index::key_prefix_at;
use daxkv_alloc::Region;

pub(crate) const SLOTS: usize = 64;
pub(crate) const LEAF_BYTES: usize = 592;
const BITMAP: u64 = 0;
const NEXT: u64 = 8;
const FP: u64 = 16;
const SLOT: u64 = 80;
pub(crate) const REC_HEADER: u64 = 12;
/// Bit of a record's key-length word that says the record ends with an
/// expiry (keys are at most 16 KiB, so the bit is never part of a length).
const HAS_EXPIRY: u64 = 1 << 31;
/// Bytes of a record's expiry.
const EXPIRY_BYTES: u64 = 8;

/// A key's 32-bit hash: its top byte is the leaf fingerprint
/// ([`fingerprint_of`]), the rest places it in the point cache.
#[inline]
pub(crate) fn key_hash(key: &[u8]) -> u32 {
    crc32c::crc32c(key)
}

/// The leaf fingerprint (one byte) of a key with hash `h`.
#[inline]
pub(crate) fn fingerprint_of(h: u32) -> u8 {
    (h >> 24) as u8
}

/// One-byte hash of a key.
#[inline]
pub(crate) fn fingerprint(key: &[u8]) -> u8 {
    fingerprint_of(key_hash(key))
}

#[inline]
pub(crate) fn bitmap_off(leaf: u64) -> u64 {
    leaf + BITMAP
}

#[inline]
pub(crate) fn next_off(leaf: u64) -> u64 {
    leaf + NEXT
}

#[inline]
pub(crate) fn bitmap(r: &Region, leaf: u64) -> u64 {
    r.load_u64(leaf + BITMAP)
}

#[inline]
pub(crate) fn next(r: &Region, leaf: u64) -> u64 {
    r.load_u64(leaf + NEXT)
}

/// Flag in a slot word (records are 16-byte aligned, so bit 0 is free):
/// a one-drain insert published the record, so after a crash it may be
/// torn and recovery checks its checksum. Writing another slot of the same
/// cache line clears it (by then the record is durable), so recovery has
/// few records to check.
pub(crate) const UNVERIFIED: u64 = 1;

/// Slot `i`'s record offset.
#[inline]
pub(crate) fn slot(r: &Region, leaf: u64, i: usize) -> u64 {
    r.load_u64(slot_off(leaf, i)) & !UNVERIFIED
}

/// Slot `i`'s word as stored: the offset and the [`UNVERIFIED`] flag.
#[inline]
pub(crate) fn slot_word(r: &Region, leaf: u64, i: usize) -> u64 {
    r.load_u64(slot_off(leaf, i))
}

/// Start the cache misses of a whole leaf at once: a lookup reads the
/// bitmap and fingerprints, then a slot, and would otherwise wait for each.
#[inline]
pub(crate) fn prefetch(r: &Region, leaf: u64) {
    r.prefetch_range(leaf, LEAF_BYTES as u64);
}

/// Start the cache misses of a leaf's bitmap and fingerprints only.
#[inline]
pub(crate) fn prefetch_header(r: &Region, leaf: u64) {
    r.prefetch_range(leaf, SLOT);
}

/// Region offset of slot `i`'s word.
#[inline]
pub(crate) fn slot_off(leaf: u64, i: usize) -> u64 {
    leaf + SLOT + 8 * i as u64
}

/// Start the cache misses of a record's first two lines (header, key and,
/// for small records, the value).
#[inline]
pub(crate) fn prefetch_record(r: &Region, rec: u64) {
    r.prefetch_range(rec, 128);
}

/// Start the cache misses of what recovery reads of the record in slot
/// word `word`: the header and key, or the whole record (to its first two
/// lines) when its checksum must be checked. Fewer lines in flight let
/// more records' misses overlap.
#[inline]
pub(crate) fn prefetch_for_recovery(r: &Region, word: u64) {
    let len = if word & UNVERIFIED != 0 { 128 } else { REC_HEADER + 20 };
    r.prefetch_range(word & !UNVERIFIED, len);
}

/// The eight fingerprint words.
#[inline]
pub(crate) fn fingerprints(r: &Region, leaf: u64) -> [u8; SLOTS] {
    let mut out = [0u8; SLOTS];
    for w in 0..8 {
        out[w * 8..w * 8 + 8].copy_from_slice(&r.load_u64(leaf + FP + 8 * w as u64).to_le_bytes());
    }
    out
}

/// Slots whose fingerprint is `fp`, as a bitmap (live or not: the caller
/// masks with the leaf's bitmap). Eight words compared a byte at a time
/// without a branch: a byte of `w ^ fp…` is zero exactly where it matches.
#[inline]
pub(crate) fn fingerprint_matches(r: &Region, leaf: u64, fp: u8) -> u64 {
    const LO7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    // Byte i's top bit moved to bit i of the top byte (no carries: every
    // product term lands on its own bit).
    const GATHER: u64 = 0x0102_0408_1020_4080;
    let needle = u64::from(fp) * 0x0101_0101_0101_0101;
    let mut out = 0u64;
    for w in 0..8u64 {
        let x = r.load_u64(leaf + FP + 8 * w) ^ needle;
        // Top bit of each byte set iff the byte is zero.
        let zero = !(((x & LO7).wrapping_add(LO7)) | x | LO7);
        out |= ((zero >> 7).wrapping_mul(GATHER) >> 56) << (8 * w);
    }
    out
}

/// Point slot `i` at `rec` with fingerprint `fp` and flush both (no drain:
/// the caller drains before publishing the bitmap).
pub(crate) fn write_slot(r: &Region, leaf: u64, i: usize, rec: u64, fp: u8) {
    let s = leaf + SLOT + 8 * i as u64;
    r.store_u64(s, rec);
    r.flush(s, 8);
    set_fingerprint(r, leaf, i, fp);
}

/// Point slot `i` at `rec`, flagged [`UNVERIFIED`], with fingerprint
/// `fp`, and flush both (no drain): the one-drain insert. The other slots
/// of the same cache line lose their flag on the way (their inserts
/// drained before this one started; a one-drain commit writes one slot).
pub(crate) fn write_slot_unverified(r: &Region, leaf: u64, i: usize, rec: u64, fp: u8) {
    store_slot_unverified(r, leaf, i, rec);
    r.flush(slot_off(leaf, i), 8);
    set_fingerprint(r, leaf, i, fp);
}

/// The one-drain insert of one key into a locked leaf: slot `i` (free, and
/// zero on media) points at `rec`, flagged [`UNVERIFIED`], with
/// fingerprint `fp`, and the bitmap becomes `bits`; no drain.
///
/// Every store comes before any flush. A store into a line whose
/// write-back is in flight waits for it (and for the line to come back
/// from memory, where the write-back evicts it, as here), and while it
/// waits, every store behind it waits in the store buffer too; the
/// fingerprint and the bitmap usually share a line. Program order (slot,
/// fingerprint, bitmap) is the order readers see them in.
pub(crate) fn insert_unverified(r: &Region, leaf: u64, i: usize, rec: u64, fp: u8, bits: u64) {
    store_slot_unverified(r, leaf, i, rec);
    let w = store_fingerprint(r, leaf, i, fp);
    r.store_u64(leaf + BITMAP, bits);
    r.flush(slot_off(leaf, i), 8);
    if w & !63 != (leaf + BITMAP) & !63 {
        r.flush(w, 8);
    }
    r.flush(leaf + BITMAP, 8);
}

/// Store slot `i`'s word as `rec | UNVERIFIED`, clearing the flag of the
/// other slots in its cache line; no flush.
fn store_slot_unverified(r: &Region, leaf: u64, i: usize, rec: u64) {
    let s = slot_off(leaf, i);
    let (start, line) = (leaf + SLOT, s & !63);
    let first = (line.max(start) - start) / 8;
    let end = ((line + 64 - start) / 8).min(SLOTS as u64);
    for k in first..end {
        let o = start + 8 * k;
        let w = r.load_u64(o);
        if o != s && w & UNVERIFIED != 0 {
            r.store_u64(o, w & !UNVERIFIED);
        }
    }
    r.store_u64(s, rec | UNVERIFIED);
}

/// Zero the slots in `mask` that are not zero already and flush the lines
/// written (no drain). Used on free slots only: their bitmap bits are
/// clear, so no reader or recovery follows them.
pub(crate) fn zero_slots(r: &Region, leaf: u64, mask: u64) {
    // The last slot written, flushed once its line is done.
    let mut open: Option<u64> = None;
    for i in live(mask) {
        let s = slot_off(leaf, i);
        if r.load_u64(s) == 0 {
            continue;
        }
        r.store_u64(s, 0);
        if let Some(o) = open.filter(|&o| o & !63 != s & !63) {
            r.flush(o, 8);
        }
        open = Some(s);
    }
    if let Some(o) = open {
        r.flush(o, 8);
    }
}

/// Set slot `i`'s fingerprint byte and flush it (no drain).
pub(crate) fn set_fingerprint(r: &Region, leaf: u64, i: usize, fp: u8) {
    let w = store_fingerprint(r, leaf, i, fp);
    r.flush(w, 8);
}

/// Store slot `i`'s fingerprint byte (no flush); returns its word's offset.
fn store_fingerprint(r: &Region, leaf: u64, i: usize, fp: u8) -> u64 {
    let w = leaf + FP + 8 * (i as u64 / 8);
    let mut bytes = r.load_u64(w).to_le_bytes();
    bytes[i % 8] = fp;
    r.store_u64(w, u64::from_le_bytes(bytes));
    w
}

/// Publish a new bitmap (one aligned 8-byte store) and flush it.
pub(crate) fn publish_bitmap(r: &Region, leaf: u64, bits: u64) {
    r.store_u64(leaf + BITMAP, bits);
    r.flush(leaf + BITMAP, 8);
}

/// Publish a new next pointer and flush it.
pub(crate) fn publish_next(r: &Region, leaf: u64, next: u64) {
    r.store_u64(leaf + NEXT, next);
    r.flush(leaf + NEXT, 8);
}

/// Write a whole new leaf (not yet reachable) with `entries` in slots
/// 0.. and the bitmap covering them; durable after the caller's drain.
pub(crate) fn init(r: &Region, leaf: u64, entries: &[(u64, u8)], next: u64) {
    let mut b = vec![0u8; LEAF_BYTES];
    let bits = if entries.len() == SLOTS { u64::MAX } else { (1u64 << entries.len()) - 1 };
    b[0..8].copy_from_slice(&bits.to_le_bytes());
    b[8..16].copy_from_slice(&next.to_le_bytes());
    for (i, &(rec, fp)) in entries.iter().enumerate() {
        b[FP as usize + i] = fp;
        let s = SLOT as usize + 8 * i;
        b[s..s + 8].copy_from_slice(&rec.to_le_bytes());
    }
    r.copy_nodrain(leaf, &b);
}

/// A record's checksum: CRC-32C over the key, the value, the expiry (if
/// any) and the two length words (as stored), continuing from the key's
/// hash `h` (which is the CRC-32C of the key: [`key_hash`]), so a put
/// hashes its key once.
#[inline]
pub(crate) fn record_crc(h: u32, klen: usize, value: &[u8], expires: Option<u64>) -> u32 {
    let mut tail = [0u8; 16];
    let mut n = 0;
    if let Some(at) = expires {
        tail[0..8].copy_from_slice(&at.to_le_bytes());
        n = 8;
    }
    tail[n..n + 8].copy_from_slice(&len_word(klen, value.len(), expires).to_le_bytes());
    crc32c::crc32c_append(crc32c::crc32c_append(h, value), &tail[..n + 8])
}

/// A record's first word: the key length (with [`HAS_EXPIRY`]) and the
/// value length.
#[inline]
fn len_word(klen: usize, vlen: usize, expires: Option<u64>) -> u64 {
    let flag = if expires.is_some() { HAS_EXPIRY } else { 0 };
    (klen as u64 | flag) | (vlen as u64) << 32
}

/// Whether the record at `rec` is whole: its lengths are in bounds and its
/// checksum matches its bytes. Returns the key's hash as well (recovery
/// checks the slot's fingerprint with it).
pub(crate) fn record_intact(r: &Region, rec: u64) -> Option<(usize, usize, u32)> {
    let (k, v) = record_lens(r, rec)?;
    let h = key_hash(r.bytes(rec + REC_HEADER, k));
    let stored = u32::from_le_bytes(r.bytes(rec + 8, 4).try_into().ok()?);
    let value = r.bytes(rec + REC_HEADER + k as u64, v);
    (record_crc(h, k, value, record_expiry(r, rec)) == stored).then_some((k, v, h))
}

/// Record size for a key and value, with or without an expiry.
pub(crate) fn record_len(key: &[u8], value: &[u8], expires: Option<u64>) -> usize {
    REC_HEADER as usize + key.len() + value.len() + if expires.is_some() { EXPIRY_BYTES as usize } else { 0 }
}

/// Write a record at `rec` (allocated with `record_len`) for `key` (hash
/// `h`, from [`key_hash`]) that expires at `expires` (`None`: never);
/// durable after the caller's drain.
pub(crate) fn write_record(r: &Region, rec: u64, key: &[u8], h: u32, value: &[u8], expires: Option<u64>) {
    let crc = record_crc(h, key.len(), value, expires).to_le_bytes();
    let word = len_word(key.len(), value.len(), expires).to_le_bytes();
    let tail = expires.map(u64::to_le_bytes);
    let tail: &[u8] = tail.as_ref().map_or(&[], |t| t);
    // Small records (most) are assembled on the stack: no allocation per put.
    const SMALL: usize = 256;
    let len = record_len(key, value, expires);
    if len <= SMALL {
        let mut b = [0u8; SMALL];
        b[0..8].copy_from_slice(&word);
        b[8..12].copy_from_slice(&crc);
        let k = REC_HEADER as usize;
        b[k..k + key.len()].copy_from_slice(key);
        b[k + key.len()..k + key.len() + value.len()].copy_from_slice(value);
        b[len - tail.len()..len].copy_from_slice(tail);
        let lines = len.next_multiple_of(64);
        if rec.is_multiple_of(64) && lines as u64 <= daxkv_alloc::block_size_for(len) {
            r.copy_lines_nodrain(rec, &b[..lines]);
        } else {
            r.copy_nodrain(rec, &b[..len]);
        }
        return;
    }
    let mut head = Vec::with_capacity(REC_HEADER as usize + key.len() + value.len().min(4096) + tail.len());
    head.extend_from_slice(&word);
    head.extend_from_slice(&crc);
    head.extend_from_slice(key);
    if value.len() <= 4096 {
        head.extend_from_slice(value);
        head.extend_from_slice(tail);
        r.copy_nodrain(rec, &head);
    } else {
        r.copy_nodrain(rec, &head);
        r.copy_nodrain(rec + head.len() as u64, value);
        if !tail.is_empty() {
            r.copy_nodrain(rec + (len - tail.len()) as u64, tail);
        }
    }
}

/// Key and value lengths of the record at `rec`, bounds-checked (the
/// whole record, expiry included, lies inside the region).
#[inline]
pub(crate) fn record_lens(r: &Region, rec: u64) -> Option<(usize, usize)> {
    record_shape(r, rec).map(|(k, v, _)| (k, v))
}

/// Key length, value length and whether an expiry follows, bounds-checked.
#[inline]
fn record_shape(r: &Region, rec: u64) -> Option<(usize, usize, bool)> {
    r.check(rec, REC_HEADER).ok()?;
    let h = r.read_u64(rec);
    let expires = h & HAS_EXPIRY != 0;
    let (k, v) = ((h & 0xffff_ffff & !HAS_EXPIRY) as usize, (h >> 32) as usize);
    // An optimistic reader can meet a record being written: never believe
    // lengths beyond the limits (or the region).
    if k > crate::MAX_KEY || v > crate::MAX_VALUE {
        return None;
    }
    let tail = if expires { EXPIRY_BYTES } else { 0 };
    r.check(rec, REC_HEADER + k as u64 + v as u64 + tail).ok()?;
    Some((k, v, expires))
}

/// The record's size in bytes, expiry included (`None` as for
/// [`record_lens`]).
#[inline]
pub(crate) fn record_size(r: &Region, rec: u64) -> Option<u64> {
    record_shape(r, rec).map(|(k, v, e)| REC_HEADER + (k + v) as u64 + if e { EXPIRY_BYTES } else { 0 })
}

/// Whether the record carries an expiry (reads only its header word).
#[inline]
pub(crate) fn record_expires(r: &Region, rec: u64) -> bool {
    record_shape(r, rec).is_some_and(|(_, _, e)| e)
}

/// When the record expires, in milliseconds since the Unix epoch (`None`:
/// never, or lengths that do not fit as for [`record_lens`]).
#[inline]
pub(crate) fn record_expiry(r: &Region, rec: u64) -> Option<u64> {
    match record_shape(r, rec)? {
        (k, v, true) => Some(expiry_at(r, rec + REC_HEADER + (k + v) as u64)),
        _ => None,
    }
}

/// The expiry stored at `at`.
#[inline]
fn expiry_at(r: &Region, at: u64) -> u64 {
    u64::from_le_bytes(r.bytes(at, EXPIRY_BYTES as usize).try_into().expect("8 bytes"))
}

/// The record's key, value and expiry, its header read once (an empty key
/// and value and no expiry for lengths that do not fit, as for
/// [`record_key`]).
#[inline]
pub(crate) fn record_parts(r: &Region, rec: u64) -> (&[u8], &[u8], Option<u64>) {
    let Some((k, v, expires)) = record_shape(r, rec) else { return (&[], &[], None) };
    let key = r.bytes(rec + REC_HEADER, k);
    let value = r.bytes(rec + REC_HEADER + k as u64, v);
    let at = expires.then(|| expiry_at(r, rec + REC_HEADER + (k + v) as u64));
    (key, value, at)
}

/// Whether the record is alive: it has no expiry, or one still ahead of
/// the clock. The clock is read only for a record that has an expiry.
#[inline]
pub(crate) fn record_alive(r: &Region, rec: u64) -> bool {
    crate::store::unexpired(record_expiry(r, rec))
}

/// The record's key (borrowed from the pool). Empty for a record whose
/// lengths do not fit the region (an optimistic reader meeting a record
/// being written, or a damaged slot): nothing outside the region is read.
#[inline]
pub(crate) fn record_key(r: &Region, rec: u64) -> &[u8] {
    match record_lens(r, rec) {
        Some((k, _)) => r.bytes(rec + REC_HEADER, k),
        None => &[],
    }
}

/// The record's value (borrowed from the pool); empty as for
/// [`record_key`].
#[inline]
pub(crate) fn record_value(r: &Region, rec: u64) -> &[u8] {
    match record_lens(r, rec) {
        Some((k, v)) => r.bytes(rec + REC_HEADER + k as u64, v),
        None => &[],
    }
}

/// How many leading bytes all of `keys` share. Sorting them on
/// `key_prefix_at(k, common_prefix(..))` instead of their first 8 bytes
/// keeps ties rare when keys share a long prefix (`user:000123…`), where
/// every comparison would otherwise fall through to a whole-key compare.
pub(crate) fn common_prefix<'k>(mut keys: impl Iterator<Item = &'k [u8]>) -> usize {
    let Some(first) = keys.next() else { return 0 };
    let mut n = first.len();
    for k in keys {
        let m = n.min(k.len());
        n = first[..m].iter().zip(&k[..m]).position(|(a, b)| a != b).unwrap_or(m);
        if n == 0 {
            break;
        }
    }
    n
}

/// A leaf's `(_, key, record)` entries into key order: each gets the 8
/// bytes of its key after the keys' common prefix as an integer (in the
/// first field), compared first, the whole key only to break ties.
/// Returns the common prefix's length.
pub(crate) fn key_order(items: &mut [(u64, &[u8], u64)]) -> usize {
    let cp = common_prefix(items.iter().map(|g| g.1));
    for g in items.iter_mut() {
        g.0 = key_prefix_at(g.1, cp);
    }
    items.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)));
    cp
}

/// Live slots of a bitmap, in slot order.
#[inline]
pub(crate) fn live(bits: u64) -> impl Iterator<Item = usize> {
    let mut b = bits;
    std::iter::from_fn(move || {
        if b == 0 {
            None
        } else {
            let i = b.trailing_zeros() as usize;
            b &= b - 1;
            Some(i)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use daxkv_alloc::PersistOptions;

    /// xorshift64: a seeded stream for the tests below.
    fn next(s: &mut u64) -> u64 {
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        *s
    }

    #[test]
    fn sorting_on_the_prefix_after_the_common_one_orders_keys() {
        let mut s = 7u64;
        for round in 0..300 {
            let stem = b"user:000000:".repeat((round % 3) as usize);
            let keys: Vec<Vec<u8>> = (0..40)
                .map(|_| {
                    let mut k = stem.clone();
                    let x = next(&mut s);
                    // Tails of 0..=12 bytes over a small alphabet with zero
                    // bytes: ties on 8 bytes, proper prefixes.
                    k.extend((0..(x % 13)).map(|i| [0u8, 1, b'a'][((x >> (2 * i)) % 3) as usize]));
                    k
                })
                .collect();
            let cp = common_prefix(keys.iter().map(|k| k.as_slice()));
            assert!(keys.iter().all(|k| k.len() >= cp && k[..cp] == keys[0][..cp]));
            let mut got: Vec<&Vec<u8>> = keys.iter().collect();
            got.sort_by(|a, b| key_prefix_at(a, cp).cmp(&key_prefix_at(b, cp)).then_with(|| a.cmp(b)));
            let mut want: Vec<&Vec<u8>> = keys.iter().collect();
            want.sort();
            assert_eq!(got, want, "round {round}");
        }
    }

    #[test]
    fn fingerprint_matches_every_byte_value_and_position() {
        let r = Region::anonymous(4096, &PersistOptions::default()).expect("region");
        let leaf = 64;
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        for round in 0..200 {
            let mut fps = [0u8; SLOTS];
            for f in fps.iter_mut() {
                next(&mut s);
                // Few distinct values, so that matches are many, and the
                // extremes 0x00, 0x7f, 0x80 and 0xff among them.
                *f = [0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff, (s >> 8) as u8][(s % 7) as usize];
            }
            for (w, chunk) in fps.chunks(8).enumerate() {
                r.store_u64(leaf + FP + 8 * w as u64, u64::from_le_bytes(chunk.try_into().unwrap()));
            }
            for fp in [0x00u8, 0x01, 0x7f, 0x80, 0xfe, 0xff, round as u8] {
                let want = fps.iter().enumerate().fold(0u64, |m, (i, &f)| m | (u64::from(f == fp) << i));
                assert_eq!(fingerprint_matches(&r, leaf, fp), want, "fp {fp:#x} in {fps:?}");
            }
        }
    }
}
