//! `daxkv-bench`: daxkv's benchmark harness. Every subcommand prints a
//! table, or with `--json` one JSON object per measurement per line.
//!
//! `daxkv-bench compare` is the comparison with the peers (LMDB, redb) on
//! the same memory with the same durability; `daxkv-bench server` the one
//! with redis-server.
// Two unsafe blocks: opening LMDB (heed marks opening a memory map
// unsafe) and asking mimalloc to return free pages (`store::anon_kib`).
#![deny(unsafe_code)]

/// mimalloc, not the system's malloc: with glibc's, a thread freeing index
/// nodes another thread allocated (old index snapshots) takes that
/// thread's arena lock, and two writer threads put 10-15 % slower (a
/// fill of 1M keys: 2.73-2.99 against 3.12-3.30 M puts/s). LMDB is C and
/// keeps its own malloc; redb gets mimalloc too.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod alloc;
mod chart;
mod clock;
mod compare;
mod engine;
mod log;
mod persist;
mod report;
mod server;
mod store;
mod workload;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "daxkv-bench", version, about = "daxkv benchmarks")]
struct Cli {
    /// One JSON object per measurement per line instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Flush, fence and copy costs of this machine: the floor of durability.
    Persist(persist::PersistArgs),
    /// The persistent allocator: alloc+free pairs per second, space overhead.
    Alloc(alloc::AllocArgs),
    /// The embedded store: fills, reads, scans, deletes, recovery, space.
    Store(store::StoreArgs),
    /// The redo log: commits per second and drains per commit.
    Log(log::LogArgs),
    /// daxkv against LMDB and redb (same memory, same durability): fills,
    /// reads, scans, YCSB A-F; flush floor, ratios, table, JSON, charts.
    #[command(visible_alias = "workload")]
    Compare(compare::CompareArgs),
    /// `daxkv serve` against redis-server (AOF, appendfsync always), both
    /// driven by redis-benchmark in the same run.
    Server(server::ServerArgs),
}

fn finish(rows: Vec<report::Row>, checks: Vec<(String, bool)>, json: bool) {
    report::print(&rows, json);
    for (line, ok) in checks {
        eprintln!("{} {line}", if ok { "ok:  " } else { "BELOW TARGET:" });
    }
}

fn main() {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Persist(a) => {
            let (rows, checks) = persist::run(&a);
            finish(rows, checks, cli.json);
        }
        Cmd::Log(a) => {
            let rows: Vec<report::Row> = log::run(&a).into_iter().filter_map(|v| v.as_object().cloned()).collect();
            let mut checks = Vec::new();
            for r in &rows {
                if r.get("threads").and_then(|t| t.as_u64()) == Some(2) {
                    let d = r.get("drains_per_commit").and_then(|d| d.as_f64()).unwrap_or(f64::NAN);
                    let what = format!(
                        "2 threads, {} {}: {d:.2} drains per commit (target < 1)",
                        r.get("backend").and_then(|b| b.as_str()).unwrap_or("?"),
                        r.get("case").and_then(|b| b.as_str()).unwrap_or("?")
                    );
                    checks.push((what, d < 1.0));
                }
            }
            finish(rows, checks, cli.json);
        }
        Cmd::Store(a) => {
            let (rows, checks) = store::run(&a);
            finish(rows, checks, cli.json);
        }
        Cmd::Compare(a) => {
            let (rows, measured, checks) = compare::run(&a);
            compare::output(&a, &rows, &measured, &checks, cli.json);
        }
        Cmd::Server(a) => {
            let (rows, checks) = server::run(&a);
            let (ratios, rows): (Vec<_>, Vec<_>) = rows.into_iter().partition(|r| r.contains_key("ratio"));
            report::print(&rows, cli.json);
            if !cli.json {
                println!();
            }
            finish(ratios, checks, cli.json);
        }
        Cmd::Alloc(a) => {
            let (rows, checks) = alloc::run(&a);
            finish(rows, checks, cli.json);
        }
    }
}
