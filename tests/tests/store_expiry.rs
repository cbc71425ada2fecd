//! Keys that expire: reads, scans, transactions and compare-and-swap treat
//! an expired key as absent; its record stays (counted by `len`) until a
//! write or `purge_expired` removes it; expiries survive a clean close and
//! a crash, in records of every size the writer lays out differently.

use daxkv::{Backend, Options, Persistence, Store};
use daxkv_tests::ShmDir;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn opts() -> Options {
    Options::new().pool_size(64 << 20).create_if_missing(true).persistence(Persistence::Force(Backend::Pmem))
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Far ahead: never reached while a test runs.
const LATER: u64 = 4_000_000_000_000;
/// Long past.
const PAST: u64 = 1;

#[test]
fn an_expired_key_is_absent_to_every_read() {
    let d = ShmDir::new("expiry-reads");
    let s = Store::open(d.0.join("p"), &opts()).unwrap();
    s.put(b"a", b"plain").unwrap();
    s.put_with_expiry(b"b", b"later", Some(LATER)).unwrap();
    s.put_with_expiry(b"c", b"gone", Some(PAST)).unwrap();
    s.put(b"d", b"plain too").unwrap();

    assert_eq!(s.get(b"b").unwrap().as_deref(), Some(&b"later"[..]));
    assert_eq!(s.expiry(b"a").unwrap(), Some(None));
    assert_eq!(s.expiry(b"b").unwrap(), Some(Some(LATER)));
    assert_eq!(s.get(b"c").unwrap(), None);
    assert!(s.get_ref(b"c").unwrap().is_none());
    assert!(!s.contains(b"c").unwrap());
    assert_eq!(s.expiry(b"c").unwrap(), None);
    assert_eq!(s.expiry(b"zz").unwrap(), None);

    let keys = |it: daxkv::Iter<'_>| it.map(|p| p.unwrap().0).collect::<Vec<_>>();
    assert_eq!(keys(s.iter()), [b"a".to_vec(), b"b".to_vec(), b"d".to_vec()]);
    assert_eq!(keys(s.range_rev(b"b".to_vec()..)), [b"d".to_vec(), b"b".to_vec()]);
    assert_eq!(keys(s.prefix(b"c")), Vec::<Vec<u8>>::new());

    // The expired record is still there, and counted, until removed.
    assert_eq!(s.len(), 4);
    let r = s.transaction(|tx| {
        assert_eq!(tx.get(b"c")?, None);
        assert_eq!(tx.get_with_expiry(b"b")?, Some((b"later".to_vec(), Some(LATER))));
        tx.delete(b"c")
    });
    assert!(!r.unwrap(), "an expired key was not present");
    assert_eq!(s.len(), 3);

    // Compare-and-swap sees an expired key as absent.
    s.put_with_expiry(b"e", b"old", Some(PAST)).unwrap();
    assert_eq!(s.compare_and_swap(b"e", Some(b"old"), Some(b"new")).unwrap(), Err(None));
    assert_eq!(s.compare_and_swap(b"e", None, Some(b"new")).unwrap(), Ok(()));
    assert_eq!(s.get(b"e").unwrap().as_deref(), Some(&b"new"[..]));
    assert_eq!(s.expiry(b"e").unwrap(), Some(None));

    // Delete removes an expired record but says it was not there.
    s.put_with_expiry(b"f", b"x", Some(PAST)).unwrap();
    assert_eq!(s.len(), 5);
    assert!(!s.delete(b"f").unwrap());
    assert_eq!(s.len(), 4);
    // b (later) only: c, f deleted; e replaced without an expiry.
    assert_eq!(s.stats().keys_with_expiry, 1);
    assert!(s.check().unwrap().is_ok());
    s.clear().unwrap();
    assert_eq!(s.stats().keys_with_expiry, 0);
}

#[test]
fn a_key_expires_when_the_clock_passes_its_time() {
    let d = ShmDir::new("expiry-clock");
    let s = Store::open(d.0.join("p"), &opts()).unwrap();
    let at = now_ms() + 150;
    s.put_with_expiry(b"k", b"v", Some(at)).unwrap();
    // Only the direction of time is relied on: after the sleep the time
    // has certainly passed.
    std::thread::sleep(Duration::from_millis(300));
    assert!(now_ms() > at);
    assert_eq!(s.get(b"k").unwrap(), None);
    assert_eq!(s.expiry(b"k").unwrap(), None);
}

#[test]
fn set_expiry_keeps_the_value() {
    let d = ShmDir::new("expiry-set");
    let s = Store::open(d.0.join("p"), &opts()).unwrap();
    s.put(b"k", b"value").unwrap();
    assert!(s.set_expiry(b"k", Some(LATER)).unwrap());
    assert_eq!(s.expiry(b"k").unwrap(), Some(Some(LATER)));
    assert_eq!(s.get(b"k").unwrap().as_deref(), Some(&b"value"[..]));
    assert!(s.set_expiry(b"k", None).unwrap());
    assert_eq!(s.expiry(b"k").unwrap(), Some(None));
    assert!(!s.set_expiry(b"missing", Some(LATER)).unwrap());
    assert!(s.set_expiry(b"k", Some(PAST)).unwrap());
    assert_eq!(s.get(b"k").unwrap(), None);
    assert!(!s.set_expiry(b"k", None).unwrap(), "an expired key cannot be revived");
    // A plain put clears an expiry.
    s.put_with_expiry(b"j", b"1", Some(LATER)).unwrap();
    s.put(b"j", b"2").unwrap();
    assert_eq!(s.expiry(b"j").unwrap(), Some(None));
    assert_eq!(s.len(), 2);
    assert!(s.check().unwrap().is_ok());
}

#[test]
fn batches_and_transactions_carry_expiries() {
    let d = ShmDir::new("expiry-batch");
    let s = Store::open(d.0.join("p"), &opts()).unwrap();
    let big = vec![7u8; 5000];
    s.write_batch_with_expiry(&[
        (b"a", Some(b"1"), Some(LATER)),
        (b"b", Some(&big), Some(PAST)),
        (b"c", Some(b"3"), None),
        (b"a", Some(b"1 again"), Some(LATER + 1)),
    ])
    .unwrap();
    assert_eq!(s.get(b"a").unwrap().as_deref(), Some(&b"1 again"[..]));
    assert_eq!(s.expiry(b"a").unwrap(), Some(Some(LATER + 1)));
    assert_eq!(s.get(b"b").unwrap(), None);
    assert_eq!(s.expiry(b"c").unwrap(), Some(None));
    s.transaction(|tx| {
        tx.put_with_expiry(b"d", b"4", Some(LATER))?;
        assert_eq!(tx.get_with_expiry(b"d")?, Some((b"4".to_vec(), Some(LATER))));
        assert_eq!(tx.expiry(b"d")?, Some(Some(LATER)));
        assert_eq!(tx.expiry(b"a")?, Some(Some(LATER + 1)));
        assert_eq!(tx.expiry(b"b")?, None, "expired");
        assert_eq!(tx.expiry(b"c")?, Some(None));
        tx.put_with_expiry(b"e", b"5", Some(PAST))?;
        // The transaction's own expired write reads as absent already.
        assert_eq!(tx.get(b"e")?, None);
        assert_eq!(tx.expiry(b"e")?, None);
        Ok(())
    })
    .unwrap();
    assert_eq!(s.expiry(b"d").unwrap(), Some(Some(LATER)));
    assert_eq!(s.get(b"e").unwrap(), None);
    assert_eq!(s.len(), 5);
    assert_eq!(s.stats().keys_with_expiry, 4);
    assert!(s.check().unwrap().is_ok());
}

#[test]
fn purge_removes_only_expired_keys() {
    let d = ShmDir::new("expiry-purge");
    let s = Store::open(d.0.join("p"), &opts()).unwrap();
    let n = 5_000u32;
    for i in 0..n {
        let k = format!("key{i:05}");
        let at = match i % 3 {
            0 => None,
            1 => Some(LATER),
            _ => Some(PAST),
        };
        s.put_with_expiry(k.as_bytes(), &i.to_le_bytes(), at).unwrap();
    }
    assert_eq!(s.len(), u64::from(n));
    let (mut from, mut examined, mut removed, mut calls) = (Vec::new(), 0, 0, 0);
    loop {
        let p = s.purge_expired(&from, 700).unwrap();
        assert!(p.examined <= 700);
        examined += p.examined;
        removed += p.removed;
        calls += 1;
        match p.next {
            Some(k) => from = k,
            None => break,
        }
    }
    let expired = (0..n).filter(|i| i % 3 == 2).count() as u64;
    assert_eq!(removed, expired);
    // Every key is looked at once (the removed ones are gone before the
    // next call starts past them).
    assert_eq!(examined, u64::from(n));
    assert_eq!(calls, u64::from(n).div_ceil(700));
    assert_eq!(s.len(), u64::from(n) - expired);
    assert_eq!(s.stats().keys_with_expiry, (0..n).filter(|i| i % 3 == 1).count() as u64);
    for i in 0..n {
        let v = s.get(format!("key{i:05}").as_bytes()).unwrap();
        assert_eq!(v.is_some(), i % 3 != 2, "key{i:05}");
    }
    assert_eq!(s.purge_expired(b"", usize::MAX).unwrap().removed, 0);
    assert!(s.check().unwrap().is_ok());
}

/// Values laid out three ways by the record writer (on the stack, in one
/// copy, and with the value copied apart from its header and expiry).
fn sizes() -> [usize; 4] {
    [0, 100, 3000, 70_000]
}

fn fill(s: &Store) {
    for (i, n) in sizes().into_iter().enumerate() {
        let v = vec![i as u8 + 1; n];
        s.put_with_expiry(format!("later{i}").as_bytes(), &v, Some(LATER + i as u64)).unwrap();
        s.put_with_expiry(format!("past{i}").as_bytes(), &v, Some(PAST)).unwrap();
        s.put(format!("plain{i}").as_bytes(), &v).unwrap();
    }
}

fn verify(s: &Store) {
    for (i, n) in sizes().into_iter().enumerate() {
        let v = vec![i as u8 + 1; n];
        assert_eq!(s.get(format!("later{i}").as_bytes()).unwrap(), Some(v.clone()));
        assert_eq!(s.expiry(format!("later{i}").as_bytes()).unwrap(), Some(Some(LATER + i as u64)));
        assert_eq!(s.get(format!("past{i}").as_bytes()).unwrap(), None);
        assert_eq!(s.get(format!("plain{i}").as_bytes()).unwrap(), Some(v));
    }
    assert_eq!(s.len(), 3 * sizes().len() as u64);
    assert_eq!(s.stats().keys_with_expiry, 2 * sizes().len() as u64);
    // `check` verifies every record's checksum, expiry included.
    let rep = s.check().unwrap();
    assert!(rep.is_ok(), "{:?}", rep.problems);
}

#[test]
fn expiries_survive_a_clean_close_and_a_crash() {
    let d = ShmDir::new("expiry-reopen");
    let p = d.0.join("p");
    let s = Store::open(&p, &opts()).unwrap();
    fill(&s);
    verify(&s);
    s.close().unwrap();
    let s = Store::open(&p, &opts()).unwrap();
    assert!(s.stats().opened_clean);
    verify(&s);
    s.abandon();
    let s = Store::open(&p, &opts()).unwrap();
    assert!(!s.stats().opened_clean);
    verify(&s);
}

#[test]
fn a_damaged_expiry_fails_the_record_checksum() {
    let d = ShmDir::new("expiry-damage");
    let p = d.0.join("p");
    let s = Store::open(&p, &opts()).unwrap();
    s.put_with_expiry(b"key", b"value", Some(LATER)).unwrap();
    s.close().unwrap();
    // The expiry is the record's last 8 bytes: change its lowest byte.
    let mut b = std::fs::read(&p).unwrap();
    let at = b.windows(8).position(|w| w == LATER.to_le_bytes()).expect("the expiry is in the pool");
    b[at] ^= 1;
    std::fs::write(&p, &b).unwrap();
    let s = Store::open(&p, &opts()).unwrap();
    let rep = s.check().unwrap();
    assert!(rep.problems.iter().any(|p| p.contains("checksum")), "{:?}", rep.problems);
}

/// Writers put keys plain, far ahead and long past while a purge loops
/// and readers get and scan: a value written already expired is never
/// seen, a live key is never purged (each writer reads its own write back),
/// and the counts agree with the pool at the end.
#[test]
fn purge_and_readers_run_beside_writers() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let d = ShmDir::new("expiry-conc");
    let s = Arc::new(Store::open(d.0.join("p"), &opts()).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    // A value says whether it was written already expired.
    let value = |dead: bool, n: u64| {
        let mut v = vec![u8::from(dead)];
        v.extend_from_slice(&n.to_le_bytes());
        v
    };
    let writers: Vec<_> = (0..2u64)
        .map(|w| {
            let s = s.clone();
            std::thread::spawn(move || {
                for n in 0..40_000u64 {
                    let k = format!("k{:04}", (n * 7919 + w) % 2000 * 2 + w);
                    match n % 3 {
                        0 => s.put_with_expiry(k.as_bytes(), &value(true, n), Some(PAST)).unwrap(),
                        1 => {
                            s.put_with_expiry(k.as_bytes(), &value(false, n), Some(LATER)).unwrap();
                            assert_eq!(s.get(k.as_bytes()).unwrap(), Some(value(false, n)), "a live key was lost");
                        }
                        _ => {
                            s.put(k.as_bytes(), &value(false, n)).unwrap();
                            assert_eq!(s.get(k.as_bytes()).unwrap(), Some(value(false, n)), "a live key was lost");
                        }
                    }
                }
            })
        })
        .collect();
    let purger = {
        let (s, stop) = (s.clone(), stop.clone());
        std::thread::spawn(move || {
            let (mut from, mut removed) = (Vec::new(), 0);
            while !stop.load(Ordering::Relaxed) {
                let p = s.purge_expired(&from, 300).unwrap();
                removed += p.removed;
                from = p.next.unwrap_or_default();
            }
            removed
        })
    };
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let (s, stop) = (s.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let k = format!("k{:04}", (n * 31 + r) % 4000);
                    if let Some(v) = s.get(k.as_bytes()).unwrap() {
                        assert_eq!(v[0], 0, "{k}: a value written expired was read");
                    }
                    if n.is_multiple_of(100) {
                        for (k, v) in s.range(k.into_bytes()..).take(50).map(Result::unwrap) {
                            assert_eq!(v[0], 0, "{k:?}: a value written expired was scanned");
                        }
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    assert!(purger.join().unwrap() > 0, "the purge removed nothing");
    let rep = s.check().unwrap();
    assert!(rep.is_ok(), "{:?}", rep.problems);
    let rest = s.purge_expired(b"", usize::MAX).unwrap();
    let live = s.iter().count() as u64;
    assert_eq!(s.len(), live, "{} removed by the last purge", rest.removed);
    let ahead = s.iter().filter(|p| s.expiry(&p.as_ref().unwrap().0).unwrap() == Some(Some(LATER))).count();
    assert_eq!(s.stats().keys_with_expiry, ahead as u64);
}
