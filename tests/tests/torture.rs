//! Kill torture in quick mode: 100 SIGKILLs of a child writing to a pool
//! on /dev/shm; after each, every acknowledged operation is there and
//! `check()` is clean.

use daxkv_tests::torture;
use std::path::Path;

#[test]
fn a_hundred_kills_lose_nothing() {
    let bin = Path::new(env!("CARGO_BIN_EXE_daxkv-crash"));
    let pool = Path::new("/dev/shm").join(format!("daxkv-torture-test-{}.pool", std::process::id()));
    let r = torture::run(bin, &pool, 100, 11);
    let _ = std::fs::remove_file(&pool);
    eprintln!("{} kills, {} acknowledged ops, {} in flight found applied", r.kills, r.acked, r.inflight_applied);
    assert!(r.failures.is_empty(), "{:#?}", r.failures);
    assert_eq!(r.kills, 100);
    assert_eq!(r.lost, 0);
    assert!(r.acked > 1000, "the child must get real work done between kills ({} ops)", r.acked);
}
