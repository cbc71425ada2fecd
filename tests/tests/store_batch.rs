//! Write batches and transactions larger than a leaf: they overflow into
//! new leaves linked by the same commit, stay atomic, and leave a sound
//! tree.

use daxkv_tests::ShmDir;
use std::collections::BTreeMap;

#[test]
fn batches_bigger_than_a_leaf() {
    let dir = ShmDir::new("batch");
    let s = dir.pmem_store("b.pool", 64 << 20);
    let mut model = BTreeMap::new();
    // 500 new keys into an empty store in one batch.
    let batch: Vec<(Vec<u8>, Option<Vec<u8>>)> =
        (0..500u32).map(|i| (format!("a{i:05}").into_bytes(), Some(i.to_le_bytes().to_vec()))).collect();
    s.write_batch(&batch).unwrap();
    for (k, v) in &batch {
        model.insert(k.clone(), v.clone().unwrap());
    }
    assert!(s.stats().leaves >= 500 / 64, "leaves: {}", s.stats().leaves);
    // Interleaved keys, replacements and deletes, in one transaction.
    s.transaction(|tx| {
        for i in (0..1000u32).step_by(3) {
            tx.put(format!("a{i:05}").as_bytes(), b"second")?;
        }
        for i in (1..500u32).step_by(7) {
            tx.delete(format!("a{i:05}").as_bytes())?;
        }
        for i in 0..300u32 {
            tx.put(format!("b{i:05}").as_bytes(), &[7u8; 300])?;
        }
        Ok(())
    })
    .unwrap();
    for i in (0..1000u32).step_by(3) {
        model.insert(format!("a{i:05}").into_bytes(), b"second".to_vec());
    }
    for i in (1..500u32).step_by(7) {
        // deleted, also where the same transaction put it first
        model.remove(&format!("a{i:05}").into_bytes());
    }
    for i in 0..300u32 {
        model.insert(format!("b{i:05}").into_bytes(), vec![7u8; 300]);
    }
    let got: BTreeMap<Vec<u8>, Vec<u8>> = s.iter().map(|kv| kv.unwrap()).collect();
    assert_eq!(got.len(), model.len());
    assert!(got == model, "contents differ from the model");
    let rep = s.check().unwrap();
    assert!(rep.is_ok(), "{:?}", rep.problems);
    // A batch of keys all below the first existing key.
    let low: Vec<(Vec<u8>, Option<Vec<u8>>)> =
        (0..200u32).map(|i| (format!("0{i:05}").into_bytes(), Some(b"low".to_vec()))).collect();
    s.write_batch(&low).unwrap();
    assert_eq!(s.len(), model.len() as u64 + 200);
    let rep = s.check().unwrap();
    assert!(rep.is_ok(), "{:?}", rep.problems);
    s.close().unwrap();
    let s = dir.pmem_store("b.pool", 64 << 20);
    assert_eq!(s.len(), model.len() as u64 + 200);
    assert!(s.check().unwrap().is_ok());
    drop(s);
    drop(dir);
}

/// `write_batch_ref` takes keys in any order, and of several entries for
/// one key the last wins, whether put or delete.
#[test]
fn batch_entries_in_any_order_last_one_wins() {
    let dir = ShmDir::new("batch-order");
    let s = dir.pmem_store("o.pool", 16 << 20);
    s.put(b"gone", b"old").unwrap();
    s.put(b"kept", b"old").unwrap();
    let ops: Vec<(&[u8], Option<&[u8]>)> = vec![
        (b"z", Some(b"1")),
        (b"a", Some(b"1")),
        (b"z", Some(b"2")),
        (b"gone", Some(b"new")),
        (b"kept", None),
        (b"gone", None),
        (b"m", None),
        (b"kept", Some(b"new")),
        (b"a", None),
        (b"a", Some(b"3")),
    ];
    s.write_batch_ref(&ops).unwrap();
    let got: Vec<(Vec<u8>, Vec<u8>)> = s.iter().map(|kv| kv.unwrap()).collect();
    let want: Vec<(Vec<u8>, Vec<u8>)> = [(&b"a"[..], &b"3"[..]), (b"kept", b"new"), (b"z", b"2")]
        .iter()
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect();
    assert_eq!(got, want);
    assert_eq!(s.len(), 3);
    assert!(s.check().unwrap().is_ok());
    // Bad entries fail the whole batch before anything is written.
    let big = vec![0u8; daxkv::MAX_KEY + 1];
    assert!(s.write_batch_ref(&[(b"new", Some(b"x")), (&big, Some(b"x"))]).is_err());
    assert!(s.write_batch_ref(&[(b"new", Some(b"x")), (b"", None)]).is_err());
    assert_eq!(s.get(b"new").unwrap(), None);
}

/// `Store::prefetch` is a hint over leaves it does not lock: while another
/// thread splits, deletes and frees, it never panics, never changes what a
/// lookup answers.
#[test]
fn prefetch_is_only_a_hint() {
    let dir = ShmDir::new("prefetch");
    let s = dir.pmem_store("p.pool", 64 << 20);
    let key = |i: u64| format!("k{:08}", i.wrapping_mul(0x9e37_79b9) % 100_000).into_bytes();
    for i in 0..5_000u64 {
        s.put(&key(i), &i.to_le_bytes()).unwrap();
    }
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|sc| {
        sc.spawn(|| {
            // Splits (new keys), replacements and deletes (freed records).
            for i in 5_000..40_000u64 {
                s.put(&key(i), &i.to_le_bytes()).unwrap();
                if i % 3 == 0 {
                    s.delete(&key(i - 4_000)).unwrap();
                }
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        let mut rounds = 0u64;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) || rounds < 100 {
            let base = rounds * 16;
            let keys: Vec<Vec<u8>> = (base..base + 16).map(key).chain([Vec::new(), vec![0xff; 300]]).collect();
            let refs: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
            s.prefetch(&refs);
            rounds += 1;
        }
    });
    // Lookups answer as they would have without any prefetch.
    let keys: Vec<Vec<u8>> = (0..40_000u64).map(key).collect();
    let refs: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
    let before: Vec<Option<Vec<u8>>> = keys.iter().map(|k| s.get(k).unwrap()).collect();
    s.prefetch(&refs);
    let after: Vec<Option<Vec<u8>>> = keys.iter().map(|k| s.get(k).unwrap()).collect();
    assert_eq!(before, after);
    assert!(before.iter().any(Option::is_some) && before.iter().any(Option::is_none));
    let rep = s.check().unwrap();
    assert!(rep.is_ok(), "{:?}", rep.problems);
    s.close().unwrap();
    drop(dir);
}

/// `Tx::writes_in`: a transaction's own writes in a range, in key order,
/// the last write to a key winning; every shape of range, including an
/// empty or inverted one (which `BTreeMap::range` would panic on).
#[test]
fn transaction_writes_in_a_range() {
    use std::ops::Bound::{Excluded, Included, Unbounded};
    let dir = ShmDir::new("writes-in");
    let s = dir.pmem_store("p.pool", 16 << 20);
    s.put(b"b", b"stored").unwrap();
    s.transaction(|tx| {
        tx.put(b"d", b"1")?;
        tx.put(b"a", b"2")?;
        tx.delete(b"b")?;
        tx.put(b"c", b"3")?;
        tx.put(b"c", b"4")?;
        let all: Vec<(&[u8], Option<&[u8]>)> = tx.writes_in((Unbounded, Unbounded)).collect();
        assert_eq!(all, [(&b"a"[..], Some(&b"2"[..])), (b"b", None), (b"c", Some(b"4")), (b"d", Some(b"1"))]);
        let keys = |lo, hi| tx.writes_in((lo, hi)).map(|(k, _)| k.to_vec()).collect::<Vec<_>>();
        assert_eq!(keys(Included(&b"b"[..]), Excluded(&b"d"[..])), [b"b".to_vec(), b"c".to_vec()]);
        assert_eq!(keys(Excluded(&b"b"[..]), Included(&b"d"[..])), [b"c".to_vec(), b"d".to_vec()]);
        assert_eq!(keys(Excluded(&b"c"[..]), Unbounded), [b"d".to_vec()]);
        for (lo, hi) in [
            (Included(&b"c"[..]), Excluded(&b"c"[..])),
            (Excluded(&b"c"[..]), Included(&b"c"[..])),
            (Excluded(&b"c"[..]), Excluded(&b"c"[..])),
            (Included(&b"d"[..]), Included(&b"a"[..])),
            (Excluded(&b"z"[..]), Excluded(&b"a"[..])),
        ] {
            assert!(keys(lo, hi).is_empty(), "{lo:?}..{hi:?}");
        }
        assert_eq!(keys(Included(&b"c"[..]), Included(&b"c"[..])), [b"c".to_vec()]);
        Ok(())
    })
    .unwrap();
    // The store itself sees them only after the commit.
    let got: Vec<Vec<u8>> = s.iter().map(|kv| kv.unwrap().0).collect();
    assert_eq!(got, [b"a".to_vec(), b"c".to_vec(), b"d".to_vec()]);
    s.close().unwrap();
    drop(dir);
}
