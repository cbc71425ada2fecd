//! The crash simulator's semantics, each a property that a wrong simulator
//! would break: what may be lost, what may not, what may tear.

use daxkv_alloc::Region;
use daxkv_alloc::sim::{CrashPoint, SimConfig, SiteKind};
use std::collections::BTreeSet;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};

const LEN: usize = 64 * 1024;

/// Values that word `off` (8 bytes) takes across every image of every
/// crash point offered while `f` runs, one set per crash point.
fn word_values_at_crashes(r: &Region, offs: &[u64], f: impl FnOnce(&Region)) -> Vec<BTreeSet<Vec<u64>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let offs = offs.to_vec();
    r.simulator().unwrap().set_hook(move |cp: &CrashPoint<'_>| {
        let mut set = BTreeSet::new();
        cp.for_each_image(|img, _| {
            let vals = offs
                .iter()
                .map(|&o| u64::from_le_bytes(img[o as usize..o as usize + 8].try_into().unwrap()))
                .collect::<Vec<_>>();
            set.insert(vals);
            ControlFlow::Continue(())
        });
        s2.lock().unwrap().push(set);
    });
    f(r);
    r.simulator().unwrap().clear_hook();
    Arc::try_unwrap(seen).unwrap().into_inner().unwrap()
}

fn fresh() -> Region {
    Region::sim(&vec![0u8; LEN], SimConfig::default())
}

fn one(v: u64) -> Vec<u64> {
    vec![v]
}

#[test]
fn unflushed_store_may_be_lost_or_kept() {
    let r = fresh();
    let pts = word_values_at_crashes(&r, &[128], |r| {
        r.write_u64(128, 7);
        r.drain().unwrap(); // crash point 1: not flushed
        r.drain().unwrap(); // crash point 2: still not flushed
    });
    assert_eq!(pts.len(), 2);
    for p in &pts {
        assert_eq!(*p, BTreeSet::from([one(0), one(7)]), "an unflushed store is lost or kept at any crash");
    }
    // The drains did not make it durable.
    assert_eq!(r.simulator().unwrap().persisted_image()[128], 0);
}

#[test]
fn flushed_and_drained_store_is_never_lost() {
    let r = fresh();
    let pts = word_values_at_crashes(&r, &[128], |r| {
        r.write_u64(128, 7);
        r.flush(128, 8);
        r.drain().unwrap(); // crash point 1: flushed, undrained
        r.drain().unwrap(); // crash point 2: durable
    });
    assert_eq!(pts[0], BTreeSet::from([one(0), one(7)]), "flushed but undrained: either");
    assert_eq!(pts[1], BTreeSet::from([one(7)]), "flushed and drained: never lost");
}

#[test]
fn undrained_nt_copy_may_be_lost_or_kept_then_durable() {
    let r = fresh();
    let data: Vec<u8> = (0..512u32).map(|i| (i % 251) as u8 + 1).collect();
    let word = |i: usize| u64::from_le_bytes(data[i * 8..i * 8 + 8].try_into().unwrap());
    let pts = word_values_at_crashes(&r, &[4096, 4096 + 256], |r| {
        r.copy_nodrain(4096, &data);
        r.drain().unwrap();
        r.drain().unwrap();
    });
    assert!(pts[0].contains(&vec![0, 0]) && pts[0].contains(&vec![word(0), word(32)]));
    assert_eq!(pts[1], BTreeSet::from([vec![word(0), word(32)]]));
}

#[test]
fn aligned_8_byte_store_never_tears() {
    let r = fresh();
    r.store_u64(64, 0x1111_1111_1111_1111);
    r.persist(64, 8).unwrap();
    let pts = word_values_at_crashes(&r, &[64], |r| {
        r.store_u64(64, 0xeeee_eeee_eeee_eeee);
        r.flush(64, 8);
        r.drain().unwrap();
    });
    assert_eq!(pts[0], BTreeSet::from([one(0x1111_1111_1111_1111), one(0xeeee_eeee_eeee_eeee)]));
}

#[test]
fn sixteen_byte_store_can_tear_into_halves() {
    let r = fresh();
    let pts = word_values_at_crashes(&r, &[256, 264], |r| {
        r.write(256, &[0xab; 16]);
        r.flush(256, 16);
        r.drain().unwrap();
    });
    let ab = u64::from_le_bytes([0xab; 8]);
    assert_eq!(pts[0], BTreeSet::from([vec![0, 0], vec![ab, 0], vec![0, ab], vec![ab, ab]]));
}

#[test]
fn any_intermediate_value_may_be_evicted() {
    let r = fresh();
    let pts = word_values_at_crashes(&r, &[512], |r| {
        r.write_u64(512, 1);
        r.write_u64(512, 2);
        r.write_u64(512, 3);
        r.drain().unwrap();
    });
    assert_eq!(pts[0], BTreeSet::from([one(0), one(1), one(2), one(3)]));
}

#[test]
fn flush_captures_the_value_at_flush_time() {
    let r = fresh();
    let pts = word_values_at_crashes(&r, &[512], |r| {
        r.write_u64(512, 1);
        r.flush(512, 8);
        r.write_u64(512, 2); // written after the flush, never flushed
        r.drain().unwrap();
        r.drain().unwrap();
    });
    // After the first drain, 1 is durable; 2 may or may not be evicted.
    assert_eq!(pts[1], BTreeSet::from([one(1), one(2)]));
}

#[test]
fn a_switched_off_site_stops_persisting() {
    // Reference run: this site persists.
    fn workload(r: &Region) {
        r.write_u64(1024, 9);
        r.flush(1024, 8); // the site under test
        r.drain().unwrap();
    }
    let r = fresh();
    workload(&r);
    let persisted = r.simulator().unwrap().persisted_image();
    assert_eq!(persisted[1024], 9);
    let flush_site =
        r.simulator().unwrap().sites().into_iter().find(|(s, _)| s.kind == SiteKind::Flush).map(|(s, _)| s).unwrap();
    assert!(flush_site.file.ends_with("sim.rs"));

    let mut cfg = SimConfig::default();
    cfg.disabled.insert(flush_site);
    let r = Region::sim(&vec![0u8; LEN], cfg);
    workload(&r);
    assert_eq!(r.simulator().unwrap().persisted_image()[1024], 0, "a disabled flush must not persist");
    let pts = word_values_at_crashes(&r, &[1024], |r| r.drain().unwrap());
    assert!(pts[0].contains(&one(0)), "still losable after the drain");
}

#[test]
fn redundant_flushes_and_drains_are_counted() {
    let r = fresh();
    r.write_u64(0, 1);
    r.flush(0, 8);
    r.flush(0, 8); // redundant: nothing new since the last flush
    r.drain().unwrap();
    r.drain().unwrap(); // redundant: nothing flushed
    r.flush(0, 8); // redundant: line clean
    let c = r.simulator().unwrap().counters();
    assert_eq!((c.flushes, c.redundant_flushes), (3, 2));
    assert_eq!((c.drains, c.redundant_drains), (2, 1));
}

#[test]
fn enumeration_is_exhaustive_when_small_and_sampled_when_large() {
    let r = fresh();
    let counts = Arc::new(Mutex::new(Vec::new()));
    let c2 = counts.clone();
    r.simulator().unwrap().set_hook(move |cp| {
        let n = cp.for_each_image(|_, _| ControlFlow::Continue(()));
        c2.lock().unwrap().push((cp.combinations(), cp.is_exhaustive(), n));
    });
    // 12 words pending, each with one value: 4096 combinations, exhaustive.
    r.write(0, &[1u8; 96]);
    r.drain().unwrap();
    // 13 words: 8192 combinations; sampled: none, all, 2 lines x 2, samples.
    r.write(96, &[1u8; 8]);
    r.drain().unwrap();
    let got = counts.lock().unwrap().clone();
    assert_eq!(got[0], (4096, true, 4096));
    let cfg = SimConfig::default();
    assert_eq!(got[1], (8192, false, 2 + 2 * 2 + cfg.random_samples as u64));
}

#[test]
fn an_image_replays_from_its_description() {
    let r = fresh();
    let ok = Arc::new(Mutex::new(0));
    let ok2 = ok.clone();
    r.simulator().unwrap().set_hook(move |cp| {
        cp.for_each_image(|img, d| {
            assert_eq!(cp.image(d).as_deref(), Some(img), "replay of {d} differs");
            *ok2.lock().unwrap() += 1;
            ControlFlow::Continue(())
        });
    });
    r.write(0, &[3u8; 200]);
    r.drain().unwrap();
    assert!(*ok.lock().unwrap() > 10);
}
