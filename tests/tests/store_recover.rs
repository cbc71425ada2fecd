//! Crash-path recovery of a pool big enough that its leaves are scanned by
//! several threads while another rebuilds the heap (more than 1,024
//! leaves, on any machine with two cores): inserts cut short are dropped
//! and repaired in every run of leaves, a leaf they empty is unlinked, and
//! damage anywhere refuses the open, naming the first damage in chain
//! order, before any repair is written.

use daxkv::{Backend, Options, Persistence, PoolError, Store};
use daxkv_tests::ShmDir;
use std::collections::BTreeMap;
use std::path::Path;

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

fn opts() -> Options {
    Options::new().pool_size(32 << 20).create_if_missing(true).persistence(Persistence::Force(Backend::Pmem))
}

/// 77,777 keys in random order, abandoned as by a crash.
fn pool(path: &Path) -> Model {
    let s = Store::open(path, &opts()).unwrap();
    let mut m = Model::new();
    for i in 0..77_777u64 {
        let k = format!("key{:09}", i.wrapping_mul(0x9e37_79b9) % 1_000_000_007).into_bytes();
        let v = format!("value {i}").into_bytes();
        s.put(&k, &v).unwrap();
        m.insert(k, v);
    }
    s.abandon();
    m
}

fn word(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn set_word(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// The leaves in chain order (superblock: head leaf at 72; leaf: bitmap
/// at 0, next at 8, slots at 80).
fn chain(b: &[u8]) -> Vec<usize> {
    let mut out = vec![word(b, 72) as usize];
    while let n @ 1.. = word(b, out[out.len() - 1] + 8) as usize {
        out.push(n);
    }
    out
}

fn live(b: &[u8], leaf: usize) -> Vec<usize> {
    (0..64).filter(|i| word(b, leaf) & (1 << i) != 0).collect()
}

fn slot_at(leaf: usize, i: usize) -> usize {
    leaf + 80 + 8 * i
}

/// The key of the record in slot `i` of `leaf` (record: klen u32, vlen
/// u32, crc u32, key, value).
fn key_in(b: &[u8], leaf: usize, i: usize) -> Vec<u8> {
    let rec = (word(b, slot_at(leaf, i)) & !1) as usize;
    let klen = u32::from_le_bytes(b[rec..rec + 4].try_into().unwrap()) as usize;
    b[rec + 12..rec + 12 + klen].to_vec()
}

/// Zero slot `i` of `leaf` with its bitmap bit left set: what a crash
/// leaves of a one-drain insert whose bitmap reached media first.
fn cut_short(b: &mut [u8], m: &mut Model, leaf: usize, i: usize) {
    m.remove(&key_in(b, leaf, i));
    set_word(b, slot_at(leaf, i), 0);
}

#[test]
fn inserts_cut_short_are_dropped_in_every_run_of_leaves() {
    let d = ShmDir::new("recover-cut");
    let p = d.0.join("p.pool");
    let mut m = pool(&p);
    let mut b = std::fs::read(&p).unwrap();
    let leaves = chain(&b);
    let n = leaves.len();
    assert!(n > 1024, "{n} leaves: too few for the threaded scan");
    // Leaves go to the heap in batches of 64: a run that ends in a part
    // batch checks that the last batch is sent too.
    assert!(!n.is_multiple_of(64), "{n} leaves");
    // One slot in a leaf of each run (and at the ends), and a whole leaf.
    let mut cut = 0;
    for at in [1, n / 10, n / 2 - 1, n / 2 + 1, 9 * n / 10, n - 1] {
        let i = live(&b, leaves[at])[0];
        cut_short(&mut b, &mut m, leaves[at], i);
        cut += 1;
    }
    let emptied = leaves[3 * n / 5];
    for i in live(&b, emptied) {
        cut_short(&mut b, &mut m, emptied, i);
        cut += 1;
    }
    std::fs::write(&p, &b).unwrap();

    let s = Store::open(&p, &opts()).unwrap();
    assert_eq!(s.stats().dropped_at_recovery, cut);
    assert_eq!(s.len(), m.len() as u64);
    let rep = s.check().unwrap();
    assert!(rep.is_ok(), "{rep:?}");
    for (k, v) in &m {
        assert_eq!(s.get(k).unwrap().as_deref(), Some(&v[..]), "{}", String::from_utf8_lossy(k));
    }
    let got: Model = s.iter().map(|kv| kv.unwrap()).collect();
    assert_eq!(got, m);
    s.abandon();

    // The repairs reached the pool: bits cleared, the emptied leaf out of
    // the chain, and the next recovery finds nothing to drop.
    let b = std::fs::read(&p).unwrap();
    let now = chain(&b);
    assert_eq!(now.len(), n - 1);
    assert!(!now.contains(&emptied));
    assert!(now.iter().all(|&l| live(&b, l).iter().all(|&i| word(&b, slot_at(l, i)) != 0)));
    let s = Store::open(&p, &opts()).unwrap();
    assert_eq!(s.stats().dropped_at_recovery, 0);
    assert_eq!(s.len(), m.len() as u64);
    s.close().unwrap();
}

#[test]
fn damage_in_any_run_refuses_the_open_before_any_repair() {
    let d = ShmDir::new("recover-damage");
    let p = d.0.join("p.pool");
    let mut m = pool(&p);
    let clean = std::fs::read(&p).unwrap();
    let leaves = chain(&clean);
    let n = leaves.len();
    let size = clean.len() as u64;
    // (leaves damaged, the leaf whose damage the error must name)
    let cases: [(&[usize], usize); 3] = [(&[n / 5], n / 5), (&[9 * n / 10], 9 * n / 10), (&[n / 4, 4 * n / 5], n / 4)];
    for (damaged, named) in cases {
        let mut b = clean.clone();
        // An insert cut short in the first and the last leaf, which a
        // successful open would repair.
        for at in [1, n - 1] {
            let i = live(&b, leaves[at])[0];
            cut_short(&mut b, &mut m, leaves[at], i);
        }
        // A record pointer past the end of the pool.
        for &at in damaged {
            let i = live(&b, leaves[at])[0];
            set_word(&mut b, slot_at(leaves[at], i), size + 4096);
        }
        std::fs::write(&p, &b).unwrap();
        match Store::open(&p, &opts()) {
            Err(PoolError::Corrupt { offset, why }) => {
                let i = live(&b, leaves[named])[0];
                assert_eq!(offset, slot_at(leaves[named], i) as u64, "{why}");
                assert!(why.contains("out of bounds"), "{why}");
            }
            Err(e) => panic!("{damaged:?}: {e}"),
            Ok(_) => panic!("{damaged:?}: opened"),
        }
        // No leaf was written: the inserts cut short are still there.
        let after = std::fs::read(&p).unwrap();
        for &l in &leaves {
            assert_eq!(after[l..l + 592], b[l..l + 592], "leaf {l} changed by a refused open");
        }
    }
}
