//! Growing a pool in place (`Store::grow`): every key stays, the new room
//! is usable on the clean and the crash path, a pool grows more than once,
//! refused grows write nothing, and a crash at any drain of a grow leaves a
//! pool that opens with every key at the old or the new size and that a
//! second grow finishes.

use daxkv::{Backend, Error, OpenError, Options, PersistOptions, Persistence, PoolError, Region, Store};
use daxkv_alloc::sim::SimConfig;
use daxkv_tests::ShmDir;
use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

fn opts() -> Options {
    Options::new().persistence(Persistence::Force(Backend::Pmem)).log_size(256 << 10)
}

fn key(i: u64) -> Vec<u8> {
    format!("key{:08}", i.wrapping_mul(0x9e37_79b9) % 100_000_000).into_bytes()
}

fn value(i: u64) -> Vec<u8> {
    let len = [100, 700, 3000, 20_000][(i % 4) as usize];
    (0..len).map(|j| (i as usize * 7 + j) as u8).collect()
}

/// Put keys from `*next` on until the pool is full; returns how many fit.
fn fill(s: &Store, model: &mut Model, next: &mut u64) -> u64 {
    let mut n = 0;
    loop {
        let (k, v) = (key(*next), value(*next));
        match s.put(&k, &v) {
            Ok(()) => {
                model.insert(k, v);
                *next += 1;
                n += 1;
            }
            Err(Error::PoolFull(_)) => return n,
            Err(e) => panic!("{e}"),
        }
    }
}

fn same(s: &Store, model: &Model, what: &str) {
    assert_eq!(s.len(), model.len() as u64, "{what}: len");
    let got: Vec<(Vec<u8>, Vec<u8>)> = s.iter().map(|r| r.unwrap()).collect();
    assert!(got.iter().map(|(k, v)| (k, v)).eq(model.iter()), "{what}: contents differ");
    let report = s.check().unwrap();
    assert!(report.is_ok(), "{what}: {report:?}");
}

#[test]
fn a_full_pool_grows_twice_and_keeps_every_key() {
    let d = ShmDir::new("grow");
    let p = d.0.join("g.pool");
    let mut model = Model::new();
    let mut next = 0;
    let s = Store::open(&p, &opts().pool_size(4 << 20).create_if_missing(true)).unwrap();
    let first = fill(&s, &mut model, &mut next);
    let heap = s.stats().heap_bytes;
    s.close().unwrap();

    let g = Store::grow(&p, 16 << 20, &opts()).unwrap();
    assert_eq!((g.old_size, g.new_size, g.old_heap_bytes), (4 << 20, 16 << 20, heap));
    assert!(g.new_heap_bytes > g.old_heap_bytes + (11 << 20), "{g:?}");
    assert_eq!(std::fs::metadata(&p).unwrap().len(), 16 << 20);
    let s = Store::open(&p, &opts()).unwrap();
    assert!(s.stats().opened_clean);
    assert_eq!((s.stats().pool_size, s.stats().heap_bytes), (16 << 20, g.new_heap_bytes));
    same(&s, &model, "after the first grow");
    let second = fill(&s, &mut model, &mut next);
    assert!(second > 3 * first, "{second} more keys after growing 4x, {first} before");
    same(&s, &model, "filled after the first grow");
    // The crash path finds the grown layout too.
    s.abandon();
    let s = Store::open(&p, &opts()).unwrap();
    assert!(!s.stats().opened_clean);
    same(&s, &model, "recovered after the first grow");
    // Make room in the middle, so the next grow carries holes.
    for i in (0..next).step_by(3) {
        s.delete(&key(i)).unwrap();
        model.remove(&key(i));
    }
    s.close().unwrap();

    // A grown pool grows again: its metadata moves once more, and where it
    // was becomes free pages.
    let g2 = Store::grow(&p, 40 << 20, &opts()).unwrap();
    assert_eq!((g2.old_size, g2.old_heap_bytes), (16 << 20, g.new_heap_bytes));
    let s = Store::open(&p, &opts()).unwrap();
    same(&s, &model, "after the second grow");
    fill(&s, &mut model, &mut next);
    let st = s.stats();
    assert!(st.heap_free_bytes < st.heap_bytes / 20, "{st:?}");
    same(&s, &model, "filled after the second grow");
    s.close().unwrap();
    let s = Store::open(&p, &opts()).unwrap();
    same(&s, &model, "reopened");
}

#[test]
fn refused_grows_write_nothing() {
    let d = ShmDir::new("grow-refused");
    let p = d.0.join("r.pool");
    let s = Store::open(&p, &opts().pool_size(4 << 20).create_if_missing(true)).unwrap();
    for i in 0..100 {
        s.put(&key(i), &value(i)).unwrap();
    }
    s.close().unwrap();
    let before = std::fs::read(&p).unwrap();
    let msg = |e: PoolError| e.to_string();
    let e = msg(Store::grow(&p, 2 << 20, &opts()).unwrap_err());
    assert!(e.contains("cannot shrink"), "{e}");
    let e = msg(Store::grow(&p, (4 << 20) + 4096, &opts()).unwrap_err());
    assert!(e.contains("at least"), "{e}");
    // The size named works, one page less does not.
    let least: u64 = e.rsplit("at least ").next().unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(Store::grow(&p, least - 4096, &opts()).is_err());
    // Refused from a read-only look: not a byte changed.
    assert!(std::fs::read(&p).unwrap() == before, "a refused grow changed the pool");

    // Growing to the pool's own size does nothing.
    let g = Store::grow(&p, 4 << 20, &opts()).unwrap();
    assert_eq!((g.old_size, g.new_size, g.old_heap_bytes), (4 << 20, 4 << 20, g.new_heap_bytes));
    let g = Store::grow(&p, least, &opts()).unwrap();
    assert_eq!(g.new_size, least);
    let g = Store::grow(&p, least, &opts()).unwrap();
    assert_eq!(g.old_heap_bytes, g.new_heap_bytes, "a second grow to the same size does nothing");

    // Not a pool, a pool in use, no file.
    let junk = d.0.join("junk");
    std::fs::write(&junk, vec![7u8; 2 << 20]).unwrap();
    assert!(matches!(Store::grow(&junk, 8 << 20, &opts()), Err(PoolError::NotAPool { .. })));
    assert_eq!(std::fs::metadata(&junk).unwrap().len(), 2 << 20);
    let s = Store::open(&p, &opts()).unwrap();
    assert!(matches!(Store::grow(&p, 64 << 20, &opts()), Err(PoolError::Open(OpenError::Locked { .. }))));
    drop(s);
    assert!(Store::grow(d.0.join("missing"), 8 << 20, &opts()).is_err());
    assert!(!d.0.join("missing").exists());
}

#[test]
fn a_pool_left_by_a_crash_is_recovered_then_grown() {
    let d = ShmDir::new("grow-crashed");
    let p = d.0.join("c.pool");
    let s = Store::open(&p, &opts().pool_size(4 << 20).create_if_missing(true)).unwrap();
    let mut model = Model::new();
    let mut next = 0;
    fill(&s, &mut model, &mut next);
    s.abandon();
    let g = Store::grow(&p, 8 << 20, &opts()).unwrap();
    assert!(g.new_heap_bytes > g.old_heap_bytes);
    let s = Store::open(&p, &opts()).unwrap();
    // Recovered before the grow, and (too full to close cleanly then)
    // once more after it, which closed it cleanly.
    assert!(s.stats().recoveries >= 1);
    assert!(s.stats().opened_clean);
    same(&s, &model, "grown after a crash");
}

/// What a crash image must show: every key, a clean check, a heap of the
/// old or the new size; and a grow run on it must end at the new size.
fn check_image(img: &[u8], model: &Model, sizes: (u64, u64), new_size: u64) -> bool {
    let vol = PersistOptions::default().with_backend(Backend::Volatile);
    let r = Arc::new(Region::anonymous(img.len(), &vol).unwrap());
    r.write(0, img);
    let s = Store::open_on(r.clone()).unwrap_or_else(|e| panic!("crash image does not open: {e}"));
    let heap = s.stats().heap_bytes;
    assert!(heap == sizes.0 || heap == sizes.1, "heap of {heap} bytes, expected {sizes:?}");
    same(&s, model, "crash image");
    s.close().unwrap();
    let g = Store::grow_on(r.clone(), new_size).unwrap();
    assert_eq!(g.new_heap_bytes, sizes.1);
    let s = Store::open_on(r).unwrap();
    assert_eq!(s.stats().heap_bytes, sizes.1);
    same(&s, model, "crash image grown again");
    heap == sizes.1
}

#[test]
fn a_crash_at_every_drain_of_a_grow_loses_nothing() {
    const OLD: u64 = 4 << 20;
    const NEW: u64 = 8 << 20;
    // A clean pool, full, grown once already so that this grow also moves
    // metadata that lies after the pages.
    let vol = PersistOptions::default().with_backend(Backend::Volatile);
    let r = Arc::new(Region::anonymous(NEW as usize, &vol).unwrap());
    let base = Arc::new(Region::anonymous(OLD as usize / 2, &vol).unwrap());
    let s = Store::create_on(base.clone(), 128 << 10).unwrap();
    let mut model = Model::new();
    let mut next = 0;
    fill(&s, &mut model, &mut next);
    s.close().unwrap();
    r.write(0, base.bytes(0, base.len() as usize));
    Store::grow_on(r.clone(), OLD).unwrap();
    let s = Store::open_on(r.clone()).unwrap();
    fill(&s, &mut model, &mut next);
    let old_heap = s.stats().heap_bytes;
    s.close().unwrap();

    // The heap size the grow ends at, from a grow of a copy.
    let copy = Arc::new(Region::anonymous(NEW as usize, &vol).unwrap());
    copy.write(0, r.bytes(0, NEW as usize));
    let new_heap = Store::grow_on(copy, NEW).unwrap().new_heap_bytes;
    assert!(new_heap > old_heap);

    let sim = Arc::new(Region::sim(r.bytes(0, NEW as usize), SimConfig::default()));
    let seen = Arc::new(Mutex::new((0u64, 0u64, 0u64)));
    {
        let (model, seen) = (model.clone(), seen.clone());
        sim.simulator().unwrap().set_hook(move |cp| {
            let mut grown = 0;
            let n = cp.for_each_image(|img, _| {
                grown += u64::from(check_image(img, &model, (old_heap, new_heap), NEW));
                ControlFlow::Continue(())
            });
            let mut s = seen.lock().unwrap();
            s.0 += 1;
            s.1 += n;
            s.2 += grown;
        });
    }
    let g = Store::grow_on(sim.clone(), NEW).unwrap();
    sim.simulator().unwrap().clear_hook();
    let s = Store::open_on(sim).unwrap();
    same(&s, &model, "after the grow");
    assert_eq!(s.stats().heap_bytes, new_heap);
    assert_eq!(g.new_heap_bytes, new_heap);
    let (points, images, grown) = *seen.lock().unwrap();
    eprintln!("POINTS {points} {images} {grown}");
    // The superblock's two drains and the switch's.
    assert_eq!(points, 3, "crash points");
    assert!(grown > 0 && grown < images, "{grown} of {images} images had the grown heap");
}
