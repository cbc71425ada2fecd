//! `daxkv-bench compare`: daxkv against LMDB and redb on the same memory,
//! with the same durability, on fills, reads, scans and YCSB A–F; the flush
//! floor of the machine first; throughput, latency percentiles, ratios
//! daxkv/peer and daxkv/floor with targets; table, JSON lines and charts.

use crate::engine::{self, Engine, Spec};
use crate::report::{self, Row};
use crate::row;
use crate::workload::{self, Limit, MISSING_BASE, Outcome, Rng, Zipf, key_into};
use daxkv_alloc::{Backend, PersistOptions, Region};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Every workload, in report order.
pub const WORKLOADS: [&str; 12] = [
    "fill-random",
    "fill-sequential",
    "read-random",
    "read-missing",
    "read-zipfian",
    "scan-100",
    "ycsb-a",
    "ycsb-b",
    "ycsb-c",
    "ycsb-d",
    "ycsb-e",
    "ycsb-f",
];

/// Targets: (workload, daxkv/peer at least), for daxkv `pmem` against each
/// durable peer, at every thread count.
pub const TARGETS: [(&str, f64); 5] =
    [("fill-random", 10.0), ("read-random", 3.0), ("ycsb-a", 5.0), ("ycsb-c", 2.5), ("ycsb-e", 1.0)];

/// Options of `daxkv-bench compare`.
#[derive(clap::Args, Debug, Clone)]
pub struct CompareArgs {
    /// Engines: daxkv, lmdb, redb or all (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "all")]
    pub engine: Vec<String>,
    /// daxkv backends to run (auto, pmem, eadr, msync, volatile). On a
    /// tmpfs, pmem runs the real flush instructions; eadr only fences,
    /// msync calls msync(2); volatile is the no-durability upper bound.
    #[arg(long, value_delimiter = ',', default_value = "pmem,eadr,msync,volatile")]
    pub backend: Vec<String>,
    /// Workloads (default all): fill-random, fill-sequential, read-random,
    /// read-missing, read-zipfian, scan-100, ycsb-a … ycsb-f.
    #[arg(long, value_delimiter = ',')]
    pub workloads: Vec<String>,
    /// Keys loaded before the read and YCSB workloads.
    #[arg(long, default_value_t = 1_000_000)]
    pub keys: u64,
    /// Key size in bytes (at least 8).
    #[arg(long, default_value_t = 16)]
    pub key_size: usize,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Thread counts, e.g. `1,2`.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub threads: Vec<usize>,
    /// Seconds per case (a case also stops after --ops operations; fills
    /// stop after --keys).
    #[arg(long, default_value_t = 3.0)]
    pub duration: f64,
    /// Operations per case, all threads together (default: run for
    /// --duration).
    #[arg(long)]
    pub ops: Option<u64>,
    /// Zipfian constant for read-zipfian and YCSB.
    #[arg(long, default_value_t = 0.99)]
    pub zipf: f64,
    /// Longest YCSB-E scan (lengths are uniform in 1..=this).
    #[arg(long, default_value_t = 100)]
    pub max_scan: u64,
    /// Random seed (keys chosen, operation mix).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Directory for the engines' files (a tmpfs stands in for DAX memory).
    #[arg(long, default_value = "/dev/shm")]
    pub dir: PathBuf,
    /// Directory for results.txt, results.jsonl and the charts.
    #[arg(long, default_value = "bench-out")]
    pub out: PathBuf,
    /// Skip the charts.
    #[arg(long)]
    pub no_charts: bool,
}

/// One measured case, with its latency curve for the charts.
pub struct Measured {
    /// The row (DESIGN.md "Benchmark output").
    pub row: Row,
    /// Engine label (`daxkv-pmem`, `lmdb`, `redb`).
    pub label: String,
    /// Workload.
    pub case: String,
    /// Threads.
    pub threads: usize,
    /// Throughput.
    pub ops_per_sec: f64,
    /// (percentile "nines" = -log10(1-q), latency ns).
    pub curve: Vec<(f64, f64)>,
}

/// The flush floor: one drain, and one durable 128 B flushcache write.
pub struct Floor {
    /// ns per drain with nothing pending.
    pub drain_ns: f64,
    /// ns per copy_nodrain(128 B) + drain to a random line.
    pub write_ns: f64,
    /// Backend name (pmem) and its instructions.
    pub info: String,
}

/// Measure the flush floor on anonymous memory with `pmem` forced.
pub fn flush_floor() -> Floor {
    let len = 64usize << 20;
    let r = Region::anonymous(len, &PersistOptions::default().with_backend(Backend::Pmem)).expect("anonymous region");
    for off in (0..r.len()).step_by(4096) {
        r.write(off, &[1]);
    }
    let drain_ns = crate::persist::measure(200, |_| r.drain().expect("drain"));
    let src = [0x5au8; 128];
    let slots = r.len() / 128;
    let mut rng = Rng::new(1);
    let write_ns = crate::persist::measure(200, |_| {
        r.copy_nodrain(rng.below(slots) * 128, &src);
        r.drain().expect("drain");
    });
    Floor { drain_ns, write_ns, info: r.persist_info().to_string() }
}

fn quantile_curve(o: &Outcome) -> Vec<(f64, f64)> {
    let mut v = Vec::new();
    let n = o.hist.len().max(1) as f64;
    let mut x = 0.0f64;
    while x <= 5.0 + 1e-9 {
        let q = 1.0 - 10f64.powf(-x);
        // A percentile needs at least ~10 samples beyond it to mean anything.
        if (1.0 - q) * n < 10.0 && x > 0.0 {
            break;
        }
        v.push((x, o.hist.value_at_quantile(q) as f64));
        x += 0.05;
    }
    v
}

struct Ctx<'a> {
    a: &'a CompareArgs,
    mp: &'a MultiProgress,
    overall: &'a ProgressBar,
    floor_ops: f64,
    out: Vec<Measured>,
}

impl Ctx<'_> {
    fn bar(&self, what: String) -> ProgressBar {
        let pb = self.mp.add(ProgressBar::new(1000));
        pb.set_style(
            ProgressStyle::with_template("{prefix:>34} [{bar:30}] {percent:>3}% {elapsed:>4} {msg}")
                .expect("template")
                .progress_chars("=> "),
        );
        pb.set_prefix(what);
        pb
    }

    fn emit(&mut self, spec: &Spec, e: &dyn Engine, case: &str, threads: usize, o: &Outcome, scan: bool) {
        let ops = o.ops as f64 / o.secs.max(1e-9);
        let mut r = row! {
            "bench": "compare", "case": case, "engine": e.name(), "backend": e.backend(), "threads": threads,
            "keys": self.a.keys, "key_size": self.a.key_size, "value_size": self.a.value_size,
            "ops": o.ops, "secs": o.secs, "ops_per_sec": ops,
            "p50_ns": o.hist.value_at_quantile(0.5), "p99_ns": o.hist.value_at_quantile(0.99),
            "p999_ns": o.hist.value_at_quantile(0.999), "max_ns": o.hist.max(),
            "x_floor": ops / self.floor_ops,
        };
        if scan {
            r.insert("keys_per_sec".into(), json!(o.found as f64 / o.secs.max(1e-9)));
        }
        self.out.push(Measured {
            row: r,
            label: spec.label(),
            case: case.to_string(),
            threads,
            ops_per_sec: ops,
            curve: quantile_curve(o),
        });
        self.overall.inc(1);
    }
}

fn limit(a: &CompareArgs, cap: Option<u64>) -> Limit {
    let ops = a.ops.unwrap_or(u64::MAX).min(cap.unwrap_or(u64::MAX));
    Limit { ops, secs: a.duration }
}

struct St {
    rng: Rng,
    k: Vec<u8>,
    v: Vec<u8>,
    bytes: u64,
}

fn seed_for(a: &CompareArgs, case: &str, t: usize) -> u64 {
    case.bytes()
        .fold(a.seed ^ (t as u64).wrapping_mul(0x9e37_79b9), |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// Run everything; returns rows (floor, engines, cases, ratios), the
/// measured cases, and (check, passed) lines.
pub fn run(a: &CompareArgs) -> (Vec<Row>, Vec<Measured>, Vec<(String, bool)>) {
    let specs = Spec::expand(&a.engine, &a.backend).unwrap_or_else(|e| {
        eprintln!("daxkv-bench: {e}");
        std::process::exit(2);
    });
    for w in &a.workloads {
        if !WORKLOADS.contains(&w.as_str()) {
            eprintln!("daxkv-bench: unknown workload {w:?} (one of {})", WORKLOADS.join(", "));
            std::process::exit(2);
        }
    }
    let wanted = |w: &str| a.workloads.is_empty() || a.workloads.iter().any(|x| x == w);
    let mut rows = Vec::new();

    eprintln!("flush floor: measuring one drain and one durable 128 B write (pmem forced, anonymous memory) ...");
    let floor = flush_floor();
    let floor_ops = 1e9 / floor.write_ns;
    eprintln!(
        "flush floor: drain {:.1} ns, 128 B flushcache write + drain {:.1} ns = {:.2} M durable writes/s per thread ({})",
        floor.drain_ns,
        floor.write_ns,
        floor_ops / 1e6,
        floor.info
    );
    rows.push(row! {"bench": "compare", "case": "flush-floor", "engine": "daxkv", "backend": "pmem", "threads": 1,
    "size": 128, "drain_ns": floor.drain_ns, "ns_per_op": floor.write_ns, "ops_per_sec": floor_ops});

    let mp = MultiProgress::new();
    let per_engine = a.threads.len() as u64 * WORKLOADS.iter().filter(|w| wanted(w)).count() as u64;
    let overall = mp.add(ProgressBar::new(per_engine * specs.len() as u64));
    overall.set_style(
        ProgressStyle::with_template("{prefix:>34} [{bar:30}] {pos}/{len} cases, {elapsed} elapsed, ~{eta} left")
            .expect("template")
            .progress_chars("#> "),
    );
    overall.set_prefix("daxkv-bench compare");
    let mut cx = Ctx { a, mp: &mp, overall: &overall, floor_ops, out: Vec::new() };
    let n = a.keys.max(2);
    let pair = (a.key_size.max(8) + a.value_size) as u64;
    let zipf = Zipf::new(n, a.zipf);
    let value: Vec<u8> = (0..a.value_size).map(|i| (i as u8).wrapping_mul(31) ^ a.seed as u8).collect();
    let mut described = Vec::new();

    for spec in &specs {
        // fill-sequential: a fresh instance per thread count.
        if wanted("fill-sequential") {
            for &t in &a.threads {
                let e = spec.create(&a.dir, &format!("seq{t}"), n, pair);
                describe(&mut rows, &mut described, spec, e.as_ref());
                let pb = cx.bar(format!("{} fill-sequential {t}t", spec.label()));
                let per = n.div_ceil(t as u64);
                let o = workload::run(
                    t,
                    limit(a, Some(n)),
                    &pb,
                    |_| St { rng: Rng::new(0), k: Vec::new(), v: Vec::new(), bytes: 0 },
                    |s, th, j| {
                        key_into(&mut s.k, th as u64 * per + j, a.key_size, false);
                        e.put(&s.k, &value);
                        0
                    },
                );
                pb.finish_and_clear();
                cx.emit(spec, e.as_ref(), "fill-sequential", t, &o, false);
                let files = e.files();
                drop(e);
                engine::remove(&files);
            }
        }
        for &t in &a.threads {
            let e = spec.create(&a.dir, &format!("main{t}"), n, pair);
            describe(&mut rows, &mut described, spec, e.as_ref());
            // fill-random into the empty instance: thread th inserts keys th, th+t, ...
            let per_thread: Vec<u64> = if wanted("fill-random") {
                let pb = cx.bar(format!("{} fill-random {t}t", spec.label()));
                let o = workload::run(
                    t,
                    limit(a, Some(n)),
                    &pb,
                    |_| St { rng: Rng::new(0), k: Vec::new(), v: Vec::new(), bytes: 0 },
                    |s, th, j| {
                        key_into(&mut s.k, th as u64 + j * t as u64, a.key_size, true);
                        e.put(&s.k, &value);
                        0
                    },
                );
                pb.finish_and_clear();
                cx.emit(spec, e.as_ref(), "fill-random", t, &o, false);
                o.per_thread
            } else {
                vec![0; t]
            };
            let rest: Vec<&str> = WORKLOADS[2..].iter().copied().filter(|w| wanted(w)).collect();
            if rest.is_empty() {
                let files = e.files();
                drop(e);
                engine::remove(&files);
                continue;
            }
            // Load the keys fill-random did not reach, in batches (not measured).
            let missing: Vec<u64> = (0..n).filter(|&i| (i / t as u64) >= per_thread[(i % t as u64) as usize]).collect();
            if !missing.is_empty() {
                let pb = cx.bar(format!("{} load {t}t (batched)", spec.label()));
                pb.set_length(missing.len() as u64);
                let t0 = Instant::now();
                for ch in missing.chunks(10_000) {
                    let pairs: Vec<(Vec<u8>, Vec<u8>)> =
                        ch.iter().map(|&i| (workload::key(i, a.key_size, true), value.clone())).collect();
                    e.put_batch(&pairs);
                    pb.inc(ch.len() as u64);
                }
                pb.finish_and_clear();
                say(
                    &mp,
                    format!(
                        "{}: loaded the other {} keys in batches of 10000 in {:.1} s",
                        spec.label(),
                        missing.len(),
                        t0.elapsed().as_secs_f64()
                    ),
                );
            }
            let inserted = AtomicU64::new(n);
            let order = [
                "read-random",
                "read-missing",
                "read-zipfian",
                "scan-100",
                "ycsb-c",
                "ycsb-b",
                "ycsb-a",
                "ycsb-f",
                "ycsb-d",
                "ycsb-e",
            ];
            for case in order.into_iter().filter(|w| wanted(w)) {
                let pb = cx.bar(format!("{} {case} {t}t", spec.label()));
                let ks = a.key_size;
                let e = e.as_ref();
                let (zipf, value, inserted) = (&zipf, &value, &inserted);
                let insert = |s: &mut St| {
                    let i = inserted.fetch_add(1, Ordering::Relaxed);
                    key_into(&mut s.k, i, ks, true);
                    e.put(&s.k, value);
                    0
                };
                let read = |s: &mut St, i: u64| {
                    key_into(&mut s.k, i, ks, true);
                    u64::from(e.get(&s.k, &mut s.v))
                };
                let update = |s: &mut St, i: u64| {
                    key_into(&mut s.k, i, ks, true);
                    e.put(&s.k, value);
                    0
                };
                let init =
                    |th: usize| St { rng: Rng::new(seed_for(a, case, th)), k: Vec::new(), v: Vec::new(), bytes: 0 };
                let lim = limit(a, None);
                let o = match case {
                    "read-random" => workload::run(t, lim, &pb, init, |s, _, _| {
                        let i = s.rng.below(n);
                        read(s, i)
                    }),
                    "read-missing" => workload::run(t, lim, &pb, init, |s, _, _| {
                        let i = MISSING_BASE + s.rng.below(1 << 40);
                        read(s, i)
                    }),
                    "read-zipfian" | "ycsb-c" => workload::run(t, lim, &pb, init, |s, _, _| {
                        let i = zipf.scrambled(&mut s.rng);
                        read(s, i)
                    }),
                    "scan-100" => workload::run(t, lim, &pb, init, |s, _, _| {
                        let i = s.rng.below(n);
                        key_into(&mut s.k, i, ks, true);
                        e.scan(&s.k, 100, &mut s.bytes) as u64
                    }),
                    "ycsb-a" | "ycsb-b" => {
                        let reads = if case == "ycsb-a" { 50 } else { 95 };
                        workload::run(t, lim, &pb, init, |s, _, _| {
                            let i = zipf.scrambled(&mut s.rng);
                            if s.rng.below(100) < reads { read(s, i) } else { update(s, i) }
                        })
                    }
                    "ycsb-d" => workload::run(t, lim, &pb, init, |s, _, _| {
                        if s.rng.below(100) < 95 {
                            let last = inserted.load(Ordering::Relaxed) - 1;
                            let i = last - zipf.rank(&mut s.rng).min(last);
                            read(s, i)
                        } else {
                            insert(s)
                        }
                    }),
                    "ycsb-e" => workload::run(t, lim, &pb, init, |s, _, _| {
                        if s.rng.below(100) < 95 {
                            let i = zipf.scrambled(&mut s.rng);
                            let len = 1 + s.rng.below(a.max_scan.max(1)) as usize;
                            key_into(&mut s.k, i, ks, true);
                            e.scan(&s.k, len, &mut s.bytes) as u64
                        } else {
                            insert(s)
                        }
                    }),
                    "ycsb-f" => workload::run(t, lim, &pb, init, |s, _, _| {
                        let i = zipf.scrambled(&mut s.rng);
                        if s.rng.below(100) < 50 {
                            read(s, i)
                        } else {
                            // read-modify-write: read, change, write back
                            key_into(&mut s.k, i, ks, true);
                            let hit = e.get(&s.k, &mut s.v);
                            if s.v.is_empty() {
                                s.v.extend_from_slice(value);
                            }
                            s.v[0] = s.v[0].wrapping_add(1);
                            e.put(&s.k, &s.v);
                            u64::from(hit)
                        }
                    }),
                    other => unreachable!("workload {other}"),
                };
                pb.finish_and_clear();
                if case == "read-random" && o.found != o.ops {
                    say(&mp, format!("WARNING {}: read-random found {} of {} keys", spec.label(), o.found, o.ops));
                }
                if case == "read-missing" && o.found != 0 {
                    say(&mp, format!("WARNING {}: read-missing found {} keys", spec.label(), o.found));
                }
                cx.emit(spec, e, case, t, &o, case == "scan-100");
            }
            let files = e.files();
            drop(e);
            engine::remove(&files);
        }
    }
    overall.finish_and_clear();
    let measured = cx.out;

    // Ratios daxkv/peer for every workload and thread count; targets for pmem.
    let mut checks = Vec::new();
    let fig = |label: &str, case: &str, t: usize| {
        measured.iter().find(|m| m.label == label && m.case == case && m.threads == t).map(|m| m.ops_per_sec)
    };
    let dax: Vec<&Spec> = specs.iter().filter(|s| matches!(s, Spec::Daxkv(_))).collect();
    let peers: Vec<&Spec> = specs.iter().filter(|s| !matches!(s, Spec::Daxkv(_))).collect();
    for d in &dax {
        for p in &peers {
            for &t in &a.threads {
                for case in WORKLOADS {
                    let (Some(x), Some(y)) = (fig(&d.label(), case, t), fig(&p.label(), case, t)) else {
                        continue;
                    };
                    let ratio = x / y;
                    let target = TARGETS.iter().find(|(c, _)| *c == case).map(|x| x.1);
                    let target = if **d == Spec::Daxkv("pmem".into()) { target } else { None };
                    let mut r = row! {"bench": "compare", "case": case, "engine": d.label(), "peer": p.label(),
                    "threads": t, "ratio": ratio};
                    if let Some(tg) = target {
                        r.insert("target".into(), json!(tg));
                        r.insert("ok".into(), json!(ratio >= tg));
                        checks.push((
                            format!(
                                "{case}, {t} thread(s): {} / {} = {ratio:.2}x (target >= {tg}x)",
                                d.label(),
                                p.label()
                            ),
                            ratio >= tg,
                        ));
                    }
                    rows.push(r);
                }
            }
        }
    }
    (rows, measured, checks)
}

/// A line on stderr above the progress bars (or plain when they are hidden).
fn say(mp: &MultiProgress, line: String) {
    if mp.is_hidden() {
        eprintln!("{line}");
    } else {
        let _ = mp.println(line);
    }
}

fn describe(rows: &mut Vec<Row>, described: &mut Vec<String>, spec: &Spec, e: &dyn Engine) {
    if described.contains(&spec.label()) {
        return;
    }
    described.push(spec.label());
    rows.push(row! {"bench": "compare", "case": "engine", "engine": e.name(), "backend": e.backend(),
    "label": spec.label(), "durability": e.durability()});
}

/// Print and write everything: the table (stdout and results.txt), JSON
/// lines (stdout with --json, and results.jsonl), the charts.
pub fn output(a: &CompareArgs, rows: &[Row], measured: &[Measured], checks: &[(String, bool)], json: bool) {
    let _ = std::fs::create_dir_all(&a.out);
    let results: Vec<Row> = measured.iter().map(|m| m.row.clone()).collect();
    let mut all: Vec<Row> =
        rows.iter().filter(|r| r["case"] == "flush-floor" || r["case"] == "engine").cloned().collect();
    all.extend(results.iter().cloned());
    all.extend(rows.iter().filter(|r| r.contains_key("ratio")).cloned());
    let jsonl: String = all.iter().map(|r| format!("{}\n", serde_json::Value::Object(r.clone()))).collect();
    let text = render_text(a, rows, &results, checks);
    write(&a.out.join("results.jsonl"), &jsonl);
    write(&a.out.join("results.txt"), &text);
    if json {
        print!("{jsonl}");
    } else {
        print!("{text}");
    }
    if !a.no_charts {
        match crate::chart::draw_all(a, measured) {
            Ok(files) => {
                for f in files {
                    eprintln!("chart: {}", f.display());
                }
            }
            Err(e) => eprintln!("charts not drawn: {e}"),
        }
    }
    eprintln!("results: {} and {}", a.out.join("results.txt").display(), a.out.join("results.jsonl").display());
    for (line, ok) in checks {
        eprintln!("{} {line}", if *ok { "ok:  " } else { "BELOW TARGET:" });
    }
}

fn write(p: &Path, s: &str) {
    if let Err(e) = std::fs::write(p, s) {
        eprintln!("daxkv-bench: write {}: {e}", p.display());
    }
}

fn render_text(a: &CompareArgs, rows: &[Row], results: &[Row], checks: &[(String, bool)]) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "daxkv-bench compare: {} keys, {} B keys, {} B values, threads {:?}, {} s or {} ops per case, zipfian {}, seed {}\n\n",
        a.keys,
        a.key_size,
        a.value_size,
        a.threads,
        a.duration,
        a.ops.map_or("unlimited".into(), |o| o.to_string()),
        a.zipf,
        a.seed
    ));
    s.push_str("Flush floor (pmem forced on DRAM; x_floor below = ops/s ÷ one durable 128 B write per op):\n");
    let floor: Vec<Row> = rows.iter().filter(|r| r["case"] == "flush-floor").cloned().collect();
    s.push_str(&report::render(&floor));
    s.push_str("\nEngines and durability:\n");
    for r in rows.iter().filter(|r| r["case"] == "engine") {
        s.push_str(&format!("  {}: {}\n", r["label"].as_str().unwrap_or("?"), r["durability"].as_str().unwrap_or("?")));
    }
    s.push_str("\nResults:\n");
    let slim: Vec<Row> = results
        .iter()
        .map(|r| {
            let mut m = Row::new();
            for k in [
                "case",
                "engine",
                "backend",
                "threads",
                "ops_per_sec",
                "p50_ns",
                "p99_ns",
                "p999_ns",
                "max_ns",
                "x_floor",
            ] {
                if let Some(v) = r.get(k) {
                    m.insert(k.into(), v.clone());
                }
            }
            m
        })
        .collect();
    s.push_str(&report::render(&slim));
    let ratios: Vec<&Row> = rows.iter().filter(|r| r.contains_key("ratio")).collect();
    if !ratios.is_empty() {
        s.push_str("\nRatios daxkv / peer (ops/s), and daxkv-pmem / flush floor; ! = below target (targets: ");
        s.push_str(&TARGETS.iter().map(|(c, t)| format!("{c} {t}x")).collect::<Vec<_>>().join(", "));
        s.push_str(", for daxkv-pmem):\n");
        let mut cols: Vec<String> = Vec::new();
        for r in &ratios {
            let c = format!(
                "{}/{}",
                r["engine"].as_str().unwrap_or("?").trim_start_matches("daxkv-"),
                r["peer"].as_str().unwrap_or("?")
            );
            if !cols.contains(&c) {
                cols.push(c);
            }
        }
        let mut table = Vec::new();
        for &t in &a.threads {
            for case in WORKLOADS {
                let mut m = Row::new();
                m.insert("case".into(), json!(case));
                m.insert("threads".into(), json!(t));
                let mut any = false;
                for r in ratios.iter().filter(|r| r["case"] == case && r["threads"] == t) {
                    let c = format!(
                        "{}/{}",
                        r["engine"].as_str().unwrap_or("?").trim_start_matches("daxkv-"),
                        r["peer"].as_str().unwrap_or("?")
                    );
                    let v = r["ratio"].as_f64().unwrap_or(f64::NAN);
                    let bad = r.get("ok").and_then(|o| o.as_bool()) == Some(false);
                    m.insert(c, json!(format!("{v:.2}{}", if bad { "!" } else { "" })));
                    any = true;
                }
                if let Some(x) = results.iter().find(|r| {
                    r["case"] == case && r["threads"] == t && r["engine"] == "daxkv" && r["backend"] == "pmem"
                }) {
                    m.insert("pmem/floor".into(), json!(format!("{:.2}", x["x_floor"].as_f64().unwrap_or(f64::NAN))));
                }
                if any {
                    table.push(m);
                }
            }
        }
        s.push_str(&report::render(&table));
    }
    if !checks.is_empty() {
        let below = checks.iter().filter(|c| !c.1).count();
        s.push_str(&format!("\nTargets: {} met, {} below target\n", checks.len() - below, below));
        for (line, ok) in checks {
            s.push_str(&format!("  {} {line}\n", if *ok { "ok:          " } else { "BELOW TARGET:" }));
        }
    }
    s
}
