//! `daxkv::salvage` on damage that a crash cannot cause: it is reported,
//! never taken for an insert cut short, and what the saved index still
//! names is read even when the leaf chain skips it. (Sound crash images
//! are salvaged by the crash explorer, random damage by `store_corrupt`.)

use daxkv::{Backend, Options, Persistence, SalvageReport, Store};
use daxkv_tests::ShmDir;
use std::collections::BTreeMap;
use std::path::Path;

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

/// 2,000 keys (about 35 leaves) with `pmem` forced (one-drain inserts flag
/// their slots); closed cleanly or abandoned as by a crash.
fn pool(path: &Path, crashed: bool) -> Model {
    let opts = Options::new().pool_size(8 << 20).create_if_missing(true).persistence(Persistence::Force(Backend::Pmem));
    let s = Store::open(path, &opts).unwrap();
    let mut m = Model::new();
    for i in 0..2000u32 {
        let (k, v) =
            (format!("key{:06}", i.wrapping_mul(7919) % 100_000).into_bytes(), format!("value of {i}").repeat(3));
        s.put(&k, v.as_bytes()).unwrap();
        m.insert(k, v.into_bytes());
    }
    if crashed {
        s.abandon()
    } else {
        s.close().unwrap()
    }
    m
}

fn salvage(path: &Path) -> (Model, SalvageReport) {
    let mut got = Model::new();
    let rep = daxkv::salvage(path, |k, v, _| {
        got.insert(k.to_vec(), v.to_vec());
        Ok(())
    })
    .unwrap();
    (got, rep)
}

fn word(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// The leaves in chain order (leaf layout: bitmap at 0, next at 8, slots
/// at 80).
fn chain(b: &[u8]) -> Vec<usize> {
    let mut out = vec![word(b, 72) as usize];
    while let n @ 1.. = word(b, out[out.len() - 1] + 8) as usize {
        out.push(n);
    }
    out
}

/// A record whose slot is flagged as published by a one-drain insert,
/// damaged by one flipped bit (no word of it zero): a crash cannot do
/// that, so it is a problem, not an insert cut short.
#[test]
fn a_damaged_flagged_record_is_a_problem() {
    let d = ShmDir::new("salvage-flagged");
    let p = d.0.join("p.pool");
    let m = pool(&p, true);
    let mut b = std::fs::read(&p).unwrap();
    let bb = &b;
    let flagged = chain(bb)
        .into_iter()
        .flat_map(|l| (0..64).filter(move |i| word(bb, l) & (1 << i) != 0).map(move |i| word(bb, l + 80 + 8 * i)))
        .find(|w| w & 1 == 1)
        .expect("one-drain inserts left a flagged slot");
    let rec = (flagged & !1) as usize;
    b[rec + 12 + 3] ^= 0x10;
    std::fs::write(&p, &b).unwrap();
    let (got, rep) = salvage(&p);
    assert_eq!(rep.unfinished, 0, "{rep:?}");
    assert!(rep.problems.len() == 1 && rep.problems[0].contains("failing its checksum"), "{rep:?}");
    assert_eq!(got.len(), m.len() - 1);
    assert!(got.iter().all(|(k, v)| m[k] == *v));
}

/// After a clean close, a leaf's next pointer redirected past two leaves:
/// the chain alone would lose them, the saved index does not.
#[test]
fn leaves_the_chain_skips_are_read_from_the_saved_index() {
    let d = ShmDir::new("salvage-skip");
    let p = d.0.join("p.pool");
    let m = pool(&p, false);
    let mut b = std::fs::read(&p).unwrap();
    let leaves = chain(&b);
    assert!(leaves.len() > 10, "{} leaves", leaves.len());
    let skip_to = leaves[5] as u64;
    b[leaves[2] + 8..leaves[2] + 16].copy_from_slice(&skip_to.to_le_bytes());
    std::fs::write(&p, &b).unwrap();
    let (got, rep) = salvage(&p);
    assert_eq!(got, m, "{rep:?}");
    assert!(rep.problems.iter().any(|p| p.contains("2 leaves of the index saved")), "{rep:?}");
    // Open trusts the saved index after a clean close, and `check` sees
    // the chain skip them.
    let s = Store::open(&p, &Options::new()).unwrap();
    assert!(!s.check().unwrap().is_ok());
}
