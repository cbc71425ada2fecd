//! `daxkv-crash`: the crash-recovery suite from the command line.
//!
//! - `daxkv-crash explore [--full] [--workload W]... [--seed N] [--ops N] [--json]`
//! - `daxkv-crash replay --workload W --seed N --ops N --point P --image DESC`
//! - `daxkv-crash mutants [--full] [--json]`: the mutation score, `M/N sites detected`
//! - `daxkv-crash torture [--kills N] [--seed N] [--json]`
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use daxkv_alloc::sim::ImageDesc;
use daxkv_tests::explore::{Config, Report, explore};
use daxkv_tests::workload::Kind;
use daxkv_tests::{mutants, torture};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "daxkv-crash", about = "daxkv's crash-recovery suite")]
struct Cli {
    /// One JSON object per result line instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Crash at every drain of each workload and check every image.
    Explore {
        /// Full mode (exhaustive up to 4096 combinations, 1000 ops each).
        #[arg(long)]
        full: bool,
        /// Workloads (default all): mixed, fill-drain, pool-full, log-wrap, slab-reuse, grow, unlink.
        #[arg(long)]
        workload: Vec<String>,
        /// Seed.
        #[arg(long, default_value_t = 0x5eed)]
        seed: u64,
        /// Operations per workload (default: 300 quick, 1000 full).
        #[arg(long)]
        ops: Option<usize>,
    },
    /// Re-run one crash point and image of a workload, verbosely.
    Replay {
        #[arg(long)]
        workload: String,
        #[arg(long)]
        seed: u64,
        #[arg(long)]
        ops: usize,
        #[arg(long)]
        point: u64,
        /// As printed, e.g. `all-but-line#2` or `random#3 seed=0x1234`.
        #[arg(long)]
        image: Option<String>,
        /// The mode the failure was found in.
        #[arg(long)]
        full: bool,
    },
    /// Switch off each persistence call site in turn; print `M/N sites detected`.
    Mutants {
        #[arg(long)]
        full: bool,
        #[arg(long, default_value_t = 0x5eed)]
        seed: u64,
        /// Workloads (default all): the sites they reach, each switched off
        /// in turn and explored with them alone.
        #[arg(long)]
        workload: Vec<String>,
    },
    /// SIGKILL a writing child process at random moments; check after each.
    Torture {
        #[arg(long, default_value_t = 1000)]
        kills: u64,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Directory for the pool (a tmpfs).
        #[arg(long, default_value = "/dev/shm")]
        dir: PathBuf,
    },
    /// (internal) the writing child of `torture`.
    #[command(hide = true)]
    TortureChild { pool: PathBuf, seed: u64, start: u64 },
}

fn parse_desc(s: &str) -> Option<ImageDesc> {
    let (head, seed) = match s.split_once(" seed=") {
        Some((h, sd)) => (h, u64::from_str_radix(sd.trim_start_matches("0x"), 16).ok()?),
        None => (s, 0),
    };
    let (strategy, index) = head.split_once('#')?;
    let strategy =
        ["exhaustive", "none", "all", "only-line", "all-but-line", "random"].into_iter().find(|x| *x == strategy)?;
    Some(ImageDesc { strategy, index: index.parse().ok()?, seed })
}

fn kinds(names: &[String]) -> Result<Vec<Kind>, String> {
    if names.is_empty() {
        return Ok(Kind::ALL.to_vec());
    }
    names.iter().map(|n| Kind::parse(n).ok_or_else(|| format!("unknown workload {n}"))).collect()
}

fn print_report(r: &Report, ops: usize, json_out: bool) {
    let ips = (r.images + r.nested_images) as f64 / r.secs.max(1e-9);
    if json_out {
        println!(
            "{}",
            json!({"suite": "crash", "workload": r.workload, "crash_points": r.points, "images": r.images,
                   "duplicates": r.duplicates, "nested_points": r.nested_points, "nested_images": r.nested_images,
                   "states": r.states, "images_per_sec": ips, "secs": r.secs, "violations": r.violations.len()})
        );
    } else {
        println!(
            "{:>10}: {:>6} crash points  {:>8} images ({} duplicates)  {:>6} nested points / {:>8} images  {:>5} states  {:>7.0} images/s  {} violations",
            r.workload,
            r.points,
            r.images,
            r.duplicates,
            r.nested_points,
            r.nested_images,
            r.states,
            ips,
            r.violations.len()
        );
    }
    for v in &r.violations {
        eprintln!("VIOLATION {}: op {} crash point {} image {}: {}", v.workload, v.op, v.point, v.image, v.what);
        eprintln!("  replay: {}", v.replay_command(ops));
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::TortureChild { pool, seed, start } => torture::child(&pool, seed, start),
        Cmd::Explore { full, workload, seed, ops } => {
            let ks = match kinds(&workload) {
                Ok(k) => k,
                Err(e) => {
                    eprintln!("daxkv-crash: {e}");
                    return ExitCode::from(2);
                }
            };
            let mut cfg = if full { Config::full(seed) } else { Config::quick(seed) };
            if let Some(n) = ops {
                cfg.ops = n;
            }
            let mut bad = 0;
            let (mut images, mut points) = (0, 0);
            for k in ks {
                let r = explore(k, &cfg);
                print_report(&r, cfg.ops, cli.json);
                bad += r.violations.len();
                images += r.images + r.nested_images;
                points += r.points + r.nested_points;
            }
            if !cli.json {
                println!("total: {points} crash points, {images} images, {bad} violations");
            }
            if bad > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS }
        }
        Cmd::Replay { workload, seed, ops, point, image, full } => {
            let Some(k) = Kind::parse(&workload) else {
                eprintln!("daxkv-crash: unknown workload {workload}");
                return ExitCode::from(2);
            };
            let desc = match image.as_deref().map(parse_desc) {
                Some(None) => {
                    eprintln!("daxkv-crash: cannot parse image description");
                    return ExitCode::from(2);
                }
                Some(Some(d)) => Some(d),
                None => None,
            };
            let mut cfg = if full { Config::full(seed) } else { Config::quick(seed) };
            cfg.ops = ops;
            cfg.only = Some((point, desc));
            cfg.nested_every = 0;
            let r = explore(k, &cfg);
            println!("replayed {} image(s) at crash point {point}", r.images);
            for v in &r.violations {
                println!("VIOLATION op {} image {}: {}", v.op, v.image, v.what);
            }
            if r.violations.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        Cmd::Mutants { full, seed, workload } => {
            let mut cfg = if full { Config::full(seed) } else { Config::quick(seed) };
            cfg.nested_every = 8;
            let json_out = cli.json;
            let ks = match kinds(&workload) {
                Ok(k) => k,
                Err(e) => {
                    eprintln!("daxkv-crash: {e}");
                    return ExitCode::from(2);
                }
            };
            let res = mutants::run(&cfg, &ks, |s| {
                if json_out {
                    println!(
                        "{}",
                        json!({"site": s.site.to_string(), "calls": s.calls, "redundant": s.redundant,
                               "detected": s.detected_by.is_some()})
                    );
                } else {
                    let verdict = match (&s.detected_by, s.always_redundant()) {
                        (Some(by), _) => format!("detected by {by}"),
                        (None, true) => "SURVIVED (redundant: every call wrote back nothing new)".to_string(),
                        (None, false) => "SURVIVED (a gap in the suite)".to_string(),
                    };
                    println!("{:<60} calls {:>8} redundant {:>8}  {verdict}", s.site.to_string(), s.calls, s.redundant);
                }
            });
            let n = res.len();
            let m = res.iter().filter(|s| s.detected_by.is_some()).count();
            let redundant_survivors = res.iter().filter(|s| s.detected_by.is_none() && s.always_redundant()).count();
            println!("{m}/{n} sites detected ({redundant_survivors} undetected sites are redundant)");
            if m + redundant_survivors == n { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        Cmd::Torture { kills, seed, dir } => {
            let pool = dir.join(format!("daxkv-torture-{}.pool", std::process::id()));
            let bin = std::env::current_exe().expect("own path");
            let r = torture::run(&bin, &pool, kills, seed);
            let _ = std::fs::remove_file(&pool);
            if cli.json {
                println!(
                    "{}",
                    json!({"suite": "torture", "kills": r.kills, "acked": r.acked, "inflight_applied": r.inflight_applied,
                           "lost": r.lost, "failures": r.failures.len()})
                );
            } else {
                println!(
                    "{} kills, {} acknowledged operations, {} lost, {} in-flight operations found applied",
                    r.kills, r.acked, r.lost, r.inflight_applied
                );
            }
            for f in &r.failures {
                eprintln!("FAILURE {f}");
            }
            if r.failures.is_empty() && r.kills == kills { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
    }
}
