//! The persistent allocator against a model: no overlap, contents kept,
//! exact accounting, full-heap behaviour, clean close and reopen, and two
//! threads hammering it.

use daxkv_alloc::{AllocError, Backend, Heap, PersistOptions, Region, block_size_for};
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

fn region(len: usize) -> Arc<Region> {
    Arc::new(Region::anonymous(len, &PersistOptions::default().with_backend(Backend::Volatile)).unwrap())
}

/// A pattern byte for block `id` at position `i`.
fn pat(id: u64, i: u64) -> u8 {
    (id.wrapping_mul(0x9e37_79b9).wrapping_add(i.wrapping_mul(31)) >> 3) as u8
}

/// Positions of a block that the test writes and checks: all of a small
/// block, edges and a stride of a large one.
fn probe_points(len: u64) -> Vec<u64> {
    if len <= 64 * 1024 {
        (0..len).collect()
    } else {
        let mut v: Vec<u64> = (0..4096).chain(len - 4096..len).collect();
        v.extend((4096..len - 4096).step_by(65_537));
        v
    }
}

fn fill(r: &Region, off: u64, len: u64, id: u64) {
    if len <= 64 * 1024 {
        let buf: Vec<u8> = (0..len).map(|i| pat(id, i)).collect();
        r.write(off, &buf);
    } else {
        for p in probe_points(len) {
            r.write(off + p, &[pat(id, p)]);
        }
    }
}

fn verify(r: &Region, off: u64, len: u64, id: u64) {
    if len <= 64 * 1024 {
        let got = r.bytes(off, len as usize);
        for (i, &b) in got.iter().enumerate() {
            assert_eq!(b, pat(id, i as u64), "block {id} at {off} byte {i} changed");
        }
    } else {
        for p in probe_points(len) {
            assert_eq!(r.bytes(off + p, 1)[0], pat(id, p), "block {id} at {off} byte {p} changed");
        }
    }
}

struct Model {
    live: BTreeMap<u64, (u64, u64, u64)>, // off -> (requested, usable, id)
}

impl Model {
    fn check_no_overlap(&self) {
        let mut end = 0;
        for (&off, &(_, usable, _)) in &self.live {
            assert!(off >= end, "block at {off} overlaps the previous one ending at {end}");
            end = off + usable;
        }
    }
    fn usable_total(&self) -> u64 {
        self.live.values().map(|v| v.1).sum()
    }
}

fn random_size(rng: &mut StdRng) -> usize {
    match rng.gen_range(0..100) {
        0..=59 => rng.gen_range(1..=256),
        60..=84 => rng.gen_range(257..=16 * 1024),
        85..=97 => rng.gen_range(16 * 1024 + 1..=1 << 20),
        _ => rng.gen_range(1 << 20..=64 << 20),
    }
}

#[test]
fn random_alloc_free_against_a_model() {
    let r = region(640 << 20);
    let heap = Heap::format(r.clone(), 0, r.len()).unwrap();
    let heap_bytes = heap.stats().heap_bytes;
    let mut m = Model { live: BTreeMap::new() };
    let mut rng = StdRng::seed_from_u64(7);
    let mut next_id = 0u64;
    let mut fulls = 0;
    for step in 0..60_000u64 {
        let grow = if fulls % 2 == 1 { 20 } else { 60 }; // after a full heap, drain
        if rng.gen_range(0..100) < grow || m.live.is_empty() {
            let size = random_size(&mut rng);
            match heap.alloc(size) {
                Ok(off) => {
                    let usable = heap.usable_size(off).unwrap();
                    assert!(usable >= size as u64);
                    if let Some((&prev, &(_, pu, _))) = m.live.range(..off).next_back() {
                        assert!(prev + pu <= off, "new block {off} overlaps live block {prev}");
                    }
                    if let Some((&nxt, _)) = m.live.range(off..).next() {
                        assert!(off + usable <= nxt, "new block {off}+{usable} overlaps live block {nxt}");
                    }
                    fill(&r, off, usable, next_id);
                    m.live.insert(off, (size as u64, usable, next_id));
                    next_id += 1;
                }
                Err(AllocError::PoolFull { requested, .. }) => {
                    assert_eq!(requested, size as u64);
                    if fulls % 2 == 0 {
                        fulls += 1;
                    }
                }
                Err(e) => panic!("unexpected {e}"),
            }
        } else {
            let k = rng.gen_range(0..m.live.len());
            let (&off, &(_, usable, id)) = m.live.iter().nth(k).unwrap();
            verify(&r, off, usable, id);
            heap.free(off).unwrap();
            m.live.remove(&off);
            if fulls % 2 == 1 && m.live.len() < 50 {
                fulls += 1; // drained: grow again
            }
        }
        if step % 2000 == 0 {
            m.check_no_overlap();
            let s = heap.stats();
            assert_eq!(s.live_bytes, m.usable_total(), "live bytes at step {step}");
            assert_eq!(s.live_bytes + s.retired_bytes + s.free_bytes, s.heap_bytes);
            assert_eq!(s.heap_bytes, heap_bytes);
            let audited = heap.audit(m.live.keys().copied()).unwrap();
            assert_eq!(audited, m.live.len() as u64);
        }
    }
    assert!(fulls >= 2, "the test must reach a full heap (reached {fulls})");
    for (&off, &(_, usable, id)) in &m.live {
        verify(&r, off, usable, id);
    }
    // Free everything: the whole heap is free again.
    for &off in m.live.keys() {
        heap.free(off).unwrap();
    }
    let s = heap.stats();
    assert_eq!((s.live_bytes, s.retired_bytes, s.free_bytes), (0, 0, s.heap_bytes));
    assert!(heap.audit([]).is_ok());
}

#[test]
fn full_heap_is_an_error_and_stays_usable() {
    let r = region(4 << 20);
    let heap = Heap::format(r.clone(), 0, r.len()).unwrap();
    let mut blocks = Vec::new();
    let err = loop {
        match heap.alloc(1000) {
            Ok(o) => blocks.push(o),
            Err(e) => break e,
        }
    };
    assert!(matches!(err, AllocError::PoolFull { requested: 1000, .. }), "{err}");
    assert!(matches!(heap.alloc(1 << 20), Err(AllocError::PoolFull { .. })));
    // Frees work, and then so do allocations of another size.
    for o in blocks.drain(..) {
        heap.free(o).unwrap();
    }
    let big = heap.alloc(2 << 20).expect("slabs of freed blocks are released to large extents");
    heap.free(big).unwrap();
    let s = heap.stats();
    assert_eq!(s.free_bytes, s.heap_bytes);
}

/// `audit` names each way the owner's reachable set can disagree with the
/// heap, small blocks and large extents alike.
#[test]
fn audit_reports_every_disagreement() {
    let r = region(16 << 20);
    let heap = Heap::format(r.clone(), 0, r.len()).unwrap();
    let small: Vec<u64> = (0..500).map(|i| heap.alloc(50 + i % 300).unwrap()).collect();
    let large = heap.alloc(200_000).unwrap();
    let all: Vec<u64> = small.iter().copied().chain([large]).collect();
    assert_eq!(heap.audit(all.iter().copied()).unwrap(), all.len() as u64);
    // In any order.
    assert_eq!(heap.audit(all.iter().rev().copied()).unwrap(), all.len() as u64);

    let e = heap.audit(all.iter().copied().chain([small[7]])).unwrap_err();
    assert!(e.contains("reachable twice") && e.contains(&small[7].to_string()), "{e}");
    for missing in [small[0], small[250], large] {
        let e = heap.audit(all.iter().copied().filter(|&o| o != missing)).unwrap_err();
        assert!(e.contains("1 allocated blocks are unreachable (leak)") && e.contains(&missing.to_string()), "{e}");
    }
    let e = heap.audit(all.iter().copied().filter(|&o| o != small[1] && o != small[2])).unwrap_err();
    assert!(e.starts_with("2 allocated blocks"), "{e}");
    // A freed block (now in the thread's cache), a freed extent, and an
    // offset that was never a block are not allocated.
    heap.free(small[3]).unwrap();
    let e = heap.audit(all.iter().copied()).unwrap_err();
    assert!(e.contains(&format!("reachable block {} is not allocated", small[3])), "{e}");
    let live: Vec<u64> = all.iter().copied().filter(|&o| o != small[3]).collect();
    assert!(heap.audit(live.iter().copied()).is_ok());
    let e = heap.audit(live.iter().copied().chain([large + 8])).unwrap_err();
    assert!(e.contains("is not allocated"), "{e}");
    heap.free(large).unwrap();
    let e = heap.audit(live.iter().copied()).unwrap_err();
    assert!(e.contains(&format!("reachable block {large} is not allocated")), "{e}");
    let live: Vec<u64> = live.into_iter().filter(|&o| o != large).collect();
    // A retired block waits for readers: unreachable is fine, reachable
    // is not.
    let _pin = heap.pin();
    heap.retire(small[4]).unwrap();
    let e = heap.audit(live.iter().copied()).unwrap_err();
    assert!(e.contains(&format!("reachable block {} was retired", small[4])), "{e}");
    assert!(heap.audit(live.iter().copied().filter(|&o| o != small[4])).is_ok());
}

#[test]
fn invalid_frees_are_typed_errors() {
    let r = region(4 << 20);
    let heap = Heap::format(r.clone(), 0, r.len()).unwrap();
    let a = heap.alloc(100).unwrap();
    assert!(matches!(heap.free(a + 1), Err(AllocError::InvalidFree { .. })));
    assert!(matches!(heap.free(0), Err(AllocError::InvalidFree { .. })));
    assert!(matches!(heap.free(u64::MAX), Err(AllocError::InvalidFree { .. })));
    let big = heap.alloc(100_000).unwrap();
    heap.free(big).unwrap();
    assert!(matches!(heap.free(big), Err(AllocError::InvalidFree { .. })), "double free of an extent");
}

#[test]
fn clean_close_and_open_without_walk() {
    let r = region(64 << 20);
    let heap = Heap::format(r.clone(), 4096, r.len() - 4096).unwrap();
    let mut rng = StdRng::seed_from_u64(3);
    let mut live: HashMap<u64, (u64, u64)> = HashMap::new();
    for id in 0..5000u64 {
        let size = if id % 50 == 0 { rng.gen_range(20_000..300_000) } else { rng.gen_range(1..2000) };
        let off = heap.alloc(size).unwrap();
        let usable = heap.usable_size(off).unwrap();
        fill(&r, off, usable, id);
        live.insert(off, (usable, id));
        if id % 3 == 0 {
            let victim = *live.keys().next().unwrap();
            heap.free(victim).unwrap();
            live.remove(&victim);
        }
    }
    let before = heap.stats();
    heap.close().unwrap();
    drop(heap);

    let heap = Heap::open_clean(r.clone(), 4096, r.len() - 4096).unwrap();
    let after = heap.stats();
    assert_eq!(after.live_bytes, before.live_bytes);
    assert_eq!(after.live_bytes, live.values().map(|v| v.0).sum::<u64>());
    assert_eq!(heap.audit(live.keys().copied()).unwrap(), live.len() as u64);
    for (&off, &(usable, id)) in &live {
        verify(&r, off, usable, id);
        assert_eq!(heap.usable_size(off), Some(usable));
    }
    // New allocations never land on a live block.
    for _ in 0..2000 {
        let off = heap.alloc(rng.gen_range(1..5000)).unwrap();
        let u = heap.usable_size(off).unwrap();
        for (&o, &(ou, _)) in &live {
            assert!(off + u <= o || o + ou <= off, "new block {off} overlaps live {o}");
        }
    }
}

#[test]
fn recovery_from_a_reachable_set() {
    let r = region(16 << 20);
    let heap = Heap::format(r.clone(), 0, r.len()).unwrap();
    let mut keep = Vec::new();
    for i in 0..3000u64 {
        let off = heap.alloc(if i % 100 == 0 { 40_000 } else { (i % 700 + 1) as usize }).unwrap();
        if i % 2 == 0 {
            keep.push(off);
        }
    }
    drop(heap); // a crash: nothing saved
    let heap = Heap::recover(r.clone(), 0, r.len(), keep.iter().copied()).unwrap();
    assert_eq!(heap.audit(keep.iter().copied()).unwrap(), keep.len() as u64);
    // The unreachable half is free again: allocating it all back works.
    let s = heap.stats();
    assert_eq!(s.live_bytes + s.free_bytes, s.heap_bytes);
    // A reachable offset that is not a block is corruption, not a panic.
    assert!(Heap::recover(r.clone(), 0, r.len(), [keep[1] + 1]).is_err());
    assert!(Heap::recover(r.clone(), 0, r.len(), [keep[1], keep[1]]).is_err());
    assert!(Heap::recover(r.clone(), 0, r.len(), [u64::MAX]).is_err());
}

/// Recovery reads the descriptors of a slab once, when it meets the slab's
/// first reachable block; it checks every page of it then, so damage on a
/// page no reachable block lies in is found too.
#[test]
fn recovery_checks_every_page_of_a_reachable_slab() {
    let r = region(16 << 20);
    let heap = Heap::format(r.clone(), 0, r.len()).unwrap();
    let keep: Vec<u64> = (0..20).map(|_| heap.alloc(100).unwrap()).collect();
    drop(heap);
    // Heap header: magic, pages, descriptor table, bitmaps, first page.
    let (desc_off, pages_off) = (r.read_u64(16), r.read_u64(32));
    let page = (keep[0] - pages_off) / 4096;
    let d = r.read_u64(desc_off + page * 8);
    let head = if d & 0xff == 1 { page } else { page - (d >> 16) };
    // All twenty blocks share one slab, in its first page.
    assert!(keep.iter().all(|&o| (o - pages_off) / 4096 == head), "{keep:?}");
    assert!(Heap::recover(r.clone(), 0, r.len(), keep.iter().copied()).is_ok());
    let at = desc_off + (head + 9) * 8;
    let good = r.read_u64(at);
    assert_eq!(good, 3 | 9 << 16, "a continuation page names its distance from the head");
    for bad in [0, good ^ 1 << 16, good ^ 1, 2 | 1 << 16] {
        r.store_u64(at, bad);
        let e = Heap::recover(r.clone(), 0, r.len(), keep.iter().copied()).unwrap_err();
        assert!(e.to_string().contains("misdescribed"), "{bad:#x}: {e}");
    }
    r.store_u64(at, good);
    let heap = Heap::recover(r.clone(), 0, r.len(), keep.iter().copied()).unwrap();
    assert_eq!(heap.audit(keep.iter().copied()).unwrap(), keep.len() as u64);
}

/// A saved slab bitmap with a live bit past the slab's last block is
/// damage: open refuses it instead of counting a block that is not there.
#[test]
fn clean_open_refuses_a_live_bit_past_a_slab() {
    let r = region(16 << 20);
    let heap = Heap::format(r.clone(), 0, r.len()).unwrap();
    // A class whose slab's block count is not a multiple of 64.
    let size = (1..=2048).map(block_size_for).find(|&b| (65536 / b) % 64 != 0).unwrap();
    let off = heap.alloc(size as usize).unwrap();
    heap.close().unwrap();
    drop(heap);
    let (desc_off, bitmap_off, pages_off) = (r.read_u64(16), r.read_u64(24), r.read_u64(32));
    let page = (off - pages_off) / 4096;
    let d = r.read_u64(desc_off + page * 8);
    let head = if d & 0xff == 1 { page } else { page - (d >> 16) };
    let cap = 65536 / size;
    let last = bitmap_off + head * 32 + (cap / 64) * 8;
    let good = r.read_u64(last);
    assert!(Heap::open_clean(r.clone(), 0, r.len()).is_ok());
    r.store_u64(last, good | 1 << (cap % 64));
    let e = Heap::open_clean(r.clone(), 0, r.len()).unwrap_err();
    assert!(e.to_string().contains("past the end"), "{e}");
}

#[test]
fn foreign_area_is_rejected() {
    let r = region(4 << 20);
    r.write(0, b"not a heap at all");
    let e = Heap::open_clean(r.clone(), 0, r.len()).unwrap_err();
    assert!(e.to_string().contains("magic"), "{e}");
    assert!(Heap::recover(r.clone(), 0, r.len(), []).is_err());
    assert!(Heap::format(r.clone(), 0, 1000).is_err());
}

#[test]
fn retired_blocks_wait_for_pinned_readers() {
    let r = region(8 << 20);
    let heap = Heap::format(r.clone(), 0, r.len()).unwrap();
    let a = heap.alloc(64).unwrap();
    let reader = heap.pin();
    heap.retire(a).unwrap();
    for _ in 0..10 {
        heap.collect();
    }
    // While the reader is pinned, `a` is not handed out again.
    let mut got = Vec::new();
    for _ in 0..10_000 {
        got.push(heap.alloc(64).unwrap());
    }
    assert!(!got.contains(&a), "a retired block was reused under a pinned reader");
    assert_eq!(heap.stats().retired_bytes, 64);
    drop(reader);
    for o in got {
        heap.free(o).unwrap();
    }
    for _ in 0..4 {
        heap.collect();
    }
    let s = heap.stats();
    assert_eq!((s.retired_bytes, s.live_bytes), (0, 0));
}

#[test]
fn two_threads_ten_million_blocks_each() {
    let r = region(256 << 20);
    let heap = Heap::format(r.clone(), 0, r.len()).unwrap();
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u64>>(64);
    let h1 = heap.clone();
    // Thread A allocates and frees its own blocks, and passes every 16th
    // block to thread B, which frees it (cross-thread frees).
    let a = std::thread::spawn(move || {
        let mut window = Vec::with_capacity(1024);
        let mut pass = Vec::with_capacity(256);
        for i in 0..10_000_000u64 {
            let off = h1.alloc((i % 240 + 1) as usize).unwrap();
            if i % 16 == 0 {
                pass.push(off);
                if pass.len() == 256 {
                    tx.send(std::mem::take(&mut pass)).unwrap();
                }
            } else {
                window.push(off);
                if window.len() == 1024 {
                    for o in window.drain(..) {
                        h1.free(o).unwrap();
                    }
                }
            }
        }
        for o in window {
            h1.free(o).unwrap();
        }
        tx.send(pass).unwrap();
    });
    let h2 = heap.clone();
    let b = std::thread::spawn(move || {
        let mut window = Vec::with_capacity(512);
        for i in 0..10_000_000u64 {
            let off = h2.alloc((i % 200 + 16) as usize).unwrap();
            window.push(off);
            if window.len() == 512 {
                for o in window.drain(..) {
                    h2.free(o).unwrap();
                }
            }
            if i % 4096 == 0 {
                while let Ok(batch) = rx.try_recv() {
                    for o in batch {
                        h2.free(o).unwrap();
                    }
                }
            }
        }
        for o in window {
            h2.free(o).unwrap();
        }
        for batch in rx {
            for o in batch {
                h2.free(o).unwrap();
            }
        }
    });
    a.join().unwrap();
    b.join().unwrap();
    let s = heap.stats();
    assert_eq!(s.live_bytes, 0);
    assert_eq!(s.free_bytes, s.heap_bytes);
    assert!(heap.audit([]).is_ok());
}

/// `stats` and `audit` read every thread's cache while threads retire
/// blocks (which takes a thread's cache and then the list of caches, once
/// enough are waiting): neither may wait on the other for ever.
#[test]
fn stats_and_audit_beside_retiring_threads() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;
    let heap = Heap::format(region(64 << 20), 0, 64 << 20).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (done, finished) = std::sync::mpsc::channel::<()>();
    for t in 0..3 {
        let (heap, stop, done) = (heap.clone(), stop.clone(), done.clone());
        std::thread::spawn(move || {
            let mut live = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match t {
                    0 => {
                        for _ in 0..1000 {
                            let off = heap.alloc(64).unwrap();
                            heap.retire(off).unwrap();
                        }
                    }
                    1 => {
                        std::hint::black_box(heap.stats());
                    }
                    _ => {
                        live.push(heap.alloc(48).unwrap());
                        // Every block this thread holds is reachable; the
                        // other threads' are cached or retired, and an
                        // audit that races them may report them: only its
                        // locking is under test here.
                        let _ = std::hint::black_box(heap.audit(live.iter().copied()));
                    }
                }
            }
            drop(done);
        });
    }
    drop(done);
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    // Every thread gone: the channel disconnects. A deadlock: the wait times out.
    match finished.recv_timeout(Duration::from_secs(20)) {
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {}
        other => panic!("threads did not stop: stats or audit deadlocked ({other:?})"),
    }
}

/// A prefetch hint may be any address, up to the very top.
#[test]
fn prefetch_hints_at_any_address() {
    for addr in [0usize, 1, 63, 64, 4096, usize::MAX - 200, usize::MAX - 64, usize::MAX - 10, usize::MAX] {
        for len in [0usize, 1, 64, 65, 1000] {
            Region::prefetch_addr(addr, len);
        }
    }
}

/// A prefetch of a range may start anywhere, up to the very top: a damaged
/// record offset near u64::MAX once made the line loop wrap and run for
/// ever (recovery and scans prefetch a slot's record before checking it).
#[test]
fn prefetch_ranges_at_any_offset() {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = region(1 << 20);
        for off in [0u64, 63, (1 << 20) - 1, 1 << 20, 1 << 40, u64::MAX - 200, u64::MAX - 64, u64::MAX - 63, u64::MAX] {
            for len in [0u64, 1, 64, 65, 128, 1000, u64::MAX] {
                r.prefetch_range(off, len);
            }
        }
        tx.send(()).unwrap();
    });
    rx.recv_timeout(std::time::Duration::from_secs(20)).expect("prefetch_range returned");
}
