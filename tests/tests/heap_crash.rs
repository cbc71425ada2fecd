//! The allocator under the crash simulator: a workload allocates blocks,
//! publishes them in a small persistent root table, and frees them. At
//! every drain, every crash image is recovered with the root table as the
//! reachability walk, and must show: every published block intact, nothing
//! leaked (live + free = heap, audit clean), and nothing reachable handed
//! out again.

use daxkv_alloc::sim::SimConfig;
use daxkv_alloc::{AllocError, Backend, Heap, PersistOptions, Region};
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};

const POOL: usize = 4 << 20;
const SLOTS: u64 = 32;
const HEAP_OFF: u64 = 4096;

fn payload(len: u64, seed: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(len as usize);
    v.extend_from_slice(&len.to_le_bytes());
    v.extend_from_slice(&seed.to_le_bytes());
    let mut x = seed | 1;
    while (v.len() as u64) < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(x as u8);
    }
    v
}

/// The slot values the oracle accepts at a crash during the current op.
#[derive(Default, Clone)]
struct Oracle {
    before: Vec<u64>,
    after: Vec<u64>,
    op: u64,
}

struct Stats {
    points: u64,
    images: u64,
}

fn check_image(r: &Arc<Region>, img: &[u8], o: &Oracle) {
    r.write(0, img);
    let slots: Vec<u64> = (0..SLOTS).map(|i| r.read_u64(i * 8)).collect();
    for (i, &s) in slots.iter().enumerate() {
        assert!(
            s == o.before[i] || s == o.after[i],
            "op {}: slot {i} = {s} is neither the value before ({}) nor after ({}) the op",
            o.op,
            o.before[i],
            o.after[i]
        );
    }
    let reachable: Vec<u64> = slots.iter().copied().filter(|&s| s != 0).collect();
    // Every published block is intact.
    let mut ranges = Vec::new();
    for &off in &reachable {
        let len = r.read_u64(off);
        let seed = r.read_u64(off + 8);
        assert!((16..64 * 1024).contains(&len), "op {}: block {off} has a torn header (len {len})", o.op);
        assert_eq!(r.bytes(off, len as usize), &payload(len, seed)[..], "op {}: block {off} torn", o.op);
        ranges.push((off, len));
    }
    let heap = Heap::recover(r.clone(), HEAP_OFF, POOL as u64 - HEAP_OFF, reachable.iter().copied())
        .unwrap_or_else(|e| panic!("op {}: recovery failed: {e}", o.op));
    heap.audit(reachable.iter().copied()).unwrap_or_else(|e| panic!("op {}: audit: {e}", o.op));
    let s = heap.stats();
    assert_eq!(s.live_bytes + s.free_bytes, s.heap_bytes, "op {}: leak in accounting", o.op);
    // Fill the heap: no new block may touch a reachable one.
    let mut n = 0;
    loop {
        match heap.alloc(if n % 2 == 0 { 3000 } else { 200 }) {
            Ok(off) => {
                let u = heap.usable_size(off).unwrap();
                for &(ro, rl) in &ranges {
                    assert!(off + u <= ro || ro + rl <= off, "op {}: reachable block {ro} handed out again", o.op);
                }
                r.write(off, &vec![0xee; u as usize]);
                n += 1;
            }
            Err(AllocError::PoolFull { .. }) => break,
            Err(e) => panic!("{e}"),
        }
    }
    for &(off, len) in &ranges {
        assert_eq!(r.read_u64(off), len, "op {}: reachable block {off} overwritten", o.op);
    }
}

#[test]
fn crash_at_every_drain_recovers_without_leaks() {
    let r = Arc::new(Region::sim(&vec![0u8; POOL], SimConfig::default()));
    let heap = Heap::format(r.clone(), HEAP_OFF, POOL as u64 - HEAP_OFF).unwrap();
    r.drain().unwrap(); // the owner makes the format durable before using it
    let oracle =
        Arc::new(Mutex::new(Oracle { before: vec![0; SLOTS as usize], after: vec![0; SLOTS as usize], op: 0 }));
    let stats = Arc::new(Mutex::new(Stats { points: 0, images: 0 }));
    {
        let (oracle, stats) = (oracle.clone(), stats.clone());
        // One scratch region, rewritten with each image.
        let scratch =
            Arc::new(Region::anonymous(POOL, &PersistOptions::default().with_backend(Backend::Volatile)).unwrap());
        r.simulator().unwrap().set_hook(move |cp| {
            let o = oracle.lock().unwrap().clone();
            let n = cp.for_each_image(|img, _| {
                check_image(&scratch, img, &o);
                ControlFlow::Continue(())
            });
            let mut s = stats.lock().unwrap();
            s.points += 1;
            s.images += n;
        });
    }
    let mut rng = StdRng::seed_from_u64(11);
    let mut slots = vec![0u64; SLOTS as usize];
    for op in 0..400u64 {
        let i = rng.gen_range(0..SLOTS as usize);
        let mut after = slots.clone();
        let old = slots[i];
        let replace = old == 0 || rng.gen_bool(0.5);
        let new_block = if replace {
            let len = if rng.gen_range(0..10) == 0 { rng.gen_range(16_500..40_000) } else { rng.gen_range(16..3000) };
            let off = heap.alloc(len as usize).unwrap();
            after[i] = off;
            Some((off, len))
        } else {
            after[i] = 0;
            None
        };
        *oracle.lock().unwrap() = Oracle { before: slots.clone(), after: after.clone(), op };
        if let Some((off, len)) = new_block {
            r.copy_nodrain(off, &payload(len, op));
            r.drain().unwrap(); // payload (and any new descriptor) durable
        }
        r.store_u64(i as u64 * 8, after[i]);
        r.persist(i as u64 * 8, 8).unwrap(); // the publish is durable
        if old != 0 {
            heap.free(old).unwrap();
        }
        slots = after;
        // Acknowledged: from now on only the new state is acceptable.
        *oracle.lock().unwrap() = Oracle { before: slots.clone(), after: slots.clone(), op };
    }
    let s = stats.lock().unwrap();
    eprintln!("heap crash test: {} crash points, {} images", s.points, s.images);
    assert!(s.points >= 600, "crash points {}", s.points);
    assert!(s.images >= 10_000, "images {}", s.images);
}

/// Blocks that `alloc_untouched` calls untouched are zero on media, also
/// when their slab was carved from pages that held other blocks before:
/// a one-drain insert relies on it (a torn record must show zeros, never
/// an older record that would pass its checksum).
#[test]
fn untouched_blocks_are_zero_on_media_after_reuse() {
    let r = Arc::new(Region::sim(&vec![0u8; POOL], SimConfig::default()));
    let heap = Heap::format(r.clone(), HEAP_OFF, POOL as u64 - HEAP_OFF).unwrap();
    r.drain().unwrap();
    // Fill the heap with 128-byte blocks of a non-zero pattern, durably.
    let mut blocks = Vec::new();
    loop {
        match heap.alloc(128) {
            Ok(off) => {
                r.copy_nodrain(off, &[0xab; 128]);
                blocks.push(off);
            }
            Err(AllocError::PoolFull { .. }) => break,
            Err(e) => panic!("alloc: {e}"),
        }
    }
    r.drain().unwrap();
    assert!(blocks.len() > 1000, "only {} blocks", blocks.len());
    // Free them all: empty slabs go back to the page pool, and new slabs
    // of other classes (and of this one) are carved from those pages.
    for &off in &blocks {
        heap.free(off).unwrap();
    }
    let (mut untouched, mut reused) = (0, 0);
    for size in [96usize, 128, 200] {
        loop {
            match heap.alloc_untouched(size) {
                Ok((off, true)) => {
                    let img = r.simulator().unwrap().persisted_image();
                    let on_media = &img[off as usize..off as usize + size];
                    assert!(on_media.iter().all(|&b| b == 0), "untouched block {off} ({size} B) is not zero on media");
                    untouched += 1;
                }
                Ok((_, false)) => reused += 1,
                Err(AllocError::PoolFull { .. }) => break,
                Err(e) => panic!("alloc: {e}"),
            }
            if untouched + reused > 3 * blocks.len() {
                break;
            }
        }
    }
    assert!(untouched > 1000, "untouched {untouched}, reused {reused}");
}
