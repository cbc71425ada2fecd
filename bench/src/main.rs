//! `daxkv-bench`: daxkv's benchmark harness. Every subcommand prints a
//! table, or with `--json` one JSON object per measurement per line.
#![forbid(unsafe_code)]

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
}

fn main() {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Persist(a) => {
            let (rows, checks) = persist::run(&a);
            report::print(&rows, cli.json);
            for (line, ok) in checks {
                eprintln!("{} {line}", if ok { "ok:  " } else { "BELOW TARGET:" });
            }
        }
    }
}
