//! Write batches and transactions larger than a leaf: they overflow into
//! new leaves linked by the same commit, stay atomic, and leave a sound
//! tree.

use daxkv::{Backend, Options, Persistence, Store};
use std::collections::BTreeMap;

#[test]
fn batches_bigger_than_a_leaf() {
    let dir = std::path::Path::new("/dev/shm").join(format!("daxkv-batch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let opts =
        Options::new().pool_size(64 << 20).persistence(Persistence::Force(Backend::Pmem)).create_if_missing(true);
    let s = Store::open(dir.join("b.pool"), &opts).unwrap();
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
    let s = Store::open(dir.join("b.pool"), &opts).unwrap();
    assert_eq!(s.len(), model.len() as u64 + 200);
    assert!(s.check().unwrap().is_ok());
    drop(s);
    std::fs::remove_dir_all(&dir).unwrap();
}
