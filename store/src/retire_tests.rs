//! Blocks of leaves that leave the tree (merged, or cut off by a clear)
//! are retired, not freed: a reader pinned before the change may still
//! read them before its version check sends it back.

use crate::leaf::LEAF_BYTES;
use crate::{Backend, Options, Persistence, Store};

fn store(name: &str) -> (Store, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("daxkv-retire-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let o = Options::new().pool_size(16 << 20).persistence(Persistence::Force(Backend::Volatile));
    let s = Store::create(dir.join("p.pool"), &o).unwrap();
    for i in 0..200 {
        s.put(format!("k{i:03}").as_bytes(), b"v").unwrap();
    }
    (s, dir)
}

/// `gone` are the blocks of leaves let go while `pin` was held: no
/// leaf-sized allocation returns one of them while the pin lives, and
/// each comes back once it is dropped (none leaked).
fn reused_only_after_the_pin(s: &Store, pin: daxkv_alloc::Guard, gone: &[u64]) {
    let mut taken = Vec::new();
    for _ in 0..300 {
        s.heap.collect();
        taken.push(s.heap.alloc(LEAF_BYTES).unwrap());
    }
    for off in gone {
        assert!(!taken.contains(off), "leaf {off} reused under a reader's pin");
    }
    drop(pin);
    for _ in 0..300 {
        s.heap.collect();
        taken.push(s.heap.alloc(LEAF_BYTES).unwrap());
    }
    for off in gone {
        assert!(taken.contains(off), "leaf {off} never reused after the pin");
    }
}

/// A leaf merged into its predecessor stays as it was while a reader
/// pinned before the merge may still read it.
#[test]
fn a_merged_leaf_waits_for_pinned_readers() {
    let (s, dir) = store("merge");
    let last = s.index.load().rightmost().clone();
    let sep = last.sep.to_vec();
    let pin = s.heap.pin();
    for i in (0..200).rev() {
        let k = format!("k{i:03}").into_bytes();
        if k < sep || last.is_dead() {
            break;
        }
        assert!(s.delete(&k).unwrap());
    }
    assert!(last.is_dead(), "the last leaf did not merge");
    reused_only_after_the_pin(&s, pin, &[last.off]);
    drop(s);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// So do the leaves a clear cuts off.
#[test]
fn cleared_leaves_wait_for_pinned_readers() {
    let (s, dir) = store("clear");
    let mut all = Vec::new();
    s.index.load().collect(&mut all);
    let gone: Vec<u64> = all.iter().map(|(_, l)| l.off).filter(|&o| o != s.head).collect();
    assert!(gone.len() >= 2, "{} leaves", all.len());
    let pin = s.heap.pin();
    assert_eq!(s.clear().unwrap(), 200);
    reused_only_after_the_pin(&s, pin, &gone);
    drop(s);
    std::fs::remove_dir_all(&dir).unwrap();
}
