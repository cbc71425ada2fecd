//! `daxkv-bench log`: commits per second and drains per commit of the redo
//! log, for 1 and 2 committing threads, entries of 1 op × 128 B and
//! 16 ops × 128 B, with the `pmem` backend forced on a tmpfs file (real
//! flushes and fences on DRAM) and with `volatile`.
//!
//! Every thread appends and commits one entry at a time; when the log is
//! full the thread that found it full checkpoints everything durable (the
//! owner's "applied" state is empty here) and retries. `drains_per_commit`
//! counts the drains committers issued; group commit makes it fall below 1
//! with more than one thread.

use daxkv_alloc::{Backend, PersistOptions, Region, RegionOptions};
use daxkv_log::{Log, LogError};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Options of `daxkv-bench log`.
#[derive(clap::Args, Debug, Clone)]
pub struct LogArgs {
    /// Directory for the pool file (a tmpfs stands in for DAX memory).
    #[arg(long, default_value = "/dev/shm")]
    pub dir: PathBuf,
    /// Size of the log area in MiB.
    #[arg(long, default_value_t = 64)]
    pub log_mib: u64,
    /// Time per measurement in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub ms: u64,
    /// Thread counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub threads: Vec<usize>,
}

/// Offset of the log area in the pool (a superblock would sit before it).
const BASE: u64 = 4096;

struct Case {
    name: &'static str,
    ops: usize,
    op_size: usize,
}

const CASES: [Case; 2] = [Case { name: "1x128", ops: 1, op_size: 128 }, Case { name: "16x128", ops: 16, op_size: 128 }];

fn open(args: &LogArgs, backend: Backend) -> Result<(Arc<Region>, PathBuf), String> {
    let path = args.dir.join(format!("daxkv-bench-log-{}-{}.pool", std::process::id(), backend.name()));
    let _ = std::fs::remove_file(&path);
    let opts = RegionOptions {
        persist: PersistOptions::default().with_backend(backend),
        create_size: Some(BASE + (args.log_mib << 20)),
        min_len: 4096,
    };
    let region = Region::open(&path, &opts).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((Arc::new(region), path))
}

/// Append and commit `entry` until `deadline`; returns commits done.
fn committer(log: &Log, entry: &[Vec<u8>], deadline: Instant) -> Result<u64, LogError> {
    let mut n = 0u64;
    while Instant::now() < deadline {
        for _ in 0..32 {
            let seq = loop {
                match log.try_append(entry) {
                    Ok(seq) => break seq,
                    Err(LogError::Full { .. }) => {
                        let durable = log.durable_seq();
                        if durable > log.applied_through() {
                            log.checkpoint(durable)?;
                        } else {
                            std::thread::yield_now();
                        }
                    }
                    Err(e) => return Err(e),
                }
            };
            log.commit(seq)?;
            n += 1;
        }
    }
    Ok(n)
}

fn measure(args: &LogArgs, backend: Backend, case: &Case, threads: usize) -> Result<Value, String> {
    let (region, path) = open(args, backend)?;
    let result = (|| {
        let log = Log::create(region.clone(), BASE, args.log_mib << 20).map_err(|e| e.to_string())?;
        let entry: Vec<Vec<u8>> = (0..case.ops).map(|i| vec![i as u8; case.op_size]).collect();
        // Warm up (page faults in the ring), then start the counters afresh.
        let warm = Instant::now() + Duration::from_millis(args.ms / 5);
        committer(&log, &entry, warm).map_err(|e| e.to_string())?;
        let before = log.stats();
        let start = Instant::now();
        let deadline = start + Duration::from_millis(args.ms);
        let commits: u64 = std::thread::scope(|s| {
            let hs: Vec<_> = (0..threads).map(|_| s.spawn(|| committer(&log, &entry, deadline))).collect();
            hs.into_iter().map(|h| h.join().expect("committer panicked")).sum::<Result<u64, LogError>>()
        })
        .map_err(|e| e.to_string())?;
        let secs = start.elapsed().as_secs_f64();
        let after = log.stats();
        let drains = after.commit_drains - before.commit_drains;
        let all_drains = after.drains - before.drains;
        Ok(json!({
            "bench": "log",
            "case": case.name,
            "engine": "daxkv",
            "backend": backend.name(),
            "threads": threads,
            "size": Log::entry_size(&entry),
            "ops_per_sec": commits as f64 / secs,
            "drains_per_commit": drains as f64 / commits as f64,
            "all_drains_per_commit": all_drains as f64 / commits as f64,
            "ns_per_op": secs * 1e9 / commits as f64,
            "checkpoints": after.checkpoints - before.checkpoints,
        }))
    })();
    drop(region);
    let _ = std::fs::remove_file(&path);
    result
}

/// Run every case; one JSON object per measurement. A case that cannot run
/// (no flush instruction for `pmem`, no tmpfs) is reported on stderr and
/// left out.
pub fn run(args: &LogArgs) -> Vec<Value> {
    let mut rows = Vec::new();
    for backend in [Backend::Pmem, Backend::Volatile] {
        for case in &CASES {
            for &threads in &args.threads {
                match measure(args, backend, case, threads) {
                    Ok(row) => rows.push(row),
                    Err(e) => eprintln!("log {} {} {threads} threads: {e}", backend.name(), case.name),
                }
            }
        }
    }
    rows
}
