//! Two writers and two readers on one store. Every value carries its key,
//! its writer, a sequence number and a checksum: readers never see a torn
//! or foreign value, and the sequence numbers each reader sees for a key
//! never go backwards (each key's history is linearizable).

use daxkv_tests::ShmDir;
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

const KEYS: u64 = 3000;

fn key(i: u64) -> Vec<u8> {
    format!("key-{i:06}").into_bytes()
}

fn value(k: &[u8], writer: u8, seq: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + 32);
    v.extend_from_slice(&(k.len() as u32).to_le_bytes());
    v.extend_from_slice(k);
    v.push(writer);
    v.extend_from_slice(&seq.to_le_bytes());
    v.extend((0..len).map(|i| (i as u64 ^ seq) as u8));
    let crc = crc32c::crc32c(&v);
    v.extend_from_slice(&crc.to_le_bytes());
    v
}

/// Check a value read for `k`; returns its sequence number.
fn verify(k: &[u8], v: &[u8]) -> u64 {
    assert!(v.len() >= 4 + k.len() + 1 + 8 + 4, "short value for {k:?}");
    let (body, crc) = v.split_at(v.len() - 4);
    assert_eq!(crc32c::crc32c(body).to_le_bytes(), crc, "torn value for {:?}", String::from_utf8_lossy(k));
    let kl = u32::from_le_bytes(body[..4].try_into().unwrap()) as usize;
    assert_eq!(&body[4..4 + kl], k, "value of another key under {:?}", String::from_utf8_lossy(k));
    u64::from_le_bytes(body[5 + kl..13 + kl].try_into().unwrap())
}

#[test]
fn two_writers_two_readers() {
    let dir = ShmDir::new("conc");
    let store = Arc::new(dir.pmem_store("c.pool", 256 << 20));
    let stop = Arc::new(AtomicBool::new(false));
    // Writer w owns keys i with i % 2 == w; sequence numbers grow per key.
    let writers: Vec<_> = (0..2u8)
        .map(|w| {
            let (store, stop) = (store.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut rng = StdRng::seed_from_u64(w as u64);
                let mut seq: HashMap<u64, u64> = HashMap::new();
                let mut state: HashMap<u64, Option<u64>> = HashMap::new();
                for n in 0..150_000u64 {
                    let i = rng.gen_range(0..KEYS / 2) * 2 + w as u64;
                    let k = key(i);
                    let s = seq.entry(i).or_insert(0);
                    *s += 1;
                    match rng.gen_range(0..20) {
                        0 => {
                            store.delete(&k).unwrap();
                            state.insert(i, None);
                        }
                        1 => {
                            // a batch of three of this writer's keys
                            let batch: Vec<(Vec<u8>, Option<Vec<u8>>)> = (0..3)
                                .map(|d| {
                                    let j = (i + 2 * d) % KEYS;
                                    let s = seq.entry(j).or_insert(0);
                                    *s += 1;
                                    state.insert(j, Some(*s));
                                    (key(j), Some(value(&key(j), w, *s, 50)))
                                })
                                .collect();
                            store.write_batch(&batch).unwrap();
                        }
                        _ => {
                            let len = if n % 100 == 0 { rng.gen_range(1000..20_000) } else { rng.gen_range(0..200) };
                            store.put(&k, &value(&k, w, *s, len)).unwrap();
                            state.insert(i, Some(*s));
                        }
                    }
                }
                stop.store(true, Ordering::Relaxed);
                state
            })
        })
        .collect();
    let readers: Vec<_> = (0..2u64)
        .map(|r| {
            let (store, stop) = (store.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut rng = StdRng::seed_from_u64(100 + r);
                let mut last: HashMap<u64, u64> = HashMap::new();
                let mut reads = 0u64;
                while !stop.load(Ordering::Relaxed) || reads < 10_000 {
                    let i = rng.gen_range(0..KEYS);
                    let k = key(i);
                    if rng.gen_range(0..50) == 0 {
                        // a short scan: ordered, every value sound
                        let mut prev: Option<Vec<u8>> = None;
                        for kv in store.range(k.clone()..).take(40) {
                            let (kk, vv) = kv.unwrap();
                            verify(&kk, &vv);
                            assert!(prev.as_ref().is_none_or(|p| *p < kk), "scan out of order");
                            prev = Some(kk);
                        }
                        continue;
                    }
                    if r == 1 && rng.gen_range(0..2) == 0 {
                        // Reader 1 also reads keys nobody writes: with half
                        // of its reads missing the point cache, its reads go
                        // the index-first way (`Store::read`), reader 0's
                        // the cache-first way.
                        assert_eq!(store.get(&key(KEYS + i)).unwrap(), None, "key {} was never written", KEYS + i);
                        continue;
                    }
                    if let Some(v) = store.get(&k).unwrap() {
                        let s = verify(&k, &v);
                        let l = last.entry(i).or_insert(0);
                        assert!(s >= *l, "key {i}: saw seq {s} after {l}");
                        *l = s;
                    }
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    let states: Vec<HashMap<u64, Option<u64>>> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    for r in readers {
        assert!(r.join().unwrap() >= 10_000);
    }
    let rep = store.check().unwrap();
    assert!(rep.is_ok(), "{:?}", rep.problems);
    // The final state holds each key's last write, or its deletion.
    let mut expected = 0;
    for state in &states {
        for (&i, &s) in state {
            let got = store.get(&key(i)).unwrap().map(|v| verify(&key(i), &v));
            assert_eq!(got, s, "key {i}: final state");
            expected += u64::from(s.is_some());
        }
    }
    assert_eq!(store.len(), expected);
    drop(store);
    drop(dir);
}

/// Leaves split and merge under readers: a writer fills the gaps between
/// anchor keys (splitting leaves) and deletes the fillers again, singly and
/// in batches (emptying leaves, which merge into their predecessors).
/// Anchors are never deleted, so every get of an anchor must find it and
/// every scan must list every anchor in its range.
#[test]
fn merges_under_readers() {
    let dir = ShmDir::new("merge");
    let store = Arc::new(dir.pmem_store("m.pool", 128 << 20));
    const ANCHORS: u64 = 400;
    let anchor = |i: u64| format!("k{i:05}").into_bytes();
    let filler = |i: u64, j: u64| format!("k{i:05}-{j:03}").into_bytes();
    for i in 0..ANCHORS {
        store.put(&anchor(i), &anchor(i)).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            for round in 0..12u64 {
                for i in 0..ANCHORS {
                    for j in 0..6 {
                        store.put(&filler(i, j), &[round as u8; 40]).unwrap();
                    }
                }
                for i in 0..ANCHORS {
                    if (i + round) % 2 == 0 {
                        for j in 0..6 {
                            assert!(store.delete(&filler(i, j)).unwrap());
                        }
                    } else {
                        let ops: Vec<(Vec<u8>, Option<Vec<u8>>)> = (0..6).map(|j| (filler(i, j), None)).collect();
                        store.write_batch(&ops).unwrap();
                    }
                }
            }
            stop.store(true, Ordering::Relaxed);
        })
    };
    let readers: Vec<_> = (0..2u64)
        .map(|r| {
            let (store, stop) = (store.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut rng = StdRng::seed_from_u64(7 + r);
                let mut reads = 0u64;
                while !stop.load(Ordering::Relaxed) || reads < 10_000 {
                    let i = rng.gen_range(0..ANCHORS);
                    if rng.gen_range(0..20) == 0 {
                        let hi = (i + 5).min(ANCHORS);
                        let seen: Vec<Vec<u8>> = store
                            .range(anchor(i)..anchor(hi))
                            .map(|kv| kv.unwrap().0)
                            .filter(|k| k.len() == 6)
                            .collect();
                        let want: Vec<Vec<u8>> = (i..hi).map(anchor).collect();
                        assert_eq!(seen, want, "scan from anchor {i}");
                    } else {
                        assert_eq!(store.get(&anchor(i)).unwrap(), Some(anchor(i)), "anchor {i} missing");
                    }
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    writer.join().unwrap();
    for r in readers {
        assert!(r.join().unwrap() >= 10_000);
    }
    let st = store.stats();
    assert_eq!(st.keys, ANCHORS);
    assert!(st.merges >= 100, "merges: {}", st.merges);
    let rep = store.check().unwrap();
    assert!(rep.is_ok(), "{:?}", rep.problems);
    drop(store);
    drop(dir);
}

/// `clear` against a writer of whole generations (one transaction puts 200
/// keys over several leaves, all with the generation's number) and a
/// single-key writer: a transaction that reads all 200 keys sees one
/// generation or none of it, never a mix; the pool checks clean at the
/// end (its point cache too: a commit that made new leaves once let
/// readers cache a record before the commit did, and the second copy
/// outlived the record), and a last clear leaves nothing for any read
/// path.
#[test]
fn clear_is_atomic_under_writers() {
    let d = ShmDir::new("clear-atomic");
    let s = Arc::new(d.pmem_store("c.pool", 64 << 20));
    let gen_key = |i: u32| format!("g{i:03}").into_bytes();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (s, stop) = (s.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut g = 0u64;
            while !stop.load(Ordering::Relaxed) {
                g += 1;
                s.transaction(|tx| {
                    for i in 0..200 {
                        tx.put(&gen_key(i), &g.to_le_bytes())?;
                    }
                    Ok(())
                })
                .unwrap();
                s.put(format!("single-{}", g % 500).as_bytes(), &g.to_le_bytes()).unwrap();
                // Room for the reader's transactions to validate.
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
            g
        })
    };
    let reader = {
        let (s, stop) = (s.clone(), stop.clone());
        std::thread::spawn(move || {
            let (mut empty, mut full) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                let seen =
                    match s.transaction(|tx| (0..200).map(|i| tx.get(&gen_key(i))).collect::<Result<Vec<_>, _>>()) {
                        // The writer rewrote what it read each time: try again.
                        Err(daxkv::Error::Conflict { .. }) => continue,
                        seen => seen.unwrap(),
                    };
                if seen.iter().all(Option::is_none) {
                    empty += 1;
                } else {
                    assert!(seen.iter().all(|v| v.is_some() && *v == seen[0]), "a mix of generations: {seen:?}");
                    full += 1;
                }
            }
            (empty, full)
        })
    };
    // Plain gets of the same keys, which fill the point cache on misses.
    let getter = {
        let (s, stop) = (s.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut found = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for i in (0..200).rev() {
                    if let Some(v) = s.get(&gen_key(i)).unwrap() {
                        assert_eq!(v.len(), 8, "a generation number");
                        found += 1;
                    }
                }
            }
            found
        })
    };
    let mut cleared = 0u64;
    for _ in 0..400 {
        cleared += s.clear().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    stop.store(true, Ordering::Relaxed);
    let gens = writer.join().unwrap();
    let (empty, full) = reader.join().unwrap();
    assert!(getter.join().unwrap() > 0, "the getter found no key");
    assert!(cleared > 0 && gens > 10, "cleared {cleared} keys over {gens} generations");
    assert!(empty > 0 && full > 0, "the reader saw {empty} empty and {full} full states");
    let rep = s.check().unwrap();
    assert!(rep.is_ok(), "{:?}", rep.problems);
    // Cleared with nothing running: every key is gone, through every path.
    for i in 0..300u32 {
        s.put(format!("last-{i}").as_bytes(), b"x").unwrap();
        let _ = s.get(format!("last-{i}").as_bytes()).unwrap();
    }
    let before = s.len();
    assert!(before >= 300, "{before} keys");
    assert_eq!(s.clear().unwrap(), before);
    assert!((0..300u32).all(|i| s.get(format!("last-{i}").as_bytes()).unwrap().is_none()));
    assert!(s.is_empty() && s.iter().next().is_none() && s.get(b"g000").unwrap().is_none());
}

/// A transaction's read checked at commit must see every change in
/// between, however many: here another thread increments the counter a
/// transaction has read 1 to 6 times, with enough other writes between
/// its increments that retired blocks get reused (without the pin the
/// transaction holds, the counter's record came back to the block the
/// transaction had read it from after two increments, and those were
/// lost). The transaction must conflict once and count on from the new
/// value.
#[test]
fn a_read_key_changed_meanwhile_conflicts_however_often_it_changed() {
    let d = ShmDir::new("tx-reuse");
    let s = Arc::new(d.pmem_store("r.pool", 64 << 20));
    let read = |s: &daxkv::Store| u64::from_le_bytes(s.get(b"counter").unwrap().unwrap().try_into().unwrap());
    s.put(b"counter", &0u64.to_le_bytes()).unwrap();
    let mut expected = 0;
    for changes in 1..=6u64 {
        let mut attempts = 0;
        s.transaction(|tx| {
            attempts += 1;
            let v = u64::from_le_bytes(tx.get(b"counter")?.unwrap().try_into().unwrap());
            if attempts == 1 {
                let s = s.clone();
                std::thread::spawn(move || {
                    for _ in 0..changes {
                        s.put(b"counter", &(read(&s) + 1).to_le_bytes()).unwrap();
                        // Larger records (another size class), retired
                        // often enough to advance the epoch and reuse.
                        for j in 0..300u32 {
                            s.put(format!("other-{}", j % 7).as_bytes(), &[j as u8; 300]).unwrap();
                        }
                    }
                })
                .join()
                .unwrap();
            }
            tx.put(b"counter", &(v + 1).to_le_bytes())
        })
        .unwrap();
        expected += changes + 1;
        assert_eq!((read(&s), attempts), (expected, 2), "after {changes} changes during the transaction");
    }
}
