//! `daxkv-bench store`: the embedded store's workloads, latency
//! percentiles, recovery and reopen times, and space use.

use crate::clock::Laps;
use crate::report::Row;
use crate::row;
use crate::workload::{Rng, key_into};
use daxkv::{Options, Persistence, Store};
use hdrhistogram::Histogram;
use quanta::Clock;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::time::Instant;

/// Options of `daxkv-bench store`.
#[derive(clap::Args, Debug, Clone)]
pub struct StoreArgs {
    /// Keys to load.
    #[arg(long, default_value_t = 1_000_000)]
    pub keys: u64,
    /// Key size in bytes (at least 8).
    #[arg(long, default_value_t = 16)]
    pub key_size: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Thread counts to run, e.g. `1,2`.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub threads: Vec<usize>,
    /// Backends to run, e.g. `pmem,volatile` (auto, pmem, eadr, msync, volatile).
    #[arg(long, value_delimiter = ',', default_value = "pmem,volatile")]
    pub backend: Vec<String>,
    /// Workloads to run (default: all): fill-random (always runs, it loads
    /// the keys), read-random, read-missing, scan-100, mixed, delete-random,
    /// fill-sequential.
    #[arg(long, value_delimiter = ',')]
    pub workloads: Vec<String>,
    /// Directory for pool files (a tmpfs stands in for DAX memory).
    #[arg(long, default_value = "/dev/shm")]
    pub dir: PathBuf,
}

struct Outcome {
    ops: u64,
    secs: f64,
    hist: Histogram<u64>,
    extra_keys: u64,
}

/// Run `op(thread, i)` for i in 0..n split across `threads`, timing each.
/// One bench thread's own state: its random generator and a key buffer,
/// so that the timed operation allocates nothing and shares no lock.
struct Ctx {
    rng: Rng,
    buf: Vec<u8>,
    val: Vec<u8>,
}

impl Ctx {
    /// Key number `i` in this thread's buffer.
    fn key(&mut self, i: u64, size: usize, scattered: bool) -> &[u8] {
        key_into(&mut self.buf, i, size, scattered);
        &self.buf
    }

    /// Read key number `i` as `compare` reads every engine: borrowed from
    /// the store, then copied into this thread's reused buffer (`Store::get`
    /// would add an allocation per call). Whether it was found.
    fn get(&mut self, s: &Store, i: u64, size: usize) -> bool {
        key_into(&mut self.buf, i, size, true);
        match s.get_ref(&self.buf).expect("get") {
            Some(v) => {
                self.val.clear();
                self.val.extend_from_slice(&v);
                true
            }
            None => false,
        }
    }
}

fn run_threads(threads: usize, n: u64, op: impl Fn(&mut Ctx, u64) -> u64 + Sync) -> Outcome {
    let barrier = Barrier::new(threads);
    let clock = &Clock::new();
    let start = std::sync::Mutex::new(None::<Instant>);
    let results: Vec<(Histogram<u64>, u64)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (barrier, start, op) = (&barrier, &start, &op);
                s.spawn(move || {
                    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("histogram");
                    let lo = n * t as u64 / threads as u64;
                    let hi = n * (t as u64 + 1) / threads as u64;
                    barrier.wait();
                    start.lock().expect("start").get_or_insert_with(Instant::now);
                    let mut extra = 0;
                    let mut ctx =
                        Ctx { rng: Rng::new(0x1234_5678 + t as u64), buf: Vec::with_capacity(64), val: Vec::new() };
                    let mut laps = Laps::start(clock);
                    for i in lo..hi {
                        extra += op(&mut ctx, i);
                        let _ = h.record(laps.lap());
                    }
                    (h, extra)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("bench thread")).collect()
    });
    let secs = start.lock().expect("start").map_or(0.0, |s| s.elapsed().as_secs_f64());
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("histogram");
    let mut extra_keys = 0;
    for (h, e) in results {
        hist.add(h).expect("same bounds");
        extra_keys += e;
    }
    Outcome { ops: n, secs, hist, extra_keys }
}

/// Anonymous memory of this process, in KiB: what the allocator holds for
/// live data. mimalloc (the global allocator) keeps freed pages for reuse
/// and purges them only later; they are given back first, so that the
/// figure counts memory in use, not the previous phase's garbage.
fn anon_kib() -> u64 {
    release_free_memory();
    std::fs::read_to_string("/proc/self/smaps_rollup")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("Anonymous:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[allow(unsafe_code)]
fn release_free_memory() {
    // SAFETY: mi_collect takes no pointer and may run at any time on any
    // thread; it only returns free memory of the allocator to the system.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

fn pool_path(dir: &Path, tag: &str) -> PathBuf {
    dir.join(format!("daxkv-bench-store-{}-{tag}.pool", std::process::id()))
}

/// Run everything; returns rows and (check, passed) lines.
pub fn run(a: &StoreArgs) -> (Vec<Row>, Vec<(String, bool)>) {
    let mut rows = Vec::new();
    let mut checks = Vec::new();
    let wanted = |w: &str| a.workloads.is_empty() || a.workloads.iter().any(|x| x == w);
    let raw = (a.key_size.max(8) + a.value_size) as u64;
    let pool_size = (a.keys * (raw + 64) * 2 + (256 << 20)).next_multiple_of(1 << 20);
    let value = vec![0xabu8; a.value_size];
    // ops/s by (backend, threads, case) for the ratio checks
    let mut figures: std::collections::HashMap<(String, usize, &'static str), f64> = Default::default();
    for backend in &a.backend {
        let persistence: Persistence = match backend.parse() {
            Ok(p) => p,
            Err(e) => {
                eprintln!("daxkv-bench: {e}");
                continue;
            }
        };
        for &threads in &a.threads {
            let path = pool_path(&a.dir, &format!("{backend}-{threads}"));
            let _ = std::fs::remove_file(&path);
            let opts = Options::new().pool_size(pool_size).persistence(persistence).create_if_missing(true);
            let store = Arc::new(Store::open(&path, &opts).expect("create pool"));
            let bname = store.persist_info().backend.name().to_string();
            eprintln!("store bench: {threads} thread(s), {}", store.persist_info());
            let n = a.keys;
            let mut emit = |case: &'static str, o: &Outcome, keys_per_op: Option<u64>| {
                let ops = o.ops as f64 / o.secs;
                figures.insert((backend.clone(), threads, case), ops);
                let mut r = row! {
                    "bench": "store", "case": case, "engine": "daxkv", "backend": bname.clone(), "threads": threads,
                    "keys": n, "key_size": a.key_size, "value_size": a.value_size, "ops_per_sec": ops,
                    "p50_ns": o.hist.value_at_quantile(0.5), "p99_ns": o.hist.value_at_quantile(0.99),
                    "p999_ns": o.hist.value_at_quantile(0.999), "max_ns": o.hist.max(),
                };
                if let Some(k) = keys_per_op {
                    r.insert("keys_per_sec".into(), serde_json::json!(ops * k as f64));
                }
                if o.extra_keys > 0 {
                    r.insert("keys_seen".into(), serde_json::json!(o.extra_keys));
                }
                rows.push(r);
            };
            {
                let s = store.clone();
                let o = run_threads(threads, n, |c, i| {
                    s.put(c.key(i, a.key_size, true), &value).expect("put");
                    0
                });
                emit("fill-random", &o, None);
            }
            if wanted("read-random") {
                let s = store.clone();
                let o = run_threads(threads, n, |c, _| {
                    let i = c.rng.below(n);
                    u64::from(c.get(&s, i, a.key_size))
                });
                assert_eq!(o.extra_keys, n, "every key read back");
                emit("read-random", &o, None);
            }
            if wanted("read-missing") {
                let s = store.clone();
                let o = run_threads(threads, n, |c, i| u64::from(c.get(&s, n + i, a.key_size)));
                assert_eq!(o.extra_keys, 0);
                emit("read-missing", &o, None);
            }
            if wanted("scan-100") {
                let s = store.clone();
                let scans = (n / 100).max(1);
                let o = run_threads(threads, scans, |c, i| {
                    let start = c.key((i * 7919) % n, a.key_size, true).to_vec();
                    // Borrowed pairs (zero-copy); the bytes are touched.
                    let mut it = s.range(start..);
                    let mut c = 0u64;
                    while c < 100
                        && let Some((k, v)) = it.next_ref()
                    {
                        std::hint::black_box((k.first(), v.last()));
                        c += 1;
                    }
                    c
                });
                emit("scan-100", &o, Some(100));
            }
            if wanted("mixed") {
                let s = store.clone();
                let o = run_threads(threads, n, |c, i| {
                    if i % 2 == 0 {
                        s.put(c.key((i * 31) % n, a.key_size, true), &value).expect("put");
                    } else {
                        c.get(&s, (i * 31) % n, a.key_size);
                    }
                    0
                });
                emit("mixed", &o, None);
            }
            // Space and recovery, once per backend with one thread.
            if threads == a.threads[0] {
                let st = store.stats();
                let used = st.heap_bytes - st.heap_free_bytes;
                let ratio = used as f64 / (n * raw) as f64;
                rows.push(row! {"bench": "store", "case": "space", "engine": "daxkv", "backend": bname.clone(),
                "threads": threads, "keys": n, "key_size": a.key_size, "value_size": a.value_size,
                "pool_bytes": used, "overhead": ratio});
                checks.push((
                    format!("{backend}: pool bytes / raw key+value bytes: {ratio:.2}x (target <= 1.6x)"),
                    ratio <= 1.6,
                ));
                let store = Arc::try_unwrap(store).expect("no other users");
                store.abandon();
                let before = anon_kib();
                let t = Instant::now();
                let store = Store::open(&path, &opts).expect("recover");
                let recover_ms = t.elapsed().as_secs_f64() * 1e3;
                let dram = (anon_kib().saturating_sub(before)) * 1024;
                assert_eq!(store.len(), n);
                let per_key = dram as f64 / n as f64;
                // Every key read once: the point cache holds what it can.
                let mut found = 0u64;
                for i in 0..n {
                    found += u64::from(store.contains(&crate::workload::key(i, a.key_size, true)).expect("read"));
                }
                assert_eq!(found, n);
                let warm = (anon_kib().saturating_sub(before)) * 1024;
                let warm_per_key = warm as f64 / n as f64;
                // What `daxkv check` and `Options::verify` cost at this size.
                let t = Instant::now();
                let report = store.check().expect("check");
                let check_ms = t.elapsed().as_secs_f64() * 1e3;
                assert!(report.problems.is_empty(), "check: {:?}", report.problems);
                rows.push(row! {"bench": "store", "case": "check", "engine": "daxkv", "backend": bname.clone(),
                "threads": 1, "keys": n, "ms": check_ms});
                store.close().expect("close");
                let t = Instant::now();
                let store = Store::open(&path, &opts).expect("reopen");
                let reopen_ms = t.elapsed().as_secs_f64() * 1e3;
                assert!(store.stats().opened_clean);
                rows.push(
                    row! {"bench": "store", "case": "recover-crash", "engine": "daxkv", "backend": bname.clone(),
                    "threads": 1, "keys": n, "ms": recover_ms, "dram_bytes_per_key": per_key,
                    "dram_bytes_per_key_cache_warm": warm_per_key, "point_cache_bytes": store.stats().point_cache_bytes},
                );
                rows.push(row! {"bench": "store", "case": "reopen-clean", "engine": "daxkv", "backend": bname.clone(),
                "threads": 1, "keys": n, "ms": reopen_ms});
                checks.push((
                    format!("{backend}: crash recovery of {n} keys: {recover_ms:.1} ms (target <= 100 ms)"),
                    recover_ms <= 100.0,
                ));
                checks.push((
                    format!("{backend}: reopen after clean close: {reopen_ms:.1} ms (target <= 10 ms)"),
                    reopen_ms <= 10.0,
                ));
                checks.push((
                    format!("{backend}: DRAM after recovery: {per_key:.1} B/key (target <= 32)"),
                    per_key <= 32.0,
                ));
                checks.push((
                    format!(
                        "{backend}: DRAM with every key read once (point cache warm): {warm_per_key:.1} B/key (target <= 32)"
                    ),
                    warm_per_key <= 32.0,
                ));
                finish_deletes(a, store, threads, &bname, &mut rows, &mut figures, backend);
            } else {
                let store = Arc::try_unwrap(store).expect("no other users");
                finish_deletes(a, store, threads, &bname, &mut rows, &mut figures, backend);
            }
            let _ = std::fs::remove_file(&path);
            if wanted("fill-sequential") {
                let _ = std::fs::remove_file(&path);
                let store = Store::open(&path, &opts).expect("create pool");
                let o = run_threads(threads, n, |c, i| {
                    store.put(c.key(i, a.key_size, false), &value).expect("put");
                    0
                });
                let ops = o.ops as f64 / o.secs;
                figures.insert((backend.clone(), threads, "fill-sequential"), ops);
                rows.push(row! {
                    "bench": "store", "case": "fill-sequential", "engine": "daxkv", "backend": bname.clone(),
                    "threads": threads, "keys": n, "key_size": a.key_size, "value_size": a.value_size, "ops_per_sec": ops,
                    "p50_ns": o.hist.value_at_quantile(0.5), "p99_ns": o.hist.value_at_quantile(0.99),
                    "p999_ns": o.hist.value_at_quantile(0.999), "max_ns": o.hist.max(),
                });
                drop(store);
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    // Targets (single-thread pmem figures, ratios in the same run).
    let f = |b: &str, t: usize, c: &'static str| figures.get(&(b.to_string(), t, c)).copied();
    if let Some(put) = f("pmem", 1, "fill-random") {
        checks.push((format!("pmem random put, 1 thread: {:.2} M/s (target >= 1 M/s)", put / 1e6), put >= 1e6));
        if let Some(v) = f("volatile", 1, "fill-random") {
            checks.push((format!("pmem / volatile put: {:.2}x (target >= 0.6x)", put / v), put / v >= 0.6));
        }
        if let Some(p2) = f("pmem", 2, "fill-random") {
            checks
                .push((format!("pmem put, 2 threads / 1 thread: {:.2}x (target >= 1.5x)", p2 / put), p2 / put >= 1.5));
        }
    }
    if let Some(get) = f("pmem", 1, "read-random") {
        checks.push((format!("pmem random get, 1 thread: {:.2} M/s (target >= 2.5 M/s)", get / 1e6), get >= 2.5e6));
        if let Some(g2) = f("pmem", 2, "read-random") {
            checks
                .push((format!("pmem get, 2 threads / 1 thread: {:.2}x (target >= 1.8x)", g2 / get), g2 / get >= 1.8));
        }
    }
    if let Some(scan) = f("pmem", 1, "scan-100") {
        let keys = scan * 100.0;
        checks.push((format!("pmem scan, 1 thread: {:.1} M keys/s (target >= 10 M keys/s)", keys / 1e6), keys >= 10e6));
    }
    (rows, checks)
}

#[allow(clippy::too_many_arguments)]
fn finish_deletes(
    a: &StoreArgs,
    store: Store,
    threads: usize,
    bname: &str,
    rows: &mut Vec<Row>,
    figures: &mut std::collections::HashMap<(String, usize, &'static str), f64>,
    backend: &str,
) {
    let n = a.keys;
    if a.workloads.is_empty() || a.workloads.iter().any(|w| w == "delete-random") {
        let o = run_threads(threads, n, |c, i| {
            u64::from(store.delete(c.key((i * 31) % n, a.key_size, true)).expect("delete"))
        });
        let ops = o.ops as f64 / o.secs;
        figures.insert((backend.to_string(), threads, "delete-random"), ops);
        rows.push(row! {
            "bench": "store", "case": "delete-random", "engine": "daxkv", "backend": bname, "threads": threads,
            "keys": n, "key_size": a.key_size, "value_size": a.value_size, "ops_per_sec": ops,
            "p50_ns": o.hist.value_at_quantile(0.5), "p99_ns": o.hist.value_at_quantile(0.99),
            "p999_ns": o.hist.value_at_quantile(0.999), "max_ns": o.hist.max(),
        });
    }
    drop(store);
}
