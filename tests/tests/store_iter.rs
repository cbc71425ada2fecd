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
