//! Random byte corruption in the log area: recovery never panics, returns
//! every valid entry before the first damaged one, and stops there with a
//! typed report; damage to one checkpoint slot is reported and survived,
//! damage to both is a typed error.
#![cfg(not(loom))]

use daxkv_alloc::{PersistOptions, Region};
use daxkv_log::{Entry, Found, HEADER_LEN, Log, LogError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;

const REGION: usize = 64 * 1024;
const BASE: u64 = 8192;
const LEN: u64 = 4096;

/// A log that wrapped several times and holds a few dozen live entries.
fn build(rng: &mut StdRng) -> (Vec<u8>, Vec<Entry>) {
    let region = Arc::new(Region::anonymous(REGION, &PersistOptions::default()).unwrap());
    let log = Log::create(region.clone(), BASE, LEN).unwrap();
    let mut next_ckpt = 0;
    for s in 1..=300u64 {
        let ops: Vec<Vec<u8>> =
            (0..rng.gen_range(1..4)).map(|_| (0..rng.gen_range(0..60)).map(|_| rng.r#gen()).collect()).collect();
        loop {
            match log.try_append(&ops) {
                Ok(seq) => {
                    assert_eq!(seq, s);
                    break;
                }
                Err(LogError::Full { .. }) => {
                    next_ckpt += 5;
                    log.checkpoint(next_ckpt).unwrap();
                }
                Err(e) => panic!("{e}"),
            }
        }
        log.commit(s).unwrap();
    }
    assert!(log.stats().bytes > 5 * log.capacity(), "wrapped several times");
    drop(log);
    let image = region.bytes(0, REGION).to_vec();
    let rec = Log::scan(&region, BASE, LEN).unwrap();
    assert_eq!(rec.end().found, Found::Empty);
    let entries: Vec<Entry> = rec.collect();
    assert!(entries.len() >= 10, "{} live entries", entries.len());
    assert_eq!(entries.last().unwrap().seq, 300);
    (image, entries)
}

fn region_from(image: &[u8]) -> Arc<Region> {
    let r = Region::anonymous(image.len(), &PersistOptions::default()).unwrap();
    r.write(0, image);
    Arc::new(r)
}

#[test]
fn random_corruption_stops_at_the_damaged_entry() {
    let mut rng = StdRng::seed_from_u64(0xbad);
    let (image, entries) = build(&mut rng);
    let ends: Vec<(u64, u64)> = entries.iter().map(|e| (e.offset, e.offset + Log::entry_size(&e.ops))).collect();
    let (mut stopped_at_entry, mut stopped_in_gap, mut slot_hits) = (0, 0, 0);
    for trial in 0..3000 {
        let mut img = image.clone();
        let hits: Vec<u64> = (0..rng.gen_range(1..=3)).map(|_| BASE + rng.gen_range(0..LEN)).collect();
        for &h in &hits {
            img[h as usize] ^= rng.gen_range(1..=255u8);
        }
        let slot = |i: u64| hits.iter().any(|&h| (BASE + 64 * i..BASE + 64 * (i + 1)).contains(&h));
        let r = region_from(&img);
        let rec = match Log::scan(&r, BASE, LEN) {
            Ok(rec) => rec,
            Err(LogError::BadHeader { .. }) if slot(0) && slot(1) => continue,
            Err(e) => panic!("trial {trial}, hits {hits:?}: {e}"),
        };
        assert!(!(slot(0) && slot(1)), "trial {trial}: both slots damaged but accepted");
        if slot(0) || slot(1) {
            slot_hits += 1;
            let (n, _) = rec.damaged_slot().expect("damaged slot reported");
            assert!(slot(n), "trial {trial}: reported slot {n}, hits {hits:?}");
        } else {
            assert_eq!(rec.damaged_slot(), None);
        }
        // The first entry any hit falls in, and the first gap (wrap marker,
        // cleared header) a hit falls in before it.
        let first_bad = ends.iter().position(|&(a, b)| hits.iter().any(|&h| (a..b).contains(&h)));
        let end = *rec.end();
        let got: Vec<Entry> = rec.collect();
        let k = got.len();
        assert_eq!(got[..], entries[..k], "trial {trial}: recovered entries must be a prefix of the valid ones");
        match first_bad {
            Some(i) if k == i => {
                assert_eq!(end.offset, entries[i].offset, "trial {trial}: stops at the damaged entry");
                assert_eq!(end.next_seq, entries[i].seq);
                assert!(!end.found.is_clean(), "trial {trial}: damage reported as {:?}", end.found);
                stopped_at_entry += 1;
            }
            _ => {
                // Stopped before (or without) reaching a damaged entry: only
                // if a hit is in the gap just before where it stopped.
                assert!(first_bad.is_none_or(|i| k < i), "trial {trial}: went past damaged entry");
                if k < entries.len() || !end.found.is_clean() {
                    let ring = BASE + HEADER_LEN;
                    let gap = |h: u64| match k {
                        0 => false,
                        _ if k < entries.len() => {
                            let (a, b) = (ends[k - 1].1, entries[k].offset);
                            if a <= b { (a..b).contains(&h) } else { h >= a || (ring..b).contains(&h) }
                        }
                        // the cleared header after the newest entry
                        _ => {
                            let a = ends[k - 1].1;
                            (a..a + 32).contains(&h) || (ring..ring + 32).contains(&h)
                        }
                    };
                    assert!(hits.iter().any(|&h| gap(h)), "trial {trial}: stopped at {end:?} without damage");
                    assert!(!end.found.is_clean(), "trial {trial}: damage reported as {:?}", end.found);
                    stopped_in_gap += 1;
                }
            }
        }
        // open agrees, never panics, and the log works afterwards
        let (log, rec) = Log::open(r.clone(), BASE, LEN).unwrap();
        assert_eq!(rec.len(), k);
        let seq = log.append_commit(&[b"after"]).unwrap();
        assert_eq!(seq, entries.first().map_or(1, |e| e.seq) + k as u64);
        drop(log);
        let again: Vec<Entry> = Log::scan(&r, BASE, LEN).unwrap().collect();
        assert_eq!(again.len(), k + 1);
        assert_eq!(again[k].ops, vec![b"after".to_vec()]);
    }
    eprintln!("{stopped_at_entry} stopped at a damaged entry, {stopped_in_gap} in a gap, {slot_hits} slot hits");
    assert!(stopped_at_entry > 1000 && slot_hits > 50);
}

/// Headers with valid checksums but arbitrary contents, and arbitrary
/// bytes everywhere: typed answers, no panic.
#[test]
fn garbage_never_panics() {
    let mut rng = StdRng::seed_from_u64(7);
    let (image, _) = build(&mut rng);
    for _ in 0..500 {
        let mut img = image.clone();
        // Random ring bytes, keeping the slots.
        let ring = (BASE + HEADER_LEN) as usize..(BASE + LEN) as usize;
        let n = rng.gen_range(0..64);
        for _ in 0..n {
            let at = rng.gen_range(ring.clone());
            img[at] = rng.r#gen();
        }
        let r = region_from(&img);
        if let Ok(rec) = Log::scan(&r, BASE, LEN) {
            let _ = rec.count();
        }
        let _ = Log::open(r, BASE, LEN).map(|(log, _)| log.append_commit(&[b"x"]).unwrap());
    }
    // All bytes random, slots included.
    for _ in 0..200 {
        let img: Vec<u8> = (0..REGION).map(|_| rng.r#gen()).collect();
        let r = region_from(&img);
        assert!(matches!(Log::scan(&r, BASE, LEN), Err(LogError::BadHeader { .. })));
        assert!(matches!(Log::open(r, BASE, LEN), Err(LogError::BadHeader { .. })));
    }
}
