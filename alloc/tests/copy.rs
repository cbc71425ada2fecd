//! Copy correctness of the flushcache copy and fill, byte for byte: every
//! length 0..=4096 at every source and destination alignment 0..64, plus
//! random lengths up to 8 MiB, for each backend and each copy path this CPU
//! can run (each path forced in turn).

use daxkv_alloc::{Backend, CopyIsa, FlushInstr, OpenError, PersistOptions, Region, RegionOptions, available_flushes};
use rand::{Rng, SeedableRng, rngs::StdRng};

const BIG: usize = 8 << 20;
const GUARD: usize = 64;

fn source(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut v = vec![0u8; len];
    rng.fill(&mut v[..]);
    // no zero bytes: a zero in the copy can then only mean "not copied"
    for b in &mut v {
        if *b == 0 {
            *b = 0xa5;
        }
    }
    v
}

/// Copy `len` bytes from `src` to region offset `dst` and check the copy
/// and the zeroed guard bytes on both sides.
fn check_one(r: &Region, src: &[u8], dst: u64, what: &str) {
    check_copy(r, src, dst, what, |r, d, s| r.copy_nodrain(d, s));
}

/// As `check_one`, for `copy_lines_nodrain` (whole lines when `dst` is
/// aligned and the length a multiple of 64; plain copy otherwise).
fn check_lines(r: &Region, src: &[u8], dst: u64, what: &str) {
    check_copy(r, src, dst, what, |r, d, s| r.copy_lines_nodrain(d, s));
}

fn check_copy(r: &Region, src: &[u8], dst: u64, what: &str, copy: impl Fn(&Region, u64, &[u8])) {
    let len = src.len();
    r.write(dst - GUARD as u64, &vec![0u8; len + 2 * GUARD]);
    copy(r, dst, src);
    // msync's drain is a system call: drain at a sample of the copies there
    // (the copy itself is what is checked; drain only adds durability).
    if r.persist_info().backend != Backend::Msync || len.is_multiple_of(512) {
        r.drain().unwrap();
    }
    let got = r.bytes(dst - GUARD as u64, len + 2 * GUARD);
    assert!(got[..GUARD].iter().all(|&b| b == 0), "{what}: wrote before dst (len {len}, dst {dst})");
    assert!(got[GUARD + len..].iter().all(|&b| b == 0), "{what}: wrote after the end (len {len}, dst {dst})");
    if got[GUARD..GUARD + len] != *src {
        let i = (0..len).find(|&i| got[GUARD + i] != src[i]).unwrap();
        panic!("{what}: byte {i} of {len} differs (dst {dst})");
    }
}

fn check_fill(r: &Region, byte: u8, len: usize, dst: u64, what: &str) {
    r.write(dst - GUARD as u64, &vec![0u8; len + 2 * GUARD]);
    r.set_nodrain(dst, byte, len);
    r.drain().unwrap();
    let got = r.bytes(dst - GUARD as u64, len + 2 * GUARD);
    assert!(got[..GUARD].iter().all(|&b| b == 0), "{what}: fill wrote before dst");
    assert!(got[GUARD + len..].iter().all(|&b| b == 0), "{what}: fill wrote after the end");
    assert!(got[GUARD..GUARD + len].iter().all(|&b| b == byte), "{what}: fill of {len} at {dst} incomplete");
}

fn exercise(r: &Region, what: &str) {
    // 64 bytes of slack for every source alignment
    let src = source(4096 + 64, 1);
    let base = 4096u64;
    for s_align in 0..64usize {
        for d_align in 0..64u64 {
            for len in 0..=4096usize {
                check_one(r, &src[s_align..s_align + len], base + d_align, what);
            }
        }
    }
    for s_align in [0usize, 1, 8, 63] {
        for d_align in [0u64, 8, 63] {
            for len in 0..=1024usize {
                check_lines(r, &src[s_align..s_align + len], base + d_align, what);
            }
        }
    }
    for d_align in 0..64u64 {
        for len in (0..=4096usize).step_by(7) {
            check_fill(r, 0x5a, len, base + d_align, what);
        }
    }
    let mut rng = StdRng::seed_from_u64(2);
    let big = source(BIG + 64, 3);
    for _ in 0..12 {
        let len = rng.gen_range(0..=BIG);
        let s = rng.gen_range(0..64);
        let d = rng.gen_range(0..64) + 4096;
        check_one(r, &big[s..s + len], d, what);
        check_fill(r, 0xc3, len, d, what);
    }
}

fn anon(opts: PersistOptions) -> Region {
    Region::anonymous(BIG + 3 * 4096, &opts).unwrap()
}

fn pmem_opts(isa: CopyIsa) -> PersistOptions {
    PersistOptions { force_copy: Some(isa), ..PersistOptions::default().with_backend(Backend::Pmem) }
}

fn isa_test(isa: CopyIsa, backend: Backend) {
    if !CopyIsa::available().contains(&isa) {
        // The path is missing on this CPU: opening with it forced must say so.
        let opts = PersistOptions { force_copy: Some(isa), ..PersistOptions::default().with_backend(backend) };
        assert!(Region::anonymous(4096, &opts).is_err(), "{isa:?} forced on a CPU without it must fail");
        return;
    }
    let opts = PersistOptions { force_copy: Some(isa), ..PersistOptions::default().with_backend(backend) };
    let r = anon(opts);
    assert_eq!(r.persist_info().copy, isa);
    exercise(&r, &format!("{backend} {isa:?}"));
}

#[test]
fn pmem_avx512() {
    isa_test(CopyIsa::Avx512, Backend::Pmem);
}

#[test]
fn pmem_avx2() {
    isa_test(CopyIsa::Avx2, Backend::Pmem);
}

#[test]
fn pmem_sse2() {
    isa_test(CopyIsa::Sse2, Backend::Pmem);
}

#[test]
fn pmem_plain() {
    isa_test(CopyIsa::Plain, Backend::Pmem);
}

#[test]
fn eadr_widest() {
    let isa = CopyIsa::available()[0];
    isa_test(isa, Backend::Eadr);
}

#[test]
fn volatile() {
    let r = anon(PersistOptions::default().with_backend(Backend::Volatile));
    assert_eq!(r.persist_info().backend, Backend::Volatile);
    exercise(&r, "volatile");
}

#[test]
fn msync_file() {
    let dir = std::env::temp_dir().join(format!("daxkv-copy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("msync.pool");
    let opts = RegionOptions {
        persist: PersistOptions::default().with_backend(Backend::Msync),
        create_size: Some((BIG + 3 * 4096) as u64),
        min_len: 4096,
    };
    let r = Region::open(&path, &opts).unwrap();
    assert_eq!(r.persist_info().backend, Backend::Msync);
    exercise(&r, "msync");
    drop(r);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Every flush instruction the CPU has, with the small-copy path (all
/// cached stores + flush) and the NT path's head/tail flushes.
#[test]
fn each_flush_instruction() {
    let flushes = available_flushes();
    assert!(flushes.contains(&FlushInstr::Clflush), "clflush is baseline on x86-64");
    for f in flushes {
        let opts = PersistOptions { force_flush: Some(f), ..pmem_opts(CopyIsa::available()[0]) };
        let r = Region::anonymous(64 << 10, &opts).unwrap();
        assert_eq!(r.persist_info().flush, f);
        let src = source(4096 + 64, 9);
        for d_align in 0..64u64 {
            for len in [0, 1, 7, 8, 63, 64, 65, 255, 256, 257, 1000, 4095, 4096] {
                check_one(&r, &src[d_align as usize..d_align as usize + len], 4096 + d_align, f.name());
            }
        }
    }
}

/// The threshold moves the NT/cached boundary; both sides stay correct.
#[test]
fn threshold_override() {
    for t in [0usize, 64, 100, 4096, usize::MAX] {
        let opts = PersistOptions { movnt_threshold: t, ..pmem_opts(CopyIsa::available()[0]) };
        let r = Region::anonymous(64 << 10, &opts).unwrap();
        let src = source(8192, t as u64);
        for len in [0, 1, 63, 64, 65, 99, 100, 101, 4095, 4096, 4097, 8000] {
            for d in [4096u64, 4097, 4096 + 63] {
                check_one(&r, &src[..len], d, &format!("threshold {t}"));
            }
        }
    }
}

/// A region opened read-only reads what is in the file, refuses every
/// write with a panic (the file is unchanged), shares its lock with other
/// readers and is refused while a writer holds the pool.
#[test]
fn read_only_region() {
    let dir = std::env::temp_dir().join(format!("daxkv-ro-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ro.pool");
    let bytes: Vec<u8> = (0..16384u32).map(|i| (i * 7) as u8).collect();
    std::fs::write(&path, &bytes).unwrap();
    let r = Region::open_read_only(&path, 4096).unwrap();
    assert_eq!(r.len(), 16384);
    assert_eq!(r.read_u64(8), u64::from_le_bytes(bytes[8..16].try_into().unwrap()));
    assert_eq!(r.load_u64(64), u64::from_le_bytes(bytes[64..72].try_into().unwrap()));
    type Write = fn(&Region);
    let writes: [(&str, Write); 5] = [
        ("write", |r| r.write(0, b"x")),
        ("store_u64", |r| r.store_u64(0, 1)),
        ("compare_exchange_u64", |r| {
            let _ = r.compare_exchange_u64(0, 0, 1);
        }),
        ("copy_nodrain", |r| r.copy_nodrain(0, &[1; 512])),
        ("set_nodrain", |r| r.set_nodrain(0, 1, 64)),
    ];
    for (what, w) in &writes {
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w(&r)));
        assert!(out.is_err(), "{what} on a read-only region did not panic");
    }
    let again = Region::open_read_only(&path, 4096).expect("readers share the lock");
    let rw = RegionOptions { persist: PersistOptions::default(), create_size: None, min_len: 4096 };
    assert!(matches!(Region::open(&path, &rw), Err(OpenError::Locked { .. })), "a writer got in beside readers");
    drop((r, again));
    let w = Region::open(&path, &rw).unwrap();
    assert!(
        matches!(Region::open_read_only(&path, 4096), Err(OpenError::Locked { .. })),
        "a reader got in beside a writer"
    );
    drop(w);
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    std::fs::remove_dir_all(&dir).unwrap();
}
