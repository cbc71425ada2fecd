//! `daxkv-bench persist`: the physical floor of durability on this machine.
//!
//! All cases run on one region on /dev/shm with the `pmem` backend forced,
//! so the real flush instructions and non-temporal stores execute on DRAM.
//! Destinations cycle over the whole region so that copies are not served
//! from cache.

use crate::report::Row;
use crate::row;
use crate::workload::Rng;
use daxkv_alloc::{Backend, CopyIsa, FlushInstr, PersistOptions, Region, RegionOptions, available_flushes};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Options of `daxkv-bench persist`.
#[derive(clap::Args, Debug)]
pub struct PersistArgs {
    /// Directory for the pool file (a tmpfs stands in for DAX memory).
    #[arg(long, default_value = "/dev/shm")]
    pub dir: PathBuf,
    /// Region size in MiB (destinations cycle over all of it).
    #[arg(long, default_value_t = 1024)]
    pub region_mib: u64,
    /// Time per measurement round in milliseconds (best of 3 rounds).
    #[arg(long, default_value_t = 300)]
    pub ms: u64,
}

/// Run `op(i)` in batches until `ms` passes; best of three rounds.
/// Returns nanoseconds per operation.
pub(crate) fn measure(ms: u64, mut op: impl FnMut(u64)) -> f64 {
    let mut best = f64::MAX;
    let mut i = 0u64;
    for _ in 0..3 {
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < Duration::from_millis(ms) {
            for _ in 0..64 {
                op(i);
                i += 1;
            }
            n += 64;
        }
        best = best.min(start.elapsed().as_nanos() as f64 / n as f64);
    }
    best
}

fn open(args: &PersistArgs, name: &str, opts: PersistOptions) -> (Region, PathBuf) {
    let path = args.dir.join(format!("daxkv-bench-persist-{}-{name}.pool", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let ro = RegionOptions { persist: opts, create_size: Some(args.region_mib << 20), min_len: 4096 };
    let r = Region::open(&path, &ro).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    (r, path)
}

/// Run every case; returns the rows and a list of (check, passed) lines.
pub fn run(args: &PersistArgs) -> (Vec<Row>, Vec<(String, bool)>) {
    let isa = CopyIsa::available()[0];
    let base = PersistOptions { force_copy: Some(isa), ..PersistOptions::default().with_backend(Backend::Pmem) };
    let (r, path) = open(args, "main", base.clone());
    let backend = r.persist_info().backend.name();
    eprintln!("{}", r.persist_info());
    let len = r.len();
    let src: Vec<u8> = (0..(1u32 << 20)).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    // Touch every page once so page faults are not measured.
    for off in (0..len).step_by(4096) {
        r.write(off, &[1]);
    }
    let mut rows = Vec::new();
    let mut bw = std::collections::HashMap::new();
    for size in [4096usize, 1 << 20] {
        let slots = len / size as u64;
        let dst = |i: u64| (i % slots) * size as u64;
        type Case<'a> = (&'static str, Box<dyn FnMut(u64) + 'a>);
        let cases: [Case; 3] = [
            ("memcpy", Box::new(|i| r.write(dst(i), &src[..size]))),
            (
                "flushcache-copy",
                Box::new(|i| {
                    r.copy_nodrain(dst(i), &src[..size]);
                    r.drain().expect("drain");
                }),
            ),
            (
                "memcpy-clwb",
                Box::new(|i| {
                    r.write(dst(i), &src[..size]);
                    r.flush(dst(i), size);
                    r.drain().expect("drain");
                }),
            ),
        ];
        for (case, mut op) in cases {
            let ns = measure(args.ms, &mut op);
            let gbs = size as f64 / ns;
            bw.insert((case, size), (gbs, ns));
            rows.push(row! {
                "bench": "persist", "case": case, "engine": "daxkv", "backend": backend, "threads": 1,
                "size": size, "gb_per_sec": gbs, "ns_per_op": ns,
            });
        }
    }
    drop(r);
    let _ = std::fs::remove_file(&path);

    // Durable writes: store + flush + fence with each flush instruction, and
    // the flushcache copy + fence, to random line-aligned destinations.
    let mut variants: Vec<(String, PersistOptions, bool)> = available_flushes()
        .into_iter()
        .map(|f| {
            (format!("durable-write-{}", f.name()), PersistOptions { force_flush: Some(f), ..base.clone() }, false)
        })
        .collect();
    variants.push(("durable-write-flushcache".into(), base.clone(), true));
    let mut durable = std::collections::HashMap::new();
    for (case, opts, flushcache) in variants {
        let (r, path) = open(args, "durable", opts);
        for off in (0..r.len()).step_by(4096) {
            r.write(off, &[1]);
        }
        for size in [64usize, 128, 256, 4096] {
            let slots = r.len() / 4096;
            let mut rng = Rng::new(0x2545_f491_4f6c_dd1d);
            let ns = measure(args.ms, |_| {
                let off = (rng.next() % slots) * 4096;
                if flushcache {
                    r.copy_nodrain(off, &src[..size]);
                } else {
                    r.write(off, &src[..size]);
                    r.flush(off, size);
                }
                r.drain().expect("drain");
            });
            durable.insert((case.clone(), size), ns);
            rows.push(row! {
                "bench": "persist", "case": case.clone(), "engine": "daxkv", "backend": backend, "threads": 1,
                "size": size, "ns_per_op": ns, "gb_per_sec": size as f64 / ns,
            });
        }
        drop(r);
        let _ = std::fs::remove_file(&path);
    }

    // One drain with nothing pending, and one after a single line flush.
    let (r, path) = open(args, "drain", base.clone());
    let ns = measure(args.ms, |_| r.drain().expect("drain"));
    rows.push(row! {"bench": "persist", "case": "drain", "engine": "daxkv", "backend": backend, "threads": 1, "ns_per_op": ns});
    drop(r);
    let _ = std::fs::remove_file(&path);

    let mut checks = Vec::new();
    let fc = bw[&("flushcache-copy", 1 << 20)].0;
    let mc = bw[&("memcpy-clwb", 1 << 20)].0;
    checks.push((
        format!("flushcache copy bandwidth at 1 MiB / memcpy+clwb: {:.2}x (target >= 1.40x)", fc / mc),
        fc / mc >= 1.4,
    ));
    let clwb_name = format!("durable-write-{}", FlushInstr::Clwb.name());
    if let Some(&w) = durable.get(&(clwb_name, 4096)) {
        let f = durable[&("durable-write-flushcache".to_string(), 4096)];
        checks.push((
            format!("durable 4 KiB write, flushcache / memcpy+clwb+sfence: {:.2}x (target <= 0.80x)", f / w),
            f / w <= 0.8,
        ));
    }
    (rows, checks)
}
