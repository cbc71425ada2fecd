//! A child process for tests that need a second process on a pool:
//!
//! - `pool-tool hold PATH SIZE`: create/open and lock the pool, print
//!   `held`, and keep it until standard input closes.
//! - `pool-tool open PATH`: try to open the pool; print `ok` and the backend chosen, or the error's
//!   kind (`locked`, `permission-denied`, ...) and its message; exit 0 on
//!   success, 1 on error.
#![forbid(unsafe_code)]

use daxkv_alloc::{OpenError, PersistOptions, Region, RegionOptions};
use std::io::Read;
use std::path::Path;

fn kind(e: &OpenError) -> &'static str {
    match e {
        OpenError::Locked { .. } => "locked",
        OpenError::IsDirectory { .. } => "is-directory",
        OpenError::NotFound { .. } => "not-found",
        OpenError::PermissionDenied { .. } => "permission-denied",
        OpenError::TooSmall { .. } => "too-small",
        _ => "other",
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let persist = match PersistOptions::from_env() {
        Ok(p) => p,
        Err(e) => {
            println!("env {e}");
            std::process::exit(1);
        }
    };
    match args.get(1).map(String::as_str) {
        Some("hold") => {
            let size: u64 = args[3].parse().expect("size");
            let opts = RegionOptions { persist, create_size: Some(size), min_len: 4096 };
            let _r = Region::open(Path::new(&args[2]), &opts).expect("open");
            println!("held");
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
        }
        Some("open") => {
            let opts = RegionOptions { persist, create_size: None, min_len: 4096 };
            match Region::open(Path::new(&args[2]), &opts) {
                Ok(r) => println!("ok {}", r.persist_info()),
                Err(e) => {
                    println!("{} {e}", kind(&e));
                    std::process::exit(1);
                }
            }
        }
        _ => {
            eprintln!("usage: pool-tool hold PATH SIZE | pool-tool open PATH");
            std::process::exit(2);
        }
    }
}
