//! Ordered iteration: keys that share their first 8 bytes (the iterator
//! sorts a leaf's records on those bytes first), both directions, the
//! borrowing `next_ref` mixed with `next`, across many leaves.

use daxkv_tests::ShmDir;
use std::collections::BTreeMap;

fn keys() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for i in 0..400u32 {
        // 8-byte stems, then endings that differ in length and in bytes
        // below and above the stem's: "", "\0", "\0\0", "\x01", "\xff".
        let stem = format!("k{:07}", i * 13 % 400).into_bytes();
        for end in [&b""[..], b"\0", b"\0\0", b"\x01", b"\xff", b"\xff\x00"] {
            let mut k = stem.clone();
            k.extend_from_slice(end);
            out.push(k);
        }
    }
    // Keys shorter than 8 bytes, including prefixes of the stems.
    for k in [&b"k"[..], b"k0", b"k00000", b"\0", b"\xff"] {
        out.push(k.to_vec());
    }
    out
}

#[test]
fn order_with_shared_eight_byte_prefixes() {
    let dir = ShmDir::new("iter");
    let s = dir.pmem_store("i.pool", 64 << 20);
    let mut model = BTreeMap::new();
    for (n, k) in keys().into_iter().enumerate() {
        let v = (n as u32).to_le_bytes().to_vec();
        s.put(&k, &v).unwrap();
        model.insert(k, v);
    }
    assert!(s.stats().leaves > 10, "leaves: {}", s.stats().leaves);

    let want: Vec<(Vec<u8>, Vec<u8>)> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let got: Vec<_> = s.iter().map(|kv| kv.unwrap()).collect();
    assert_eq!(got, want, "forward");
    let mut rev = want.clone();
    rev.reverse();
    let got: Vec<_> = s.range_rev::<&[u8]>(..).map(|kv| kv.unwrap()).collect();
    assert_eq!(got, rev, "reverse");

    // next_ref and next alternate over one iterator, in both directions.
    for fwd in [true, false] {
        let mut it = if fwd { s.iter() } else { s.range_rev::<&[u8]>(..) };
        let mut got = Vec::new();
        loop {
            let item = if got.len() % 2 == 0 {
                it.next_ref().map(|(k, v)| (k.to_vec(), v.to_vec()))
            } else {
                it.next().map(|kv| kv.unwrap())
            };
            match item {
                Some(kv) => got.push(kv),
                None => break,
            }
        }
        assert_eq!(got, if fwd { want.clone() } else { rev.clone() }, "mixed, forward {fwd}");
    }

    // Ranges and prefixes that start and end between keys sharing a stem.
    let lo = b"k0000130\0".to_vec();
    let hi = b"k0000260\xff".to_vec();
    let got: Vec<_> = s.range(lo.clone()..hi.clone()).map(|kv| kv.unwrap().0).collect();
    let exp: Vec<_> = model.range(lo.clone()..hi.clone()).map(|(k, _)| k.clone()).collect();
    assert_eq!(got, exp, "range");
    let got: Vec<_> = s.range_rev(lo.clone()..=hi.clone()).map(|kv| kv.unwrap().0).collect();
    let mut exp: Vec<_> = model.range(lo..=hi).map(|(k, _)| k.clone()).collect();
    exp.reverse();
    assert_eq!(got, exp, "range_rev");
    let got: Vec<_> = s.prefix(b"k0000013").map(|kv| kv.unwrap().0).collect();
    let exp: Vec<_> = model.keys().filter(|k| k.starts_with(b"k0000013")).cloned().collect();
    assert_eq!(got, exp, "prefix");
    assert_eq!(exp.len(), 6, "the stem and its five longer keys");

    s.close().unwrap();
    drop(dir);
}

/// Scans keep a key-ordered view of each leaf they pass: ranges with every
/// kind of bound, forward and reverse, agree with a model while puts and
/// deletes change the leaves between scans (a view of an older leaf
/// version must never be used).
#[test]
fn ranges_agree_with_a_model_as_leaves_change() {
    use std::ops::Bound::{self, Excluded, Included, Unbounded};
    let dir = ShmDir::new("iter-views");
    let s = dir.pmem_store("v.pool", 64 << 20);
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let all = keys();
    for k in all.iter().step_by(2) {
        s.put(k, k).unwrap();
        model.insert(k.clone(), k.clone());
    }
    for round in 0..300 {
        // A few writes, then scans through the same leaves.
        for _ in 0..3 {
            let k = &all[rnd(all.len() as u64) as usize];
            if rnd(3) == 0 {
                s.delete(k).unwrap();
                model.remove(k);
            } else {
                let v = format!("{round}").into_bytes();
                s.put(k, &v).unwrap();
                model.insert(k.clone(), v);
            }
        }
        for _ in 0..4 {
            let bound = |rnd: &mut dyn FnMut(u64) -> u64| -> Bound<Vec<u8>> {
                let k = all[rnd(all.len() as u64) as usize].clone();
                match rnd(3) {
                    0 => Included(k),
                    1 => Excluded(k),
                    _ => Unbounded,
                }
            };
            let (lo, hi) = (bound(&mut rnd), bound(&mut rnd));
            if let (Included(a) | Excluded(a), Included(b) | Excluded(b)) = (&lo, &hi)
                && (a > b || a == b && (matches!(lo, Excluded(_)) || matches!(hi, Excluded(_))))
            {
                continue; // BTreeMap::range panics on these
            }
            let want: Vec<(Vec<u8>, Vec<u8>)> =
                model.range((lo.clone(), hi.clone())).map(|(k, v)| (k.clone(), v.clone())).collect();
            let got: Vec<_> = s.range((lo.clone(), hi.clone())).map(|kv| kv.unwrap()).collect();
            assert_eq!(got, want, "round {round}: range {lo:?}..{hi:?}");
            let mut want = want;
            want.reverse();
            let got: Vec<_> = s.range_rev((lo.clone(), hi.clone())).map(|kv| kv.unwrap()).collect();
            assert_eq!(got, want, "round {round}: reverse range {lo:?}..{hi:?}");
        }
    }
    assert!(s.check().unwrap().is_ok());
}
