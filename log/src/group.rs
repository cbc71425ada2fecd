//! Group commit: concurrent committers share drains.
//!
//! A committer whose entry is not yet durable either finds a drain in
//! progress, and waits for it to end and looks again, or becomes the
//! leader: it notes the highest sequence number whose bytes are written
//! (`appended`), drains once outside the lock, then publishes that number as
//! durable and wakes everyone. Entries appended while a drain runs are
//! carried by the next one, whose leader is one of their committers.
//!
//! Invariant: `durable` only ever takes a value that `appended` returned
//! *before* a drain that then succeeded, so every entry up to it was written
//! before that drain began, and no committer returns before `durable`
//! reaches its sequence number.
//!
//! This module knows nothing of regions: the drain and the written mark are
//! closures, which lets the loom model in `tests/loom.rs` check the
//! protocol with a fake drain.

use crate::sync::{AtomicU64, Condvar, FOLLOWER_SPINS, Mutex, Ordering, lock, spin_loop, wait};

#[derive(Debug)]
struct State {
    durable: u64,
    draining: bool,
}

/// The shared state of group commit: the highest durable sequence number and
/// whether a leader is draining.
#[derive(Debug)]
pub struct GroupCommit {
    /// Mirror of `State::durable` for the lock-free fast path.
    durable: AtomicU64,
    /// Drains finished (successful or not): followers spin on it.
    finished: AtomicU64,
    state: Mutex<State>,
    done: Condvar,
    /// Spins of a committer waiting for a leader's drain before it sleeps.
    follower_spins: std::sync::atomic::AtomicU32,
}

impl GroupCommit {
    /// Start with every sequence number up to `durable` durable.
    pub fn new(durable: u64) -> GroupCommit {
        GroupCommit {
            durable: AtomicU64::new(durable),
            finished: AtomicU64::new(0),
            state: Mutex::new(State { durable, draining: false }),
            done: Condvar::new(),
            follower_spins: std::sync::atomic::AtomicU32::new(FOLLOWER_SPINS),
        }
    }

    /// Every sequence number up to this one is durable.
    pub fn durable(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    /// How long a committer spins waiting for a leader's drain before it
    /// sleeps on the condition variable.
    pub fn set_follower_spins(&self, spins: u32) {
        self.follower_spins.store(spins, std::sync::atomic::Ordering::Relaxed);
    }

    /// The follower spins in use.
    pub fn follower_spins(&self) -> u32 {
        self.follower_spins.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Return once `seq` is durable, draining as leader when no other
    /// committer is. `appended()` must return a sequence number whose entry,
    /// and every earlier one, was fully written (flushed or copied with
    /// `copy_nodrain`) before the call; it must reach `seq` eventually, so
    /// `seq` must already be appended. `drain()` makes everything written
    /// before it durable. Returns how many drains this call issued; on a
    /// failed drain, returns its error (other committers will try again).
    pub fn commit<E>(
        &self,
        seq: u64,
        appended: impl Fn() -> u64,
        mut drain: impl FnMut() -> Result<(), E>,
    ) -> Result<u32, E> {
        if self.durable.load(Ordering::Acquire) >= seq {
            return Ok(0);
        }
        let mut drains = 0;
        let mut st = lock(&self.state);
        loop {
            if st.durable >= seq {
                return Ok(drains);
            }
            if st.draining {
                // Spin a little for the drain to end before sleeping.
                let finished = self.finished.load(Ordering::Acquire);
                drop(st);
                for _ in 0..self.follower_spins.load(std::sync::atomic::Ordering::Relaxed) {
                    if self.finished.load(Ordering::Acquire) != finished {
                        break;
                    }
                    spin_loop();
                }
                st = lock(&self.state);
                if st.draining && self.finished.load(Ordering::Acquire) == finished {
                    st = wait(&self.done, st);
                }
                continue;
            }
            st.draining = true;
            drop(st);
            // Read before draining: only what was written before the drain
            // began is made durable by it.
            let target = appended();
            let r = drain();
            drains += 1;
            st = lock(&self.state);
            st.draining = false;
            self.finished.fetch_add(1, Ordering::Release);
            if r.is_ok() && target > st.durable {
                st.durable = target;
                self.durable.store(target, Ordering::Release);
            }
            self.done.notify_all();
            r?;
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64 as StdAtomic;
    use std::time::Duration;

    /// Slow drains and many committers: most commits ride on another's drain,
    /// and none returns before a drain that began after its append.
    #[test]
    fn committers_share_drains() {
        let gc = GroupCommit::new(0);
        let appended = Mutex::new(0u64);
        let written = StdAtomic::new(0);
        let persisted = StdAtomic::new(0);
        let drains = StdAtomic::new(0);
        let threads = 8;
        let per_thread = 50;
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    for _ in 0..per_thread {
                        let seq = {
                            let mut a = lock(&appended);
                            *a += 1;
                            written.store(*a, Ordering::Release);
                            *a
                        };
                        gc.commit(
                            seq,
                            || written.load(Ordering::Acquire),
                            || {
                                let w = written.load(Ordering::Acquire);
                                std::thread::sleep(Duration::from_micros(200));
                                persisted.fetch_max(w, Ordering::AcqRel);
                                drains.fetch_add(1, Ordering::Relaxed);
                                Ok::<(), ()>(())
                            },
                        )
                        .unwrap();
                        assert!(persisted.load(Ordering::Acquire) >= seq, "returned before durable");
                    }
                });
            }
        });
        let commits = threads * per_thread;
        let drains = drains.load(Ordering::Relaxed);
        assert_eq!(gc.durable(), commits);
        assert!(drains * 2 < commits, "{drains} drains for {commits} commits: not grouped");
    }

    #[test]
    fn failed_drain_is_reported_and_retried() {
        let gc = GroupCommit::new(0);
        let mut fail = true;
        let r = gc.commit(
            1,
            || 1,
            || {
                if std::mem::take(&mut fail) { Err("io") } else { Ok(()) }
            },
        );
        assert_eq!(r, Err("io"));
        assert_eq!(gc.durable(), 0, "a failed drain must not publish");
        assert_eq!(gc.commit(1, || 1, || Ok::<(), ()>(())), Ok(1));
        assert_eq!(gc.durable(), 1);
        assert_eq!(gc.commit(1, || 1, || Err(())), Ok(0), "already durable: no drain");
    }
}
