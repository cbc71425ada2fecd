//! Damaged pools, shared by the random-damage test (`tests/store_corrupt.rs`)
//! and the pool fuzz target (`tests/fuzz`): a base image with a known
//! history, where damage is worth making, and the check that a damaged
//! pool is refused or used without a panic and without serving a value
//! that was never written.

use daxkv::{Options, PoolError, SalvageReport, Store};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

/// Size of a base image's pool.
pub const POOL: u64 = 4 << 20;
/// Where the two superblock copies are.
pub const SB_COPIES: [usize; 2] = [0, 4096];

/// What was written: the final contents, and every (key, value) ever put.
pub struct History {
    /// The final contents.
    pub model: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Every pair ever put.
    pub ever: HashSet<(Vec<u8>, Vec<u8>)>,
}

/// A value for `key`, usually small, sometimes a page or more; its bytes
/// derive from the key, so that one key's value is never another's.
pub fn value(rng: &mut StdRng, key: &[u8]) -> Vec<u8> {
    let len = match rng.gen_range(0..100) {
        0 => rng.gen_range(4000..9000),
        1 => 70_000,
        _ => rng.gen_range(0..200),
    };
    // Self-describing bytes: a value of one key is never another's.
    let seed = key.iter().fold(rng.r#gen::<u8>(), |a, &b| a.wrapping_mul(31).wrapping_add(b));
    (0..len).map(|i| seed.wrapping_add(i as u8)).collect()
}

/// A pool with splits, replacements, deletes, a transaction and a few
/// multi-page values; closed cleanly or abandoned as by a crash.
pub fn base_image(path: &Path, crashed: bool) -> History {
    let mut rng = StdRng::seed_from_u64(7);
    let mut h = History { model: BTreeMap::new(), ever: HashSet::new() };
    let s = Store::open(path, &Options::new().pool_size(POOL).create_if_missing(true)).unwrap();
    let put = |s: &Store, h: &mut History, k: Vec<u8>, v: Vec<u8>| {
        s.put(&k, &v).unwrap();
        h.ever.insert((k.clone(), v.clone()));
        h.model.insert(k, v);
    };
    for i in 0..1500u32 {
        let k = format!("key-{:08x}", i.wrapping_mul(2_654_435_761)).into_bytes();
        let v = value(&mut rng, &k);
        put(&s, &mut h, k, v);
    }
    let keys: Vec<Vec<u8>> = h.model.keys().cloned().collect();
    for k in keys.iter().step_by(7) {
        let v = value(&mut rng, k);
        put(&s, &mut h, k.clone(), v);
    }
    for k in keys.iter().skip(3).step_by(5) {
        assert!(s.delete(k).unwrap());
        h.model.remove(k);
    }
    let tx: Vec<(Vec<u8>, Vec<u8>)> = (0..12u32)
        .map(|i| {
            let k = format!("tx-{i}").into_bytes();
            let v = value(&mut rng, &k);
            (k, v)
        })
        .collect();
    s.transaction(|t| {
        for (k, v) in &tx {
            t.put(k, v)?;
        }
        Ok(())
    })
    .unwrap();
    for (k, v) in tx {
        h.ever.insert((k.clone(), v.clone()));
        h.model.insert(k, v);
    }
    if crashed {
        s.abandon();
    } else {
        s.close().unwrap();
    }
    h
}

/// The little-endian word at `at`.
pub fn word(img: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(img[at..at + 8].try_into().unwrap())
}

/// Overwrite the word at `at`.
pub fn set_word(img: &mut [u8], at: usize, v: u64) {
    img[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Recompute the checksum of the superblock copy at `sb`.
pub fn reseal(img: &mut [u8], sb: usize) {
    let crc = crc32c::crc32c(&img[sb..sb + 252]);
    img[sb + 252..sb + 256].copy_from_slice(&crc.to_le_bytes());
}

/// Key-value pairs in the order met.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Salvage the pool: it must not write to it, and hands over only pairs
/// that were written.
pub fn salvaged(path: &Path, h: &History) -> (Pairs, Result<SalvageReport, String>) {
    let before = std::fs::read(path).unwrap();
    let mut pairs = Vec::new();
    let rep = daxkv::salvage(path, |k, v, _| {
        assert!(h.ever.contains(&(k.to_vec(), v.to_vec())), "salvage handed over {k:?} with a value never written");
        pairs.push((k.to_vec(), v.to_vec()));
        Ok(())
    });
    assert!(std::fs::read(path).unwrap() == before, "salvage wrote to the pool");
    (pairs, rep.map_err(|e| e.to_string()))
}

/// Salvage, then open the damaged pool and use it in every way; panics on
/// a wrong answer (a panic inside the store is caught by the caller).
pub fn exercise(path: &Path, h: &History, seed: u64) -> String {
    let (rescued, rescue) = salvaged(path, h);
    let before = std::fs::read(path).unwrap();
    let s = match Store::open(path, &Options::new()) {
        Err(e) => {
            if matches!(
                e,
                PoolError::NotAPool { .. }
                    | PoolError::WrongVersion { .. }
                    | PoolError::Truncated { .. }
                    | PoolError::BadSuperblock { .. }
            ) {
                assert!(std::fs::read(path).unwrap() == before, "a refused open wrote to the file: {e}");
            }
            return format!("refused: {e}; salvaged {} pairs: {rescue:?}", rescued.len());
        }
        Ok(s) => s,
    };
    let sound = match s.check() {
        Ok(rep) => rep.is_ok(),
        Err(_) => false,
    };
    let served = |k: &[u8], v: &[u8]| {
        if sound {
            assert!(h.ever.contains(&(k.to_vec(), v.to_vec())), "check passed but {k:?} read a value never written");
        }
    };
    let mut n = 0usize;
    let mut all = Vec::new();
    for kv in s.iter().take(4 * h.ever.len()).flatten() {
        served(&kv.0, &kv.1);
        all.push(kv);
        n += 1;
    }
    if sound {
        assert!(all == rescued, "check passed, but salvage handed over other pairs than the store holds: {rescue:?}");
    }
    for kv in s.range_rev::<&[u8]>(..).take(4 * h.ever.len()).flatten() {
        served(&kv.0, &kv.1);
    }
    for kv in s.prefix(b"tx-").flatten() {
        served(&kv.0, &kv.1);
    }
    for k in h.model.keys() {
        if let Ok(Some(v)) = s.get(k) {
            served(k, &v);
        }
        let _ = s.contains(k);
    }
    let _ = s.len();
    let _ = s.stats();
    // Writes into the damaged pool: errors are fine, panics are not.
    let mut rng = StdRng::seed_from_u64(seed);
    let mut acked = Vec::new();
    for i in 0..60u32 {
        let k = format!("new-{i:03}").into_bytes();
        let v = value(&mut rng, &k);
        if s.put(&k, &v).is_ok() {
            acked.push((k, v));
        }
    }
    for k in h.model.keys().step_by(9) {
        let _ = s.delete(k);
    }
    let _ = s.transaction(|t| {
        t.put(b"tx-0", b"again")?;
        t.delete(b"tx-1")?;
        t.get(b"tx-2")
    });
    let _ = s.compare_and_swap(b"new-000", Some(b"x"), Some(b"y"));
    let _ = s.check();
    let _ = s.close();
    match Store::open(path, &Options::new()) {
        Err(e) => format!("opened (sound: {sound}, {n} keys), reopen refused: {e}"),
        Ok(s) => {
            let again = s.check().map(|r| r.is_ok()).unwrap_or(false);
            if sound && again {
                for (k, v) in &acked {
                    assert_eq!(s.get(k).ok().flatten().as_ref(), Some(v), "an acknowledged put was lost");
                }
            }
            let held: Vec<_> = s.iter().take(4 * h.ever.len() + 100).flatten().collect();
            let _ = s.close();
            let grown = grow(path, (sound && again).then_some(held));
            format!("opened (sound: {sound}, {n} keys), reopened (sound: {again}), {grown}")
        }
    }
}

/// Grow the pool to twice its size: refused with an error, or, for a pool
/// that `check`ed sound (`held`: what it held), it holds the same and
/// stays sound.
fn grow(path: &Path, held: Option<Pairs>) -> String {
    if let Err(e) = Store::grow(path, 2 * POOL, &Options::new()) {
        assert!(held.is_none(), "growing a sound pool failed: {e}");
        return format!("grow refused: {e}");
    }
    let s = match Store::open(path, &Options::new()) {
        Ok(s) => s,
        Err(e) => {
            assert!(held.is_none(), "a sound pool does not open after a grow: {e}");
            return format!("grown, open refused: {e}");
        }
    };
    let sound = s.check().map(|r| r.is_ok()).unwrap_or(false);
    if let Some(held) = held {
        assert!(sound, "a sound pool is damaged after a grow");
        let now: Pairs = s.iter().flatten().collect();
        assert!(now == held, "a grow changed the pairs: {} before, {} after", held.len(), now.len());
    }
    let _ = s.close();
    format!("grown (sound: {sound})")
}

/// Where damage is worth making: every non-zero word (mostly record
/// bytes), and apart from those the words of the structures: superblocks,
/// the log's checkpoints and entries, the heap's header and descriptors,
/// every leaf (zero words too), each record's header, the saved index.
pub struct Targets {
    /// Every non-zero word.
    pub words: Vec<usize>,
    /// The lines holding them.
    pub lines: Vec<usize>,
    /// The structures' words.
    pub structure: Vec<usize>,
}

/// Where damage is worth making in `img`.
pub fn targets(img: &[u8]) -> Targets {
    let words: Vec<usize> = (0..img.len() / 8).map(|w| w * 8).filter(|&at| word(img, at) != 0).collect();
    let mut lines: Vec<usize> = words.iter().map(|&w| w & !63).collect();
    lines.dedup();
    let (heap_off, head) = (word(img, 56) as usize, word(img, 72) as usize);
    let (snap_off, snap_len) = (word(img, 96) as usize, word(img, 104) as usize);
    let mut structure: Vec<usize> = SB_COPIES.iter().flat_map(|&sb| (sb..sb + 256).step_by(8)).collect();
    let nonzero_in = |from: usize, to: usize| words.iter().copied().filter(move |&w| w >= from && w < to);
    structure.extend(nonzero_in(8192, heap_off + 64 * 1024));
    if snap_len > 0 && snap_off.saturating_add(snap_len) <= img.len() {
        structure.extend(nonzero_in(snap_off, snap_off + snap_len));
    }
    // The leaf chain: bitmap at 0, next at 8, fingerprints at 16, slots at
    // 80 (592 bytes a leaf); each live slot names a record.
    let mut leaf = head;
    let mut seen = HashSet::new();
    while leaf != 0 && leaf + 592 <= img.len() && seen.insert(leaf) {
        structure.extend((leaf..leaf + 592).step_by(8));
        let bits = word(img, leaf);
        for i in (0..64).filter(|i| bits & (1 << i) != 0) {
            let rec = (word(img, leaf + 80 + 8 * i) & !1) as usize;
            if rec + 16 <= img.len() {
                structure.extend([rec, rec + 8]);
            }
        }
        leaf = word(img, leaf + 8) as usize;
    }
    assert!(seen.len() > 10, "the base image has a chain of leaves");
    Targets { words, lines, structure }
}
