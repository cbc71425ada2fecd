//! The point cache changes how gets find records, never what they find:
//! a store with a tiny cache (constant eviction) and one with none give the
//! same answers as a model through overwrites, deletes, CAS, transactions
//! and batches, across a reopen, and with concurrent writers.

use daxkv::{Options, Store};
use daxkv_tests::ShmDir;
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

fn dir(name: &str) -> ShmDir {
    ShmDir::new(&format!("cache-{name}"))
}

fn opts(cache: Option<u64>) -> Options {
    let o = Options::new().pool_size(64 << 20).create_if_missing(true);
    match cache {
        Some(b) => o.point_cache(b),
        None => o,
    }
}

#[test]
fn sized_by_options_and_off_when_zero() {
    let d = dir("size");
    let s = Store::open(d.0.join("a"), &opts(None)).unwrap();
    // The default: 1/32 of the pool, rounded down to a power of two of
    // 64-byte lines (plus one line of alignment slack).
    assert_eq!(s.stats().point_cache_bytes, (2 << 20) + 64);
    drop(s);
    let s = Store::open(d.0.join("b"), &opts(Some(0))).unwrap();
    assert_eq!(s.stats().point_cache_bytes, 0);
    s.put(b"k", b"v").unwrap();
    assert_eq!(s.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
    drop(s);
    let s = Store::open(d.0.join("b"), &opts(Some(100_000))).unwrap();
    assert_eq!(s.stats().point_cache_bytes, 1024 * 64 + 64);
    assert_eq!(s.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
}

#[test]
fn tiny_cache_no_cache_and_a_model_agree() {
    let d = dir("agree");
    // 16 buckets of 7 for 600 keys: nearly every insert evicts.
    let stores = [
        Store::open(d.0.join("tiny"), &opts(Some(1024))).unwrap(),
        Store::open(d.0.join("none"), &opts(Some(0))).unwrap(),
    ];
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut rng = StdRng::seed_from_u64(7);
    let key = |i: u32| format!("key-{i:05}").into_bytes();
    for step in 0..60_000u32 {
        let k = key(rng.gen_range(0..600));
        let v: Vec<u8> = format!("v{step}-").into_bytes().repeat(rng.gen_range(0..4));
        match rng.gen_range(0..10) {
            0..=3 => {
                for s in &stores {
                    let got = s.get(&k).unwrap();
                    assert_eq!(got.as_ref(), model.get(&k), "step {step}: get");
                    assert_eq!(s.contains(&k).unwrap(), model.contains_key(&k));
                    let r = s.get_ref(&k).unwrap();
                    assert_eq!(r.as_deref(), model.get(&k).map(|v| v.as_slice()));
                }
            }
            4 | 5 => {
                for s in &stores {
                    s.put(&k, &v).unwrap();
                }
                model.insert(k, v);
            }
            6 => {
                for s in &stores {
                    assert_eq!(s.delete(&k).unwrap(), model.contains_key(&k));
                }
                model.remove(&k);
            }
            7 => {
                let cur = model.get(&k).cloned();
                let new = (rng.gen_range(0..3) > 0).then(|| v.clone());
                for s in &stores {
                    let r = s.compare_and_swap(&k, cur.as_deref(), new.as_deref()).unwrap();
                    assert!(r.is_ok(), "step {step}: cas");
                }
                match new {
                    Some(n) => model.insert(k, n),
                    None => model.remove(&k),
                };
            }
            8 => {
                // A transaction over a few keys: read, overwrite, delete.
                let ks: Vec<Vec<u8>> = (0..4).map(|_| key(rng.gen_range(0..600))).collect();
                let del = rng.gen_range(0..4);
                for s in &stores {
                    s.transaction(|tx| {
                        for (j, k) in ks.iter().enumerate() {
                            let cur = tx.get(k)?;
                            if j == del {
                                tx.delete(k)?;
                            } else {
                                let mut n = cur.unwrap_or_default();
                                n.extend_from_slice(&v);
                                tx.put(k, &n)?;
                            }
                        }
                        Ok(())
                    })
                    .unwrap();
                }
                for (j, k) in ks.iter().enumerate() {
                    if j == del {
                        model.remove(k);
                    } else {
                        let mut n = model.get(k).cloned().unwrap_or_default();
                        n.extend_from_slice(&v);
                        model.insert(k.clone(), n);
                    }
                }
            }
            _ => {
                let ops: Vec<(Vec<u8>, Option<Vec<u8>>)> = (0..20)
                    .map(|j| {
                        let k = key(rng.gen_range(0..600));
                        (k, (j % 3 != 0).then(|| v.clone()))
                    })
                    .collect();
                for s in &stores {
                    s.write_batch(&ops).unwrap();
                }
                for (k, v) in ops {
                    match v {
                        Some(v) => model.insert(k, v),
                        None => model.remove(&k),
                    };
                }
            }
        }
    }
    let paths: Vec<PathBuf> = stores.iter().map(|s| s.path().to_path_buf()).collect();
    drop(stores);
    for (p, cache) in paths.iter().zip([Some(1024), Some(0)]) {
        let s = Store::open(p, &opts(cache)).unwrap();
        for i in 0..600 {
            assert_eq!(s.get(&key(i)).unwrap().as_ref(), model.get(&key(i)), "after reopen");
        }
        assert!(s.check().unwrap().problems.is_empty());
    }
}

/// Writers overwrite and delete a few hot keys while readers read them
/// through a cache small enough that the readers' inserts race the
/// writers' replacements in every bucket. Every value names its key and
/// a per-key sequence number: a reader must never see a key's sequence go
/// back, nor a value that was deleted before the reader began.
#[test]
fn concurrent_overwrites_never_show_a_stale_value() {
    let d = dir("race");
    let s = Arc::new(Store::open(d.0.join("p"), &opts(Some(256))).unwrap());
    const KEYS: u64 = 32;
    let key = |i: u64| format!("hot{i:03}").into_bytes();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (s, stop) = (s.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut seq = 1u64;
            while !stop.load(Ordering::Relaxed) {
                for i in 0..KEYS {
                    let k = key(i);
                    let mut v = k.clone();
                    v.extend_from_slice(&seq.to_le_bytes());
                    match seq % 5 {
                        0 => s.write_batch(&[(k, Some(v))]).unwrap(),
                        1 => s.transaction(|tx| tx.put(&k, &v)).unwrap(),
                        _ => s.put(&k, &v).unwrap(),
                    }
                }
                seq += 1;
            }
            seq
        })
    };
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let s = s.clone();
            std::thread::spawn(move || {
                let mut last = vec![0u64; KEYS as usize];
                for n in 0..300_000u64 {
                    let i = n % KEYS;
                    let k = key(i);
                    if let Some(v) = s.get(&k).unwrap() {
                        assert_eq!(&v[..k.len()], &k[..], "foreign value");
                        let seq = u64::from_le_bytes(v[k.len()..].try_into().unwrap());
                        assert!(seq >= last[i as usize], "key {i}: seq {seq} after {}", last[i as usize]);
                        last[i as usize] = seq;
                    }
                }
            })
        })
        .collect();
    for r in readers {
        r.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let seq = writer.join().unwrap();
    assert!(seq > 10, "the writer ran {seq} rounds");
}
