//! Bad inputs to the store, each a typed error that leaves every committed
//! byte intact: foreign files, wrong magic, wrong version, truncated
//! pools, damaged superblocks, oversized and empty keys and values.

use daxkv::{Backend, Error, Options, Persistence, PoolError, Store};
use daxkv_tests::ShmDir;
use std::path::Path;

fn dir(name: &str) -> ShmDir {
    ShmDir::new(&format!("open-store-{name}"))
}

fn opts() -> Options {
    Options::new().pool_size(4 << 20).create_if_missing(true)
}

/// A closed pool with a few keys.
fn make_pool(p: &Path) {
    let s = Store::open(p, &opts()).unwrap();
    for i in 0..300u32 {
        s.put(format!("key{i}").as_bytes(), &i.to_le_bytes()).unwrap();
    }
    s.close().unwrap();
}

fn assert_pool_intact(p: &Path) {
    let s = Store::open(p, &Options::new()).unwrap();
    assert_eq!(s.len(), 300);
    for i in 0..300u32 {
        assert_eq!(s.get(format!("key{i}").as_bytes()).unwrap().unwrap(), i.to_le_bytes());
    }
    assert!(s.check().unwrap().is_ok());
}

/// Open must fail without writing a byte.
fn open_fails(p: &Path) -> PoolError {
    let before = std::fs::read(p).unwrap();
    let e = Store::open(p, &Options::new()).unwrap_err();
    assert_eq!(std::fs::read(p).unwrap(), before, "a failed open wrote to the file");
    e
}

fn patch(p: &Path, at: usize, bytes: &[u8]) {
    let mut b = std::fs::read(p).unwrap();
    b[at..at + bytes.len()].copy_from_slice(bytes);
    std::fs::write(p, b).unwrap();
}

fn reseal(p: &Path, sb: usize) {
    let mut b = std::fs::read(p).unwrap();
    let crc = crc32c::crc32c(&b[sb..sb + 252]);
    b[sb + 252..sb + 256].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(p, b).unwrap();
}

/// Mark both superblocks as format version `v`.
fn set_version(p: &Path, v: u32) {
    for sb in [0, 4096] {
        patch(p, sb + 8, &v.to_le_bytes());
        reseal(p, sb);
    }
}

#[test]
fn foreign_file() {
    let d = dir("foreign");
    let p = d.0.join("notes.txt");
    let mut text = b"Dear diary, today I opened a text file as a database.\n".repeat(100_000);
    text.truncate(4 << 20);
    std::fs::write(&p, &text).unwrap();
    let e = open_fails(&p);
    assert!(matches!(e, PoolError::NotAPool { .. }), "{e:?}");
    assert!(e.to_string().contains("not a daxkv pool"), "{e}");
}

#[test]
fn zeroed_file_is_not_a_pool() {
    let d = dir("zero");
    let p = d.0.join("z.pool");
    std::fs::write(&p, vec![0u8; 2 << 20]).unwrap();
    assert!(matches!(open_fails(&p), PoolError::NotAPool { .. }));
}

#[test]
fn wrong_magic_in_both_copies() {
    let d = dir("magic");
    let p = d.0.join("m.pool");
    make_pool(&p);
    patch(&p, 0, b"XAXKVSB1");
    patch(&p, 4096, b"XAXKVSB1");
    assert!(matches!(open_fails(&p), PoolError::NotAPool { .. }));
}

#[test]
fn wrong_version() {
    // 1: the format before records carried checksums; 7: a future one.
    for v in [1u32, 7] {
        let d = dir(&format!("version{v}"));
        let p = d.0.join("v.pool");
        make_pool(&p);
        set_version(&p, v);
        match open_fails(&p) {
            PoolError::WrongVersion { found, expected: 4, .. } if found == v => {}
            e => panic!("{e:?}"),
        }
    }
}

#[test]
fn version_2_and_3_pools_open_and_become_version_4() {
    // Version 2 had no expiring records, and neither 2 nor 3 had grown
    // heaps: their pools are version 4 pools without either, and the
    // superblock write at open marks them so.
    for v in [2u32, 3] {
        let d = dir(&format!("old{v}"));
        let p = d.0.join("v.pool");
        make_pool(&p);
        set_version(&p, v);
        // Their format left the heap header's words after the fifth
        // unwritten: on media that was not zero they hold anything, and
        // must not be taken for a grown heap's page count.
        let heap_off = u64::from_le_bytes(std::fs::read(&p).unwrap()[56..64].try_into().unwrap()) as usize;
        patch(&p, heap_off + 40, &[0x5a; 24]);
        let s = Store::open(&p, &Options::new()).unwrap();
        assert_eq!(std::fs::read(&p).unwrap()[heap_off + 40..heap_off + 64], [0; 24]);
        s.put_with_expiry(b"later", b"v", Some(u64::MAX)).unwrap();
        s.close().unwrap();
        let b = std::fs::read(&p).unwrap();
        for sb in [0, 4096] {
            assert_eq!(b[sb + 8..sb + 12], 4u32.to_le_bytes(), "version {v}: superblock at {sb}");
        }
        let s = Store::open(&p, &Options::new()).unwrap();
        assert_eq!(s.expiry(b"later").unwrap(), Some(Some(u64::MAX)));
        assert_eq!(s.len(), 301);
        for i in 0..300u32 {
            assert_eq!(s.get(format!("key{i}").as_bytes()).unwrap().unwrap(), i.to_le_bytes());
        }
        assert!(s.check().unwrap().is_ok());
    }
}

#[test]
fn truncated_pool() {
    let d = dir("trunc");
    let p = d.0.join("t.pool");
    make_pool(&p);
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(3 << 20).unwrap();
    drop(f);
    match open_fails(&p) {
        PoolError::Truncated { expected, found, .. } => assert_eq!((expected, found), (4 << 20, 3 << 20)),
        e => panic!("{e:?}"),
    }
    // A stub smaller than the header is refused too.
    std::fs::write(&p, [0u8; 100]).unwrap();
    assert!(matches!(open_fails(&p), PoolError::Open(_)));
}

#[test]
fn one_damaged_superblock_opens_from_the_other() {
    for (copy, at) in [(0usize, 0usize), (1, 4096)] {
        for byte in [3usize, 40, 88, 130, 253] {
            let d = dir(&format!("flip{copy}-{byte}"));
            let p = d.0.join("f.pool");
            make_pool(&p);
            let mut b = std::fs::read(&p).unwrap();
            b[at + byte] ^= 0x40;
            std::fs::write(&p, &b).unwrap();
            assert_pool_intact(&p);
            // Opening repaired the damaged copy.
            let b = std::fs::read(&p).unwrap();
            assert_eq!(b[0..252], b[4096..4096 + 252], "copy {copy} not rewritten");
        }
    }
}

#[test]
fn both_superblocks_damaged() {
    let d = dir("both");
    let p = d.0.join("b.pool");
    make_pool(&p);
    let mut b = std::fs::read(&p).unwrap();
    b[40] ^= 1;
    b[4096 + 100] ^= 1;
    std::fs::write(&p, &b).unwrap();
    match open_fails(&p) {
        PoolError::BadSuperblock { why, .. } => assert!(why.contains("Checksum"), "{why}"),
        e => panic!("{e:?}"),
    }
}

/// A sequence number no pool reaches, behind a valid checksum, is damage:
/// with one copy so, open uses the other; with both, it refuses. (Open
/// once panicked bumping it; wrapping it to 0 would make the older copy
/// look newer after a crash between the two copies' writes.)
#[test]
fn an_impossible_sequence_is_damage() {
    for copies in [&[0usize][..], &[0, 4096]] {
        let d = dir(&format!("seq-{}", copies.len()));
        let p = d.0.join("s.pool");
        make_pool(&p);
        for &sb in copies {
            patch(&p, sb + 80, &u64::MAX.to_le_bytes());
            reseal(&p, sb);
        }
        if copies.len() == 1 {
            assert_pool_intact(&p);
            continue;
        }
        match open_fails(&p) {
            PoolError::BadSuperblock { why, .. } => assert!(why.contains("sequence"), "{why}"),
            e => panic!("{e:?}"),
        }
    }
}

#[test]
fn keys_and_values_out_of_limits() {
    let d = dir("limits");
    let p = d.0.join("l.pool");
    let s = Store::open(&p, &Options::new().pool_size(160 << 20).create_if_missing(true)).unwrap();
    s.put(b"keep", b"me").unwrap();
    assert!(matches!(s.put(b"", b"x"), Err(Error::EmptyKey)));
    assert!(matches!(s.get(b""), Err(Error::EmptyKey)));
    let long = vec![b'k'; daxkv::MAX_KEY + 1];
    assert!(matches!(s.put(&long, b"x"), Err(Error::KeyTooLarge { len, max }) if len == max + 1));
    assert!(matches!(s.delete(&long), Err(Error::KeyTooLarge { .. })));
    let big = vec![0u8; daxkv::MAX_VALUE + 1];
    assert!(matches!(s.put(b"k", &big), Err(Error::ValueTooLarge { .. })));
    assert!(matches!(s.write_batch(&[(b"k".to_vec(), Some(big))]), Err(Error::ValueTooLarge { .. })));
    // The limits themselves are accepted.
    let max_key = vec![b'm'; daxkv::MAX_KEY];
    s.put(&max_key, b"v").unwrap();
    let max_val = vec![9u8; daxkv::MAX_VALUE];
    s.put(b"big", &max_val).unwrap();
    assert_eq!(s.get(b"big").unwrap().unwrap().len(), daxkv::MAX_VALUE);
    s.put(b"empty", b"").unwrap();
    assert_eq!(s.get(b"empty").unwrap(), Some(Vec::new()));
    assert_eq!(s.get(b"keep").unwrap().as_deref(), Some(&b"me"[..]));
    assert!(s.check().unwrap().is_ok());
}

#[test]
fn create_refuses_an_existing_pool() {
    let d = dir("exists");
    let p = d.0.join("e.pool");
    make_pool(&p);
    assert!(matches!(Store::create(&p, &opts()), Err(PoolError::Options(_))));
    assert_pool_intact(&p);
}

#[test]
fn a_pool_is_locked_while_open() {
    let d = dir("locked");
    let p = d.0.join("k.pool");
    let s = Store::open(&p, &opts()).unwrap();
    let e = Store::open(&p, &Options::new()).unwrap_err();
    assert!(matches!(e, PoolError::Open(daxkv::OpenError::Locked { .. })), "{e:?}");
    drop(s);
    Store::open(&p, &Options::new()).unwrap();
}

#[test]
fn an_interrupted_creation_is_created_again() {
    // A crash while creating leaves a sized file whose superblocks were never
    // written: open without create_if_missing says so, with it creates.
    let d = dir("interrupted");
    let p = d.0.join("i.pool");
    let mut b = vec![0u8; 4 << 20];
    b[(1 << 20)..(1 << 20) + 5].copy_from_slice(b"junk!"); // half-written heap
    std::fs::write(&p, &b).unwrap();
    assert!(matches!(open_fails(&p), PoolError::NotAPool { .. }));
    let s = Store::open(&p, &opts()).unwrap();
    assert_eq!(s.len(), 0);
    s.put(b"k", b"v").unwrap();
    assert!(s.check().unwrap().is_ok());
    s.close().unwrap();
    assert_eq!(Store::open(&p, &Options::new()).unwrap().get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
}

/// Resident bytes of this process's mapping of `path` (/proc/self/smaps).
fn resident(path: &Path) -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let name = path.to_str().unwrap();
    let mut total = 0;
    let mut inside = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            inside = line.ends_with(name);
        } else if inside && let Some(kb) = line.strip_prefix("Rss:") {
            total += kb.trim().trim_end_matches("kB").trim().parse::<u64>().unwrap() * 1024;
        }
    }
    total
}

#[test]
fn create_faults_in_memory_pools_and_leaves_disk_files_alone() {
    const SIZE: u64 = 64 << 20;
    let d = dir("prefault");
    let base = Options::new().pool_size(SIZE);
    // tmpfs, default: every page resident after create, and after an open
    // that creates.
    let a = d.0.join("a.pool");
    let s = Store::create(&a, &base).unwrap();
    assert!(resident(&a) >= SIZE - (1 << 20), "only {} of {SIZE} bytes resident after create", resident(&a));
    drop(s);
    let b = d.0.join("b.pool");
    let s = Store::open(&b, &base.clone().create_if_missing(true)).unwrap();
    assert!(resident(&b) >= SIZE - (1 << 20), "only {} of {SIZE} bytes resident after open", resident(&b));
    drop(s);
    // Turned off: only what formatting wrote (superblocks, heap metadata,
    // the log's first pages).
    let c = d.0.join("c.pool");
    let s = Store::create(&c, &base.clone().prefault(false)).unwrap();
    assert!(resident(&c) < SIZE / 4, "{} of {SIZE} bytes resident without prefault", resident(&c));
    s.put(b"k", b"v").unwrap();
    drop(s);
    // An ordinary file system: skipped (it would dirty the whole file),
    // with the backend it picks (msync) and with one forced.
    for (tag, p) in [("auto", Persistence::Auto), ("pmem", Persistence::Force(Backend::Pmem))] {
        let disk = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("prefault-{tag}-{}.pool", std::process::id()));
        let _ = std::fs::remove_file(&disk);
        let s = Store::create(&disk, &base.clone().persistence(p)).unwrap();
        let on_disk = resident(&disk);
        drop(s);
        let _ = std::fs::remove_file(&disk);
        assert!(on_disk < SIZE / 4, "{tag}: {on_disk} of {SIZE} bytes of a disk file faulted in");
    }
}

/// The superblock's u64 at `at` (first copy).
fn sb_word(p: &Path, at: usize) -> u64 {
    let b = std::fs::read(p).unwrap();
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// Change the saved index of a cleanly closed pool with `f` (on its body)
/// and seal it again with a right checksum, as damage that a checksum
/// cannot catch would leave it.
fn rewrite_saved_index(p: &Path, f: impl FnOnce(&mut [u8])) {
    let (off, len) = (sb_word(p, 96) as usize, sb_word(p, 104) as usize);
    assert!(off > 0 && len >= 36, "a cleanly closed pool has a saved index");
    let mut b = std::fs::read(p).unwrap();
    f(&mut b[off..off + len - 4]);
    let crc = crc32c::crc32c(&b[off..off + len - 4]);
    b[off + len - 4..off + len].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(p, b).unwrap();
}

/// A saved index that checksums but cannot be right (a leaf count beyond
/// what its bytes hold, a misaligned leaf, separators out of order) is not
/// trusted: open rebuilds the index from the leaves instead. The count
/// once sized an allocation (and aborted the process); a misaligned leaf
/// panicked at its first read.
#[test]
fn an_impossible_saved_index_is_rebuilt_from_the_leaves() {
    type Damage = fn(&mut [u8]);
    let damages: [(&str, Damage); 3] = [
        ("count", |b| b[8..16].copy_from_slice(&(1u64 << 60).to_le_bytes())),
        ("misaligned leaf", |b| {
            // Entry 1 (after entry 0: leaf, length 0, empty separator).
            let at = 32 + 12;
            let leaf = u64::from_le_bytes(b[at..at + 8].try_into().unwrap());
            b[at..at + 8].copy_from_slice(&(leaf + 4).to_le_bytes());
        }),
        ("order", |b| {
            // Entry 1's separator ("key..." or so) lowered below entry 0's
            // empty one cannot be; make it equal to entry 2's instead.
            let at = 32 + 12;
            let k1 = u32::from_le_bytes(b[at + 8..at + 12].try_into().unwrap()) as usize;
            let at2 = at + 12 + k1;
            let k2 = u32::from_le_bytes(b[at2 + 8..at2 + 12].try_into().unwrap()) as usize;
            let n = k1.min(k2);
            let sep2 = b[at2 + 12..at2 + 12 + n].to_vec();
            b[at + 12..at + 12 + n].copy_from_slice(&sep2);
            b[at + 12 + n..at + 12 + k1].fill(0xff);
        }),
    ];
    for (what, damage) in damages {
        let d = dir(&format!("saved-index-{}", what.replace(' ', "-")));
        let p = d.0.join("p.pool");
        // Enough keys for several leaves.
        let s = Store::open(&p, &opts()).unwrap();
        for i in 0..3000u32 {
            s.put(format!("key{i:05}").as_bytes(), &i.to_le_bytes()).unwrap();
        }
        s.close().unwrap();
        rewrite_saved_index(&p, damage);
        let s = Store::open(&p, &Options::new()).unwrap();
        assert!(!s.stats().opened_clean, "{what}: the damaged index was used");
        assert_eq!(s.len(), 3000, "{what}");
        for i in 0..3000u32 {
            assert_eq!(s.get(format!("key{i:05}").as_bytes()).unwrap().unwrap(), i.to_le_bytes(), "{what}");
        }
        assert!(s.check().unwrap().is_ok(), "{what}");
    }
}

/// A slot damaged after a clean close (open does not walk the leaves
/// then) pointing outside the pool: reads, scans and `check` never touch
/// memory outside it, and `check` reports the damage.
#[test]
fn a_slot_pointing_outside_the_pool_reads_nothing_outside() {
    let d = dir("slot-outside");
    let p = d.0.join("p.pool");
    make_pool(&p);
    let head = sb_word(&p, 72) as usize;
    let b = std::fs::read(&p).unwrap();
    let bits = u64::from_le_bytes(b[head..head + 8].try_into().unwrap());
    let i = bits.trailing_zeros() as usize;
    assert!(i < 64, "the head leaf holds keys");
    patch(&p, head + 80 + 8 * i, &0x0000_4001_0000_0000u64.to_le_bytes());
    let s = Store::open(&p, &Options::new()).unwrap();
    let mut n = 0;
    for kv in s.iter() {
        let _ = kv;
        n += 1;
    }
    for kv in s.range_rev::<&[u8]>(..) {
        let _ = kv;
    }
    for i in 0..300u32 {
        let _ = s.get(format!("key{i}").as_bytes()).unwrap();
    }
    assert!(n >= 299);
    let rep = s.check().unwrap();
    assert!(!rep.is_ok(), "check found nothing wrong");
}

/// A slot holding an offset near u64::MAX, in a pool left by a crash:
/// recovery refuses it with a typed error (it once looped for ever while
/// prefetching the record), and after a clean close a scan returns.
#[test]
fn a_slot_near_the_top_of_the_address_space() {
    for crashed in [true, false] {
        let d = dir(&format!("slot-top-{crashed}"));
        let p = d.0.join("p.pool");
        let s = Store::open(&p, &opts()).unwrap();
        for i in 0..300u32 {
            s.put(format!("key{i}").as_bytes(), &i.to_le_bytes()).unwrap();
        }
        if crashed {
            s.abandon()
        } else {
            s.close().unwrap()
        }
        let head = sb_word(&p, 72) as usize;
        let b = std::fs::read(&p).unwrap();
        let bits = u64::from_le_bytes(b[head..head + 8].try_into().unwrap());
        let i = bits.trailing_zeros() as usize;
        patch(&p, head + 80 + 8 * i, &0xffff_ffff_ffff_ffc0u64.to_le_bytes());
        let (tx, rx) = std::sync::mpsc::channel();
        let p2 = p.clone();
        std::thread::spawn(move || {
            let out = match Store::open(&p2, &Options::new()) {
                Err(e) => Err(e.to_string()),
                Ok(s) => Ok((s.iter().count(), s.check().unwrap().is_ok())),
            };
            tx.send(out).unwrap();
        });
        let out = rx.recv_timeout(std::time::Duration::from_secs(30)).expect("open and scan returned");
        if crashed {
            let e = out.expect_err("recovery accepted a slot outside the pool");
            assert!(e.contains("out of bounds"), "{e}");
        } else {
            let (n, ok) = out.unwrap();
            assert!(n >= 299 && !ok, "{n} keys, check ok: {ok}");
        }
    }
}

/// A leaf's next pointer damaged after a clean close to a misaligned
/// offset inside the heap: `check` reports a broken chain (it once
/// panicked on the misaligned read).
#[test]
fn check_reports_a_misaligned_leaf_pointer() {
    let d = dir("next-misaligned");
    let p = d.0.join("p.pool");
    make_pool(&p);
    let (head, heap_off) = (sb_word(&p, 72) as usize, sb_word(&p, 56));
    patch(&p, head + 8, &(heap_off + 4).to_le_bytes());
    let s = Store::open(&p, &Options::new()).unwrap();
    let rep = s.check().unwrap();
    assert!(rep.problems.iter().any(|m| m.contains("leaf chain broken")), "{:?}", rep.problems);
}

/// Damage that only a walk of the leaves can see, made after a clean close
/// (which open trusts): `check` names each kind. Leaf layout: bitmap at 0,
/// next at 8, 64 fingerprint bytes at 16, 64 slot words at 80.
#[test]
fn check_names_each_kind_of_leaf_damage() {
    type Damage = fn(&Path, usize, usize, usize);
    // (what, damage(pool, head leaf, a live slot of it, a free slot of it), expected)
    let cases: [(&str, Damage, &[&str]); 3] = [
        (
            "a flipped fingerprint",
            |p, head, i, _| {
                let b = std::fs::read(p).unwrap();
                patch(p, head + 16 + i, &[b[head + 16 + i] ^ 0x10]);
            },
            &["fingerprint does not match its key"],
        ),
        (
            "one record in two slots",
            |p, head, i, j| {
                let b = std::fs::read(p).unwrap();
                patch(p, head + 80 + 8 * j, &b[head + 80 + 8 * i..head + 88 + 8 * i]);
                patch(p, head + 16 + j, &[b[head + 16 + i]]);
                patch(p, head, &(sb_word(p, head) | 1 << j).to_le_bytes());
            },
            &["holds a key twice", "reachable twice", "301 keys found"],
        ),
        (
            "a record of the next leaf in the head leaf too",
            |p, head, _, j| {
                let b = std::fs::read(p).unwrap();
                let next = sb_word(p, head + 8) as usize;
                let k = sb_word(p, next).trailing_zeros() as usize;
                assert!(next != 0 && k < 64, "the pool has two leaves");
                patch(p, head + 80 + 8 * j, &b[next + 80 + 8 * k..next + 88 + 8 * k]);
                patch(p, head + 16 + j, &[b[next + 16 + k]]);
                patch(p, head, &(sb_word(p, head) | 1 << j).to_le_bytes());
            },
            &[
                "outside the leaf's range",
                "but the index routes it to",
                "keys not above the previous leaf's",
                "reachable twice",
            ],
        ),
    ];
    for (what, damage, expected) in cases {
        let d = dir("check-damage");
        let p = d.0.join("p.pool");
        make_pool(&p);
        let head = sb_word(&p, 72) as usize;
        let bits = sb_word(&p, head);
        let (i, j) = (bits.trailing_zeros() as usize, (!bits).trailing_zeros() as usize);
        assert!(i < 64 && j < 64, "the head leaf has a live and a free slot: {bits:#x}");
        damage(&p, head, i, j);
        let s = Store::open(&p, &Options::new()).unwrap();
        let rep = s.check().unwrap();
        for e in expected {
            assert!(rep.problems.iter().any(|m| m.contains(e)), "{what}: no {e:?} in {:?}", rep.problems);
        }
        s.abandon();
    }
}

/// The first live record of the head leaf: its offset and the offset of
/// its value's last byte.
fn a_record(p: &Path) -> (usize, usize) {
    let head = sb_word(p, 72) as usize;
    let b = std::fs::read(p).unwrap();
    let bits = u64::from_le_bytes(b[head..head + 8].try_into().unwrap());
    let i = bits.trailing_zeros() as usize;
    assert!(i < 64, "the head leaf holds keys");
    let rec = (sb_word(p, head + 80 + 8 * i) & !1) as usize;
    let h = sb_word(p, rec);
    let (k, v) = ((h & 0xffff_ffff) as usize, (h >> 32) as usize);
    assert!(v > 0);
    (rec, rec + 12 + k + v - 1)
}

/// With `Options::verify`, open runs `check()` and refuses a pool it finds
/// damaged with `PoolError::Damaged`: after a clean close before writing a
/// byte, after a crash once recovery has run (and without a clean close
/// over the damage). Without it the same pool opens, as documented, and
/// `check()` reports the damage.
#[test]
fn verify_at_open_refuses_a_damaged_pool() {
    let d = dir("verify");
    let p = d.0.join("p.pool");
    make_pool(&p);
    let s = Store::open(&p, &Options::new().verify(true)).unwrap();
    assert!(s.stats().opened_clean && s.len() == 300, "a sound pool passes and still opens clean");
    s.close().unwrap();

    // One value byte flipped after a clean close: the record's checksum fails.
    let (_, last) = a_record(&p);
    let b = std::fs::read(&p).unwrap();
    patch(&p, last, &[b[last] ^ 0x5a]);
    let before = std::fs::read(&p).unwrap();
    match Store::open(&p, &Options::new().verify(true)) {
        Err(PoolError::Damaged { problems, .. }) => {
            assert!(problems.iter().any(|m| m.contains("fails its checksum")), "{problems:?}");
        }
        other => panic!("expected Damaged, got {:?}", other.map(|_| "a store")),
    }
    assert_eq!(std::fs::read(&p).unwrap(), before, "a refused clean open wrote to the file");
    let s = Store::open(&p, &Options::new()).unwrap();
    assert!(!s.check().unwrap().is_ok(), "without verify the pool opens and check reports it");
    s.abandon();

    // After a crash: recovery runs, then the check refuses the pool, and
    // leaves it for recovery again (no clean close over the damage).
    let e = Store::open(&p, &Options::new().verify(true)).unwrap_err();
    assert!(matches!(e, PoolError::Damaged { .. }), "{e}");
    assert!(e.to_string().contains("problem(s) at open"), "{e}");
    let s = Store::open(&p, &Options::new()).unwrap();
    assert!(!s.stats().opened_clean, "the refused open did not close the pool cleanly");
    drop(s);
}

/// Set the u64 at `at` of superblock copy `sb` in an image and reseal it.
fn set_sb_word(img: &mut [u8], sb: usize, at: usize, v: u64) {
    img[sb + at..sb + at + 8].copy_from_slice(&v.to_le_bytes());
    let crc = crc32c::crc32c(&img[sb..sb + 252]);
    img[sb + 252..sb + 256].copy_from_slice(&crc.to_le_bytes());
}

/// Open rewrites both superblock copies. When one copy is damaged (a crash
/// tore it) or older (a crash came between the two writes of the last
/// superblock write), a crash during the rewrite must still leave a valid
/// copy, and never one older than the copy open chose: the damaged or
/// older copy is written first.
#[test]
fn a_crash_while_the_superblocks_are_rewritten_keeps_the_newest_valid_copy() {
    use daxkv::{PersistOptions, Region};
    use daxkv_alloc::sim::SimConfig;
    use std::ops::ControlFlow;
    use std::sync::{Arc, Mutex};

    let vol = PersistOptions::default().with_backend(Backend::Volatile);
    let base = Arc::new(Region::anonymous(4 << 20, &vol).unwrap());
    let s = Store::create_on(base.clone(), 256 << 10).unwrap();
    for i in 0..300u32 {
        s.put(format!("key{i}").as_bytes(), &i.to_le_bytes()).unwrap();
    }
    s.close().unwrap();
    let clean = base.bytes(0, 4 << 20).to_vec();
    let seq = u64::from_le_bytes(clean[80..88].try_into().unwrap());
    // The newest copy says 5 recoveries; an older one says 0.
    let mut cases = Vec::new();
    for (name, newer, other) in [("copy B damaged", 0, None), ("copy A damaged", 4096, None)] {
        let mut img = clean.clone();
        set_sb_word(&mut img, newer, 128, 5);
        img[(4096 - newer) + 100] ^= 0xff; // the other copy fails its checksum
        cases.push((name, img, other));
    }
    for (name, newer, older) in [("copy B older", 0usize, 4096usize), ("copy A older", 4096, 0)] {
        let mut img = clean.clone();
        set_sb_word(&mut img, newer, 128, 5);
        set_sb_word(&mut img, newer, 80, seq + 1);
        set_sb_word(&mut img, older, 80, seq);
        cases.push((name, img, Some(older)));
    }
    let scratch = Arc::new(Region::anonymous(4 << 20, &vol).unwrap());
    for (name, img, _) in cases {
        let sim = Arc::new(Region::sim(&img, SimConfig::default()));
        let seen = Arc::new(Mutex::new((0u64, 0u64)));
        {
            let (scratch, seen) = (scratch.clone(), seen.clone());
            sim.simulator().unwrap().set_hook(move |cp| {
                let n = cp.for_each_image(|img, d| {
                    scratch.write(0, img);
                    let s = Store::open_on(scratch.clone())
                        .unwrap_or_else(|e| panic!("{name}: crash point {} image {d}: {e}", cp.index));
                    assert!(s.stats().recoveries >= 5, "{name}: point {} image {d}: an older superblock", cp.index);
                    assert_eq!(s.len(), 300, "{name}");
                    s.abandon();
                    ControlFlow::Continue(())
                });
                let mut st = seen.lock().unwrap();
                st.0 += 1;
                st.1 += n;
            });
        }
        let s = Store::open_on(sim.clone()).unwrap();
        assert_eq!(s.stats().recoveries, 5, "{name}");
        s.close().unwrap();
        sim.simulator().unwrap().clear_hook();
        let (points, images) = *seen.lock().unwrap();
        assert!(points >= 4 && images > points, "{name}: {points} points, {images} images");
    }
}
