//! The store against a `BTreeMap` model: a million random operations
//! (put, delete, get, contains, scans both ways, CAS, transactions, write
//! batches, keys that expire, purges, now and then a clear), values from
//! empty to 1 MiB, the pool filled to `PoolFull` and drained again;
//! identical results, `check()` clean along the way, at the end and after
//! a reopen.

use daxkv::{Backend, Error, Options, Persistence, Store};
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::collections::BTreeMap;
use std::ops::Bound;

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

/// Expiries far ahead (plus a few ms, so GT-style changes show) and long
/// past: no key expires while the test runs, except those put already
/// expired.
const LATER: u64 = 4_000_000_000_000;
const PAST: u64 = 1;

/// What the model knows of expiries besides the live pairs: the expiry of
/// each live key that has one, and the keys whose record is there but
/// expired (absent to reads, counted by `len` until purged or rewritten).
#[derive(Default, Clone)]
struct Expiries {
    at: BTreeMap<Vec<u8>, u64>,
    dead: std::collections::BTreeSet<Vec<u8>>,
}

impl Expiries {
    /// `k` was written without an expiry, or deleted.
    fn plain(&mut self, k: &[u8]) {
        self.at.remove(k);
        self.dead.remove(k);
    }

    fn clear(&mut self) {
        self.at.clear();
        self.dead.clear();
    }
}

fn key(rng: &mut StdRng) -> Vec<u8> {
    let n = rng.gen_range(0..3000u32);
    match n % 5 {
        0 => format!("k{n:05}").into_bytes(),
        1 => format!("user/{n}/profile").into_bytes(),
        2 => vec![(n % 256) as u8; 1 + (n % 40) as usize],
        3 => format!("{n:08x}").into_bytes(),
        _ => {
            let mut k = format!("long-{n}-").into_bytes();
            k.resize(200 + (n % 300) as usize, b'x');
            k
        }
    }
}

fn value(rng: &mut StdRng, big: bool) -> Vec<u8> {
    let len = match rng.gen_range(0..1000) {
        0..=599 => rng.gen_range(0..64),
        600..=949 => rng.gen_range(64..2048),
        950..=989 => rng.gen_range(2048..70_000),
        _ if big => rng.gen_range(70_000..=1 << 20),
        _ => rng.gen_range(2048..8192),
    };
    let seed: u8 = rng.r#gen();
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

fn bound(rng: &mut StdRng) -> Bound<Vec<u8>> {
    match rng.gen_range(0..3) {
        0 => Bound::Unbounded,
        1 => Bound::Included(key(rng)),
        _ => Bound::Excluded(key(rng)),
    }
}

fn check_scan(store: &Store, model: &Model, rng: &mut StdRng, step: u64) {
    let (lo, hi) = (bound(rng), bound(rng));
    let bad = match (&lo, &hi) {
        (Bound::Excluded(a), Bound::Excluded(b)) => a >= b,
        (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) => a > b,
        _ => false,
    };
    if bad {
        return; // BTreeMap panics on inverted ranges; the store yields nothing
    }
    let take = rng.gen_range(1..80);
    if rng.gen_bool(0.5) {
        let got: Vec<(Vec<u8>, Vec<u8>)> =
            store.range((lo.clone(), hi.clone())).take(take).map(|r| r.unwrap()).collect();
        let want: Vec<(Vec<u8>, Vec<u8>)> =
            model.range((lo.clone(), hi.clone())).take(take).map(|(k, v)| (k.clone(), v.clone())).collect();
        assert_eq!(got, want, "step {step}: range {lo:?}..{hi:?}");
    } else {
        let got: Vec<Vec<u8>> = store.range_rev((lo.clone(), hi.clone())).take(take).map(|r| r.unwrap().0).collect();
        let want: Vec<Vec<u8>> =
            model.range((lo.clone(), hi.clone())).rev().take(take).map(|(k, _)| k.clone()).collect();
        assert_eq!(got, want, "step {step}: reverse range {lo:?}..{hi:?}");
    }
}

fn assert_check(store: &Store, when: &str) {
    let rep = store.check().unwrap();
    assert!(rep.is_ok(), "{when}: check found {:?}", &rep.problems[..rep.problems.len().min(5)]);
}

/// One of the expiry operations, checked against the model.
fn expiry_op(store: &Store, model: &mut Model, exp: &mut Expiries, rng: &mut StdRng, step: u64) {
    let k = key(rng);
    let later = LATER + rng.gen_range(0..1000);
    match rng.gen_range(0..10) {
        0..=2 => {
            let (v, at) = (value(rng, false), if rng.gen_bool(0.4) { PAST } else { later });
            match store.put_with_expiry(&k, &v, Some(at)) {
                Err(Error::PoolFull(_)) => return,
                r => r.unwrap(),
            }
            exp.plain(&k);
            if at == PAST {
                model.remove(&k);
                exp.dead.insert(k);
            } else {
                model.insert(k.clone(), v);
                exp.at.insert(k, at);
            }
        }
        3..=5 => {
            let want = model.contains_key(&k).then(|| exp.at.get(&k).copied());
            assert_eq!(store.expiry(&k).unwrap(), want, "step {step}: expiry of {k:?}");
        }
        6..=8 => {
            let at = match rng.gen_range(0..3) {
                0 => None,
                1 => Some(later),
                _ => Some(PAST),
            };
            let present = model.contains_key(&k);
            match store.set_expiry(&k, at) {
                Err(Error::PoolFull(_)) => return,
                r => assert_eq!(r.unwrap(), present, "step {step}: set_expiry of {k:?}"),
            }
            if present {
                exp.plain(&k);
                match at {
                    None => {}
                    Some(PAST) => {
                        model.remove(&k);
                        exp.dead.insert(k);
                    }
                    Some(t) => {
                        exp.at.insert(k, t);
                    }
                }
            }
        }
        _ => {
            // A purge step from `k`: it looks at the next `max` records in
            // key order (live or expired) and removes the expired ones.
            let max = rng.gen_range(1..200);
            let mut phys: Vec<(&Vec<u8>, bool)> =
                model.range(k.clone()..).map(|(k, _)| (k, false)).take(max + 1).collect();
            phys.extend(exp.dead.range(k.clone()..).map(|k| (k, true)).take(max + 1));
            phys.sort();
            phys.truncate(max + 1);
            let next = phys.get(max).map(|(k, _)| (*k).clone());
            let gone: Vec<Vec<u8>> = phys.iter().take(max).filter(|(_, d)| *d).map(|(k, _)| (*k).clone()).collect();
            let p = store.purge_expired(&k, max).unwrap();
            assert_eq!(p.removed, gone.len() as u64, "step {step}: purge from {k:?}");
            assert_eq!(p.examined, phys.len().min(max) as u64, "step {step}: purge from {k:?}");
            assert_eq!(p.next, next, "step {step}: purge from {k:?}");
            for g in gone {
                exp.dead.remove(&g);
            }
        }
    }
}

#[test]
fn a_million_operations_against_a_model() {
    let dir = std::path::Path::new("/dev/shm").join(format!("daxkv-model-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.pool");
    let opts =
        Options::new().pool_size(48 << 20).persistence(Persistence::Force(Backend::Volatile)).create_if_missing(true);
    let store = Store::open(&path, &opts).unwrap();
    let mut model = Model::new();
    let mut exp = Expiries::default();
    let mut rng = StdRng::seed_from_u64(0xda7a);
    let mut filling = false; // phases: normal, then fill with big values to PoolFull, then drain
    let (mut fulls, mut ops) = (0u32, 0u64);
    let total = 1_000_000u64;
    while ops < total {
        ops += 1;
        let step = ops;
        if step % 150_000 == 0 {
            filling = true;
        }
        if step % 250_000 == 125_000 {
            // Everything goes at once; the store then refills from empty.
            assert_eq!(store.clear().unwrap(), (model.len() + exp.dead.len()) as u64, "step {step}: keys cleared");
            model.clear();
            exp.clear();
            assert!(store.is_empty() && store.iter().next().is_none(), "step {step}: clear left keys");
            assert_check(&store, &format!("step {step}, after clear"));
            continue;
        }
        let r = rng.gen_range(0..100);
        if filling || r < 30 {
            let k = key(&mut rng);
            let v = if filling { vec![7u8; rng.gen_range(200_000..1 << 20)] } else { value(&mut rng, true) };
            match store.put(&k, &v) {
                Ok(()) => {
                    exp.plain(&k);
                    model.insert(k, v);
                }
                Err(Error::PoolFull(_)) => {
                    fulls += 1;
                    filling = false;
                    // The failed put changed nothing.
                    assert_eq!(store.get(&k).unwrap(), model.get(&k).cloned(), "step {step}: failed put changed {k:?}");
                    // Drain: delete most keys with big values.
                    let big: Vec<Vec<u8>> =
                        model.iter().filter(|(_, v)| v.len() > 50_000).map(|(k, _)| k.clone()).collect();
                    for k in big {
                        assert!(store.delete(&k).unwrap());
                        model.remove(&k);
                        exp.plain(&k);
                    }
                    // And every expired record.
                    let p = store.purge_expired(b"", usize::MAX).unwrap();
                    assert_eq!(p.removed, exp.dead.len() as u64, "step {step}: purge after PoolFull");
                    exp.dead.clear();
                    // Puts work again after deletes.
                    store.put(b"after-full", b"ok").unwrap();
                    model.insert(b"after-full".to_vec(), b"ok".to_vec());
                    exp.plain(b"after-full");
                }
                Err(e) => panic!("step {step}: put: {e}"),
            }
        } else if r < 45 {
            let k = key(&mut rng);
            assert_eq!(store.delete(&k).unwrap(), model.remove(&k).is_some(), "step {step}: delete {k:?}");
            exp.plain(&k);
        } else if r < 70 {
            let k = key(&mut rng);
            assert_eq!(store.get(&k).unwrap(), model.get(&k).cloned(), "step {step}: get {k:?}");
            if r < 50 {
                assert_eq!(store.contains(&k).unwrap(), model.contains_key(&k));
                if let Some(v) = store.get_ref(&k).unwrap() {
                    assert_eq!(&*v, model[&k].as_slice());
                }
            }
        } else if r < 75 {
            expiry_op(&store, &mut model, &mut exp, &mut rng, step);
        } else if r < 83 {
            check_scan(&store, &model, &mut rng, step);
        } else if r < 90 {
            let k = key(&mut rng);
            let cur = model.get(&k).cloned();
            let expect = if rng.gen_bool(0.7) { cur.clone() } else { Some(b"surely not".to_vec()) };
            let new = if rng.gen_bool(0.8) { Some(value(&mut rng, false)) } else { None };
            let res = store.compare_and_swap(&k, expect.as_deref(), new.as_deref()).unwrap();
            if expect == cur {
                assert_eq!(res, Ok(()), "step {step}: cas should succeed");
                exp.plain(&k);
                match new {
                    Some(v) => model.insert(k, v),
                    None => model.remove(&k),
                };
            } else {
                assert_eq!(res, Err(cur), "step {step}: cas should fail with the current value");
            }
        } else if r < 96 {
            // A transaction: read a few keys, write a few, some derived.
            let keys: Vec<Vec<u8>> = (0..rng.gen_range(1..6)).map(|_| key(&mut rng)).collect();
            let vals: Vec<Option<Vec<u8>>> =
                keys.iter().map(|_| if rng.gen_bool(0.8) { Some(value(&mut rng, false)) } else { None }).collect();
            let mut shadow = model.clone();
            let mut shadow_exp = exp.clone();
            let seen = store
                .transaction(|tx| {
                    let mut seen = Vec::new();
                    for (k, v) in keys.iter().zip(&vals) {
                        seen.push(tx.get(k)?);
                        match v {
                            Some(v) => tx.put(k, v)?,
                            None => {
                                tx.delete(k)?;
                            }
                        }
                        // read your own write
                        assert_eq!(tx.get(k)?, v.clone());
                    }
                    Ok(seen)
                })
                .unwrap();
            for ((k, v), s) in keys.iter().zip(&vals).zip(seen) {
                assert_eq!(s, shadow.get(k).cloned(), "step {step}: tx read {k:?}");
                shadow_exp.plain(k);
                match v {
                    Some(v) => shadow.insert(k.clone(), v.clone()),
                    None => shadow.remove(k),
                };
            }
            model = shadow;
            exp = shadow_exp;
        } else {
            let batch: Vec<(Vec<u8>, Option<Vec<u8>>)> = (0..rng.gen_range(1..40))
                .map(|_| (key(&mut rng), if rng.gen_bool(0.85) { Some(value(&mut rng, false)) } else { None }))
                .collect();
            store.write_batch(&batch).unwrap();
            for (k, v) in batch {
                exp.plain(&k);
                match v {
                    Some(v) => model.insert(k, v),
                    None => model.remove(&k),
                };
            }
        }
        if step % 100_000 == 0 {
            assert_eq!(store.len(), (model.len() + exp.dead.len()) as u64, "step {step}: len");
            assert_eq!(store.stats().keys_with_expiry, (exp.at.len() + exp.dead.len()) as u64, "step {step}");
            assert_check(&store, &format!("step {step}"));
        }
    }
    assert!(fulls >= 3, "the pool must fill up several times (did {fulls})");
    assert_check(&store, "end");
    let all: Vec<(Vec<u8>, Vec<u8>)> = store.iter().map(|r| r.unwrap()).collect();
    assert_eq!(all, model.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<Vec<_>>());
    store.close().unwrap();

    let store = Store::open(&path, &opts).unwrap();
    assert!(store.stats().opened_clean);
    assert_eq!(store.len(), (model.len() + exp.dead.len()) as u64);
    assert_eq!(store.stats().keys_with_expiry, (exp.at.len() + exp.dead.len()) as u64);
    for (k, at) in &exp.at {
        assert_eq!(store.expiry(k).unwrap(), Some(Some(*at)), "after reopen: {k:?}");
    }
    assert_check(&store, "after reopen");
    let all: Vec<(Vec<u8>, Vec<u8>)> = store.iter().map(|r| r.unwrap()).collect();
    assert_eq!(all, model.iter().map(|(k, v)| (k.clone(), v.clone())).collect::<Vec<_>>());
    drop(store);
    std::fs::remove_dir_all(&dir).unwrap();
}
