//! Growing a closed heap: blocks and their contents stay, the new pages
//! are free, the saved bitmaps move along, and a heap can grow again. A
//! grow that is prepared but not committed leaves the heap as it was.

use daxkv_alloc::{AllocError, Backend, GrowPlan, Heap, HeapError, PersistOptions, Region};
use std::collections::HashMap;
use std::sync::Arc;

const AREA: u64 = 4096;

fn region(len: usize) -> Arc<Region> {
    Arc::new(Region::anonymous(len, &PersistOptions::default().with_backend(Backend::Volatile)).unwrap())
}

fn pattern(off: u64, len: u64) -> Vec<u8> {
    (0..len).map(|i| (off.wrapping_mul(31).wrapping_add(i * 7) >> 2) as u8).collect()
}

/// Fill the heap with blocks of mixed sizes until it is full; returns the
/// bytes handed out. Every block holds a pattern of its offset.
fn fill_up(r: &Region, heap: &Heap, live: &mut HashMap<u64, u64>) -> u64 {
    let mut got = 0;
    for i in 0u64.. {
        let size = match i % 10 {
            0 => 50_000,
            1..=4 => 600,
            _ => 120,
        };
        match heap.alloc(size) {
            Ok(off) => {
                let u = heap.usable_size(off).unwrap();
                r.write(off, &pattern(off, u));
                live.insert(off, u);
                got += u;
            }
            Err(AllocError::PoolFull { .. }) if size > 120 => continue,
            Err(AllocError::PoolFull { .. }) => return got,
            Err(e) => panic!("{e}"),
        }
    }
    unreachable!()
}

fn verify(r: &Region, heap: &Heap, live: &HashMap<u64, u64>) {
    assert_eq!(heap.audit(live.keys().copied()).unwrap(), live.len() as u64);
    for (&off, &u) in live {
        assert_eq!(r.bytes(off, u as usize), &pattern(off, u)[..], "block {off} changed");
        assert_eq!(heap.usable_size(off), Some(u));
    }
    let s = heap.stats();
    assert_eq!(s.live_bytes + s.free_bytes, s.heap_bytes);
}

fn grow(r: &Region, len: u64, new_len: u64) -> GrowPlan {
    let plan = GrowPlan::prepare(r, AREA, len, new_len).unwrap();
    plan.commit(r).unwrap();
    plan
}

#[test]
fn grown_heap_keeps_blocks_and_adds_room_twice() {
    let total = 64u64 << 20;
    let r = region(total as usize);
    let mut len = 8 << 20;
    let heap = Heap::format(r.clone(), AREA, len).unwrap();
    let mut live = HashMap::new();
    fill_up(&r, &heap, &mut live);
    // Free a third, so that the saved bitmaps have holes to carry over.
    let victims: Vec<u64> = live.keys().copied().filter(|o| o % 3 == 0).collect();
    for v in victims {
        heap.free(v).unwrap();
        live.remove(&v);
    }
    let mut before = heap.stats().heap_bytes;
    heap.close().unwrap();
    drop(heap);

    for (step, new_len) in [(1, 24u64 << 20), (2, total - AREA)] {
        let plan = grow(&r, len, new_len);
        assert_eq!(plan.old_bytes(), before);
        before = plan.new_bytes();
        assert!(plan.new_bytes() > plan.old_bytes());
        len = new_len;
        let heap = Heap::open_clean(r.clone(), AREA, len).unwrap();
        assert_eq!(heap.stats().heap_bytes, plan.new_bytes());
        verify(&r, &heap, &live);
        // The new pages are free, and none of them overlaps a live block.
        let more = fill_up(&r, &heap, &mut live);
        assert!(more > plan.new_bytes() - plan.old_bytes() - (2 << 20), "step {step}: only {more} bytes more");
        verify(&r, &heap, &live);
        heap.close().unwrap();
        drop(heap);
        // The crash path finds the same blocks in the grown layout.
        let heap = Heap::recover(r.clone(), AREA, len, live.keys().copied()).unwrap();
        verify(&r, &heap, &live);
        heap.close().unwrap();
    }
}

#[test]
fn a_prepared_grow_not_committed_leaves_the_heap_as_it_was() {
    let r = region(32 << 20);
    let len = 8 << 20;
    let heap = Heap::format(r.clone(), AREA, len).unwrap();
    let mut live = HashMap::new();
    fill_up(&r, &heap, &mut live);
    let bytes = heap.stats().heap_bytes;
    heap.close().unwrap();
    drop(heap);
    let plan = GrowPlan::prepare(&r, AREA, len, 30 << 20).unwrap();
    // The owner recorded the larger area, then crashed before the commit.
    let heap = Heap::open_clean(r.clone(), AREA, 30 << 20).unwrap();
    assert_eq!(heap.stats().heap_bytes, bytes);
    verify(&r, &heap, &live);
    heap.close().unwrap();
    drop(heap);
    // Growing again finishes the job.
    let again = GrowPlan::prepare(&r, AREA, 30 << 20, 30 << 20).unwrap();
    assert_eq!(again.new_bytes(), plan.new_bytes());
    again.commit(&r).unwrap();
    let heap = Heap::open_clean(r.clone(), AREA, 30 << 20).unwrap();
    assert_eq!(heap.stats().heap_bytes, plan.new_bytes());
    verify(&r, &heap, &live);
}

#[test]
fn too_small_a_grow_is_refused_with_the_size_that_works() {
    let r = region(64 << 20);
    let len = 8 << 20;
    let heap = Heap::format(r.clone(), AREA, len).unwrap();
    heap.close().unwrap();
    drop(heap);
    let image = r.bytes(0, r.len() as usize).to_vec();
    let e = GrowPlan::prepare(&r, AREA, len, len + 4096).unwrap_err();
    let HeapError::GrowTooSmall { needed, .. } = e else { panic!("{e}") };
    assert_eq!(r.bytes(0, r.len() as usize), &image[..], "a refused grow wrote");
    assert!(GrowPlan::prepare(&r, AREA, len, needed - 4096).is_err());
    grow(&r, len, needed);
    // A grown heap's next grow must clear its metadata, which now sits at
    // the end of the area.
    let e = GrowPlan::prepare(&r, AREA, needed, needed + 65536).unwrap_err();
    let HeapError::GrowTooSmall { needed: next, .. } = e else { panic!("{e}") };
    assert!(next > needed + 65536);
    grow(&r, needed, next);
    let heap = Heap::open_clean(r.clone(), AREA, next).unwrap();
    assert!(heap.stats().heap_bytes > (8 << 20) - 65536);
}

#[test]
fn a_damaged_grown_word_is_refused() {
    let r = region(32 << 20);
    let heap = Heap::format(r.clone(), AREA, 8 << 20).unwrap();
    heap.close().unwrap();
    drop(heap);
    grow(&r, 8 << 20, 30 << 20);
    assert!(Heap::open_clean(r.clone(), AREA, 30 << 20).is_ok());
    let at = AREA + 40;
    let good = r.read_u64(at);
    for bad in [good ^ 1, good ^ 1 << 20, good ^ 1 << 50, 16] {
        r.store_u64(at, bad);
        let e = Heap::open_clean(r.clone(), AREA, 30 << 20).unwrap_err();
        assert!(e.to_string().contains("grown"), "{bad:#x}: {e}");
    }
    r.store_u64(at, good);
    // A grown heap does not fit the area it had before.
    assert!(Heap::open_clean(r.clone(), AREA, 8 << 20).is_err());
    assert!(Heap::open_clean(r.clone(), AREA, 30 << 20).is_ok());
}
