//! State shared by every event loop: the store, the configuration, counters,
//! the WATCH version table, SCAN cursors and the shutdown switch.

use crate::config::Config;
use daxkv::Store;
use mio::Waker;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Stops a running server: set by SIGTERM/SIGINT, `SHUTDOWN`, or a test.
#[derive(Clone, Default)]
pub struct Shutdown(Arc<ShutdownInner>);

#[derive(Default)]
struct ShutdownInner {
    flag: AtomicBool,
    wakers: Mutex<Vec<Arc<Waker>>>,
}

impl Shutdown {
    /// A switch not yet thrown.
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Ask every event loop to stop (they finish the requests in hand).
    pub fn trigger(&self) {
        self.0.flag.store(true, Ordering::SeqCst);
        for w in self.0.wakers.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = w.wake();
        }
    }

    /// Whether stopping was asked.
    pub fn is_triggered(&self) -> bool {
        self.0.flag.load(Ordering::SeqCst)
    }

    pub(crate) fn add_waker(&self, w: Arc<Waker>) {
        self.0.wakers.lock().unwrap_or_else(|e| e.into_inner()).push(w);
        if self.is_triggered() {
            self.trigger();
        }
    }
}

/// Counters reported by INFO.
#[derive(Default)]
pub struct Counters {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Connections refused (max clients, protected mode).
    pub rejected: AtomicU64,
    /// Commands executed.
    pub commands: AtomicU64,
    /// Bytes read from clients.
    pub net_in: AtomicU64,
    /// Bytes written to clients.
    pub net_out: AtomicU64,
    /// Reads that found their key.
    pub hits: AtomicU64,
    /// Reads that did not.
    pub misses: AtomicU64,
    /// Write batches committed and operations in them.
    pub batches: AtomicU64,
    /// Operations committed through batches.
    pub batched_ops: AtomicU64,
    /// Expired keys removed by the background purge.
    pub expired_keys: AtomicU64,
}

const WATCH_SLOTS: usize = 4096;

/// WATCH support. Every write bumps the version of its key's slot (a hash of
/// the key) *before* it is queued or committed (FLUSHDB: of each key it
/// deletes; deleting a missing key writes nothing and bumps nothing, as
/// in Redis). WATCH records the slot version and then the key's value; EXEC,
/// inside its store transaction, checks both. A write that lands while EXEC
/// runs changes a record EXEC's transaction read, so the store's optimistic
/// commit re-runs EXEC, which then sees the bump. Two keys sharing a slot can
/// abort an EXEC that Redis would run (rare, and always safe).
pub struct WatchTable {
    slots: Vec<AtomicU64>,
}

impl Default for WatchTable {
    fn default() -> WatchTable {
        WatchTable { slots: (0..WATCH_SLOTS).map(|_| AtomicU64::new(0)).collect() }
    }
}

impl WatchTable {
    fn slot(&self, key: &[u8]) -> &AtomicU64 {
        // FNV-1a: cheap and good enough to spread keys over the slots.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in key {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        &self.slots[(h % WATCH_SLOTS as u64) as usize]
    }

    /// A write to `key` is about to happen.
    pub fn touch(&self, key: &[u8]) {
        self.slot(key).fetch_add(1, Ordering::SeqCst);
    }

    /// The version a watcher remembers.
    pub fn version(&self, key: &[u8]) -> u64 {
        self.slot(key).load(Ordering::SeqCst)
    }
}

/// SCAN cursors: a cursor number stands for the last key returned. Shared
/// by all connections so that a cursor survives a reconnect; the oldest are
/// forgotten past a bound.
#[derive(Default)]
pub struct Cursors {
    next: AtomicU64,
    map: Mutex<BTreeMap<u64, Vec<u8>>>,
}

const MAX_CURSORS: usize = 16384;

impl Cursors {
    /// A new cursor that resumes after `key`.
    pub fn save(&self, key: Vec<u8>) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= MAX_CURSORS {
            m.pop_first();
        }
        m.insert(id, key);
        id
    }

    /// The key cursor `id` resumes after.
    pub fn get(&self, id: u64) -> Option<Vec<u8>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).get(&id).cloned()
    }
}

/// Everything the event loops share.
pub struct Shared {
    /// The store.
    pub store: Arc<Store>,
    /// The configuration.
    pub config: Config,
    /// The stop switch.
    pub shutdown: Shutdown,
    /// Connected clients.
    pub clients: AtomicUsize,
    /// Next client id.
    pub next_id: AtomicU64,
    /// INFO counters.
    pub counters: Counters,
    /// WATCH versions.
    pub watch: WatchTable,
    /// SCAN cursors.
    pub cursors: Cursors,
    /// When the server started.
    pub started: Instant,
}

impl Shared {
    /// Shared state for a server over `store`.
    pub fn new(store: Arc<Store>, config: Config, shutdown: Shutdown) -> Shared {
        Shared {
            store,
            config,
            shutdown,
            clients: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            counters: Counters::default(),
            watch: WatchTable::default(),
            cursors: Cursors::default(),
            started: Instant::now(),
        }
    }
}

/// Per-thread counts added to [`Counters`] once per loop round (and before
/// INFO), so that the request path touches no shared cache line for them.
pub mod local {
    use super::Counters;
    use std::cell::Cell;
    use std::sync::atomic::Ordering;

    #[derive(Default)]
    struct Counts {
        commands: Cell<u64>,
        hits: Cell<u64>,
        misses: Cell<u64>,
        net_in: Cell<u64>,
        net_out: Cell<u64>,
    }

    thread_local! {
        static COUNTS: Counts = Counts::default();
    }

    fn bump(f: impl FnOnce(&Counts) -> &Cell<u64>, n: u64) {
        COUNTS.with(|c| {
            let c = f(c);
            c.set(c.get() + n);
        });
    }

    /// A command was executed.
    pub fn command() {
        bump(|c| &c.commands, 1);
    }

    /// A read command looked a key up and found it (or not).
    pub fn lookup(found: bool) {
        bump(|c| if found { &c.hits } else { &c.misses }, 1);
    }

    /// Bytes read from a client.
    pub fn net_in(n: usize) {
        bump(|c| &c.net_in, n as u64);
    }

    /// Bytes written to a client.
    pub fn net_out(n: usize) {
        bump(|c| &c.net_out, n as u64);
    }

    /// Add this thread's counts to `to` and reset them.
    pub fn flush(to: &Counters) {
        COUNTS.with(|c| {
            for (cell, total) in [
                (&c.commands, &to.commands),
                (&c.hits, &to.hits),
                (&c.misses, &to.misses),
                (&c.net_in, &to.net_in),
                (&c.net_out, &to.net_out),
            ] {
                let n = cell.replace(0);
                if n > 0 {
                    total.fetch_add(n, Ordering::Relaxed);
                }
            }
        });
    }
}
