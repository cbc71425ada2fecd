//! `daxkv`: the command-line tool.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use daxkv::{PersistOptions, Persistence, Region, RegionOptions};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "daxkv", version, about = "daxkv: a persistent key-value store for persistent memory")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Open (creating if asked) a pool file and report which persistence
    /// backend daxkv picks for it, and why.
    Probe {
        /// Pool file or DAX device.
        path: PathBuf,
        /// Create the file with this many bytes if it does not exist.
        #[arg(long)]
        create: Option<u64>,
        /// auto, pmem, eadr, msync or volatile (default: DAXKV_PERSISTENCE or auto).
        #[arg(long)]
        persistence: Option<Persistence>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Probe { path, create, persistence } => {
            let mut persist = match PersistOptions::from_env() {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("daxkv: {e}");
                    return ExitCode::from(2);
                }
            };
            if let Some(p) = persistence {
                persist.persistence = p;
            }
            let opts = RegionOptions { persist, create_size: create, min_len: 4096 };
            match Region::open(&path, &opts) {
                Ok(r) => {
                    println!("{}: {} bytes", path.display(), r.len());
                    println!("{}", r.persist_info());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("daxkv: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
