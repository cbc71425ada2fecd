//! `daxkv-bench alloc`: the persistent allocator's hot path and space use.

use crate::report::Row;
use crate::row;
use daxkv_alloc::{Backend, Heap, PAGE, PersistOptions, Region};
use std::sync::{Arc, Barrier};
use std::time::Instant;

/// Options of `daxkv-bench alloc`.
#[derive(clap::Args, Debug)]
pub struct AllocArgs {
    /// Alloc+free pairs per thread per measurement.
    #[arg(long, default_value_t = 20_000_000)]
    pub pairs: u64,
    /// Allocations for the space-overhead measurement.
    #[arg(long, default_value_t = 1_000_000)]
    pub overhead_allocs: u64,
}

fn heap(bytes: u64) -> Heap {
    let opts = PersistOptions::default().with_backend(Backend::Pmem);
    let r = Arc::new(Region::anonymous(bytes as usize, &opts).expect("anonymous region"));
    let len = r.len();
    Heap::format(r, 0, len).expect("format")
}

/// Run every case; returns rows and (check, passed) lines.
pub fn run(a: &AllocArgs) -> (Vec<Row>, Vec<(String, bool)>) {
    let mut rows = Vec::new();
    let mut checks = Vec::new();
    for size in [64usize, 256, 4096] {
        for threads in [1usize, 2] {
            let h = heap(256 << 20);
            let barrier = Arc::new(Barrier::new(threads));
            let start = Instant::now();
            let per_thread: Vec<f64> = (0..threads)
                .map(|_| {
                    let (h, b) = (h.clone(), barrier.clone());
                    let n = a.pairs;
                    std::thread::spawn(move || {
                        // A small window of live blocks, so frees are not
                        // always of the block just allocated.
                        let mut win = [0u64; 8];
                        for w in &mut win {
                            *w = h.alloc(size).expect("alloc");
                        }
                        b.wait();
                        let t = Instant::now();
                        for i in 0..n {
                            let k = (i % 8) as usize;
                            h.free(win[k]).expect("free");
                            win[k] = h.alloc(size).expect("alloc");
                        }
                        let secs = t.elapsed().as_secs_f64();
                        for w in win {
                            h.free(w).expect("free");
                        }
                        n as f64 / secs
                    })
                })
                .collect::<Vec<_>>()
                .into_iter()
                .map(|t| t.join().expect("bench thread"))
                .collect();
            let _ = start;
            let total: f64 = per_thread.iter().sum();
            let per = total / threads as f64;
            rows.push(row! {
                "bench": "alloc", "case": "alloc-free-pair", "engine": "daxkv", "backend": "pmem",
                "threads": threads, "size": size, "ops_per_sec": total, "ops_per_sec_per_thread": per,
                "ns_per_op": 1e9 / per,
            });
            if size == 64 {
                checks.push((
                    format!(
                        "64 B alloc+free pairs per thread, {threads} thread(s): {:.1} M/s (target >= 20 M/s)",
                        per / 1e6
                    ),
                    per >= 20e6,
                ));
            }
        }
    }
    // Space: N allocations of 128 B.
    let h = heap((a.overhead_allocs * 128 * 2).max(64 << 20));
    let mut v = Vec::with_capacity(a.overhead_allocs as usize);
    for _ in 0..a.overhead_allocs {
        v.push(h.alloc(128).expect("alloc"));
    }
    let s = h.stats();
    let used_pages = s.heap_bytes / PAGE - s.free_pages;
    // pages in use plus their descriptor and bitmap bytes
    let used = used_pages * PAGE + used_pages * (8 + 32);
    let requested = a.overhead_allocs * 128;
    let overhead = used as f64 / requested as f64;
    rows.push(row! {
        "bench": "alloc", "case": "space-128", "engine": "daxkv", "backend": "pmem", "threads": 1,
        "keys": a.overhead_allocs, "size": 128, "overhead": overhead,
    });
    checks.push((
        format!("space for {} x 128 B: {overhead:.3}x requested (target <= 1.15x)", a.overhead_allocs),
        overhead <= 1.15,
    ));
    (rows, checks)
}
