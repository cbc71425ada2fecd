//! `daxkv-bench`: daxkv's benchmark harness. Every subcommand prints a
//! table, or with `--json` one JSON object per measurement per line.
#![forbid(unsafe_code)]

mod alloc;
mod persist;
mod report;

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
        Cmd::Alloc(a) => {
            let (rows, checks) = alloc::run(&a);
            finish(rows, checks, cli.json);
        }
    }
}
