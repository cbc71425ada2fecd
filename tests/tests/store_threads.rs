//! A thread keeps some state between its writes to a store (the index
//! snapshot it last routed with, and the last steps of its last insert:
//! see `local` in the store crate). That state must never leak from one
//! store into another: one thread writing two stores in turn, with splits
//! in both, and a thread that closes a store and opens another, leave
//! every store exactly as a model says, with `check()` clean, before and
//! after a reopen.

use daxkv::Store;
use daxkv_tests::ShmDir;
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::collections::BTreeMap;

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

fn agrees(s: &Store, m: &Model, what: &str) {
    assert_eq!(s.len(), m.len() as u64, "{what}: len");
    for (k, v) in m {
        assert_eq!(s.get(k).unwrap().as_deref(), Some(&v[..]), "{what}: get {k:?}");
    }
    let keys: Vec<Vec<u8>> = s.iter().map(|e| e.unwrap().0).collect();
    assert_eq!(keys, m.keys().cloned().collect::<Vec<_>>(), "{what}: scan");
    let report = s.check().unwrap();
    assert!(report.is_ok(), "{what}: check: {:?}", report.problems);
}

/// A put, overwrite or delete on `s` and its model; keys are `prefix` and
/// a number, so the two stores never share a key.
fn step(s: &Store, m: &mut Model, rng: &mut StdRng, prefix: &[u8]) {
    let mut k = prefix.to_vec();
    k.extend_from_slice(format!("{:06}", rng.gen_range(0..4000u32)).as_bytes());
    if rng.gen_ratio(1, 8) {
        assert_eq!(s.delete(&k).unwrap(), m.remove(&k).is_some());
    } else {
        let v = vec![rng.r#gen::<u8>(); rng.gen_range(0..200)];
        s.put(&k, &v).unwrap();
        m.insert(k, v);
    }
}

#[test]
fn one_thread_writing_two_stores_in_turn() {
    let d = ShmDir::new("threads-two");
    let (a, b) = (d.pmem_store("a", 32 << 20), d.pmem_store("b", 32 << 20));
    let (mut ma, mut mb) = (Model::new(), Model::new());
    let mut rng = StdRng::seed_from_u64(7);
    // Runs of varying length on each, so that the two indexes change
    // (split) at different times and their generations cross each other.
    for _ in 0..400 {
        for _ in 0..rng.gen_range(1..40) {
            step(&a, &mut ma, &mut rng, b"a");
        }
        for _ in 0..rng.gen_range(1..40) {
            step(&b, &mut mb, &mut rng, b"b");
        }
    }
    assert!(a.stats().leaves > 20 && b.stats().leaves > 20, "both split");
    agrees(&a, &ma, "a");
    agrees(&b, &mb, "b");
    drop((a, b));
    agrees(&d.pmem_store("a", 32 << 20), &ma, "a reopened");
    agrees(&d.pmem_store("b", 32 << 20), &mb, "b reopened");
}

#[test]
fn a_store_closed_and_another_opened_on_the_same_thread() {
    let d = ShmDir::new("threads-reopen");
    let mut rng = StdRng::seed_from_u64(8);
    let mut models = [Model::new(), Model::new(), Model::new()];
    // Each round opens one of three pools, writes it, and closes it; the
    // next round's store may well live at the same address.
    for round in 0..30 {
        let i = round % 3;
        let name = format!("p{i}");
        let s = d.pmem_store(&name, 16 << 20);
        for _ in 0..300 {
            step(&s, &mut models[i], &mut rng, name.as_bytes());
        }
        agrees(&s, &models[i], &name);
    }
    for (i, m) in models.iter().enumerate() {
        agrees(&d.pmem_store(&format!("p{i}"), 16 << 20), m, "reopened");
    }
}

/// Writes a store from its destructor, run when its thread exits.
struct WriteOnExit(std::sync::Arc<Store>);

impl Drop for WriteOnExit {
    fn drop(&mut self) {
        let s = &self.0;
        // Enough writes to split leaves and to fill and reuse allocator
        // caches, a large value (an extent, not a slab block), deletes,
        // reads that borrow, and a scan: every path that pins or allocates.
        for i in 0..2000u32 {
            s.put(format!("exit{i:05}").as_bytes(), &[i as u8; 40]).unwrap();
        }
        s.put(b"exit-large", &vec![9u8; 100_000]).unwrap();
        for i in (0..2000u32).step_by(2) {
            assert!(s.delete(format!("exit{i:05}").as_bytes()).unwrap());
        }
        let v = s.get_ref(b"exit00001").unwrap().expect("present");
        assert_eq!(&v[..], &[1u8; 40][..]);
        drop(v);
        assert_eq!(s.prefix(b"exit0").count(), 1000);
    }
}

thread_local! {
    static ON_EXIT: std::cell::RefCell<Option<WriteOnExit>> = const { std::cell::RefCell::new(None) };
}

#[test]
fn a_store_used_from_a_thread_local_destructor() {
    let d = ShmDir::new("threads-tls-exit");
    let s = std::sync::Arc::new(d.pmem_store("p", 32 << 20));
    let mut model = Model::new();
    for t in 0..3u8 {
        let s2 = s.clone();
        std::thread::spawn(move || {
            // Registered first, so destroyed last: by the time its
            // destructor runs, the thread-locals the store and its
            // allocator use for this thread are gone.
            ON_EXIT.with(|e| *e.borrow_mut() = Some(WriteOnExit(s2.clone())));
            s2.put(&[b'x', t], b"before exit").unwrap();
        })
        .join()
        .expect("the thread exits cleanly");
        model.insert(vec![b'x', t], b"before exit".to_vec());
    }
    for i in (1..2000u32).step_by(2) {
        model.insert(format!("exit{i:05}").into_bytes(), vec![i as u8; 40]);
    }
    model.insert(b"exit-large".to_vec(), vec![9u8; 100_000]);
    agrees(&s, &model, "after the threads exited");
    drop(s);
    agrees(&d.pmem_store("p", 32 << 20), &model, "reopened");
}
