//! Loom model of the group-commit protocol (`daxkv_log::group`), with a
//! fake drain that makes durable exactly what was written when it began.
//! Run: `RUSTFLAGS="--cfg loom" cargo test -p daxkv-log --release --test loom`.
#![cfg(loom)]

use daxkv_log::group::GroupCommit;
use loom::sync::atomic::{AtomicU64, Ordering};
use loom::sync::{Arc, Mutex};

/// The log as the protocol sees it: appends under a lock publish how far
/// entries are written; a drain persists what is written at that moment.
struct Model {
    gc: GroupCommit,
    next: Mutex<u64>,
    written: AtomicU64,
    persisted: AtomicU64,
    drains: AtomicU64,
}

impl Model {
    fn new() -> Model {
        Model {
            gc: GroupCommit::new(0),
            next: Mutex::new(0),
            written: AtomicU64::new(0),
            persisted: AtomicU64::new(0),
            drains: AtomicU64::new(0),
        }
    }

    fn append(&self) -> u64 {
        let mut n = self.next.lock().unwrap();
        *n += 1;
        self.written.store(*n, Ordering::Release);
        *n
    }

    /// Append, commit, and check the entry is durable when commit returns.
    fn append_commit(&self) {
        let seq = self.append();
        self.gc
            .commit(
                seq,
                || self.written.load(Ordering::Acquire),
                || {
                    let w = self.written.load(Ordering::Acquire);
                    self.persisted.fetch_max(w, Ordering::AcqRel);
                    self.drains.fetch_add(1, Ordering::Relaxed);
                    Ok::<(), ()>(())
                },
            )
            .unwrap();
        assert!(self.persisted.load(Ordering::Acquire) >= seq, "commit of {seq} returned before it was durable");
        assert!(self.gc.durable() >= seq);
        assert!(self.gc.durable() <= self.persisted.load(Ordering::Acquire), "durable published beyond a drain");
    }
}

fn builder() -> loom::model::Builder {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(3);
    }
    b
}

/// Three committers at once: every one returns only once durable, and
/// there are never more drains than commits.
#[test]
fn loom_group_commit_three_committers() {
    builder().check(|| {
        let m = Arc::new(Model::new());
        let hs: Vec<_> = (0..2)
            .map(|_| {
                let m = m.clone();
                loom::thread::spawn(move || m.append_commit())
            })
            .collect();
        m.append_commit();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(m.gc.durable(), 3);
        assert!(m.drains.load(Ordering::Relaxed) <= 3);
    });
}

/// A committer that commits twice while another commits once: the fast
/// path (already durable) and a leader draining for a follower.
#[test]
fn loom_group_commit_leader_drains_for_follower() {
    builder().check(|| {
        let m = Arc::new(Model::new());
        let m2 = m.clone();
        let h = loom::thread::spawn(move || {
            m2.append_commit();
            m2.append_commit();
        });
        m.append_commit();
        h.join().unwrap();
        assert_eq!(m.gc.durable(), 3);
    });
}

/// Some interleaving has one drain serve two committers: the follower
/// returns without draining (group commit does happen).
#[test]
fn loom_group_commit_shares_a_drain() {
    let shared = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = shared.clone();
    builder().check(move || {
        let m = Arc::new(Model::new());
        let m2 = m.clone();
        let h = loom::thread::spawn(move || m2.append_commit());
        m.append_commit();
        h.join().unwrap();
        if m.drains.load(Ordering::Relaxed) == 1 {
            s.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    });
    assert!(shared.load(std::sync::atomic::Ordering::Relaxed), "no interleaving shared a drain");
}
