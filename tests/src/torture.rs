//! Kill torture: a child process writes to a pool on /dev/shm and reports
//! every acknowledged operation; the parent kills it with SIGKILL at random
//! moments, reopens the pool, and checks that every acknowledged operation
//! is there (the operation in flight may or may not be), and that `check()`
//! is clean. Then the child resumes, many times over.

use crate::workload::{Model, Op};
use daxkv::{Backend, Options, Persistence, Store};
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Operation number `i` of the torture sequence for `seed`.
pub fn op(seed: u64, i: u64) -> Op {
    let mut rng = StdRng::seed_from_u64(seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let key = |rng: &mut StdRng| format!("t{:05}", rng.gen_range(0..3000)).into_bytes();
    let val = |rng: &mut StdRng| {
        let len = if rng.gen_range(0..30) == 0 { rng.gen_range(2000..30_000) } else { rng.gen_range(1..300) };
        let mut v = format!("op{i}:").into_bytes();
        v.resize(len.max(v.len()), (i % 251) as u8);
        v
    };
    match rng.gen_range(0..100) {
        0..=69 => Op::Put(key(&mut rng), val(&mut rng)),
        70..=84 => Op::Delete(key(&mut rng)),
        85..=92 => Op::Batch((0..rng.gen_range(2..20)).map(|_| (key(&mut rng), Some(val(&mut rng)))).collect()),
        _ => Op::Tx((0..rng.gen_range(2..6)).map(|_| (key(&mut rng), Some(val(&mut rng)))).collect()),
    }
}

/// Options of the torture pools.
pub fn options() -> Options {
    Options::new().pool_size(64 << 20).persistence(Persistence::Force(Backend::Pmem)).create_if_missing(true)
}

/// The child: open (or create) the pool and run operations from `start`
/// on, printing `begin N` before and `ack N` after each, until killed.
pub fn child(pool: &Path, seed: u64, start: u64) -> ! {
    let store = match Store::open(pool, &options()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("torture child: open: {e}");
            std::process::exit(3);
        }
    };
    let out = std::io::stdout();
    let mut out = out.lock();
    let _ = writeln!(out, "ready");
    let _ = out.flush();
    let mut i = start;
    loop {
        let _ = writeln!(out, "begin {i}");
        let _ = out.flush();
        if let Err(e) = op(seed, i).run(&store) {
            eprintln!("torture child: op {i}: {e}");
            std::process::exit(4);
        }
        let _ = writeln!(out, "ack {i}");
        let _ = out.flush();
        i += 1;
    }
}

/// What a torture run found.
#[derive(Debug, Clone, Default)]
pub struct TortureReport {
    /// Kills done.
    pub kills: u64,
    /// Operations acknowledged in all.
    pub acked: u64,
    /// Kills that landed with an operation in flight that turned out applied.
    pub inflight_applied: u64,
    /// Acknowledged operations lost (must be 0).
    pub lost: u64,
    /// Everything wrong, with the seed and kill number that replay it.
    pub failures: Vec<String>,
}

/// Run `kills` rounds with the child binary `bin` (which must run
/// [`child`] for `torture-child POOL SEED START`).
pub fn run(bin: &Path, pool: &Path, kills: u64, seed: u64) -> TortureReport {
    let _ = std::fs::remove_file(pool);
    let mut rep = TortureReport::default();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut model = Model::new();
    let mut next = 0u64;
    for k in 0..kills {
        let mut child = Command::new(bin)
            .args(["torture-child", &pool.display().to_string(), &seed.to_string(), &next.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn torture child");
        let stdout = child.stdout.take().expect("stdout");
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for l in BufReader::new(stdout).lines() {
                match l {
                    Ok(l) => lines.push(l),
                    Err(_) => break,
                }
            }
            lines
        });
        // Let it work for a while once it is up, then kill it.
        let wait = Duration::from_micros(rng.gen_range(2_000..60_000));
        let t = Instant::now();
        std::thread::sleep(wait);
        let _ = child.kill(); // SIGKILL
        let status = child.wait().expect("wait for child");
        let lines = reader.join().expect("reader");
        if status.code().is_some() {
            rep.failures.push(format!("kill {k}: the child exited by itself ({status}) after {:?}", t.elapsed()));
            break;
        }
        // Operations acknowledged, and the one in flight.
        let mut last_ack = None;
        let mut inflight = None;
        for l in &lines {
            if let Some(n) = l.strip_prefix("ack ") {
                last_ack = n.parse::<u64>().ok();
                inflight = None;
            } else if let Some(n) = l.strip_prefix("begin ") {
                inflight = n.parse::<u64>().ok();
            }
        }
        if let Some(a) = last_ack {
            for i in next..=a {
                let o = op(seed, i);
                o.apply(&mut model, true);
                rep.acked += 1;
            }
            next = a + 1;
        }
        let store = match Store::open(pool, &options()) {
            Ok(s) => s,
            Err(e) => {
                rep.failures.push(format!("kill {k} (seed {seed}): reopen failed: {e}"));
                break;
            }
        };
        let got: Model = store.iter().map(|kv| kv.expect("iterate")).collect();
        let mut with_inflight = model.clone();
        if let Some(f) = inflight {
            op(seed, f).apply(&mut with_inflight, true);
        }
        match inflight {
            Some(f) if got == with_inflight && got != model => {
                rep.inflight_applied += 1;
                model = with_inflight;
                next = f + 1;
            }
            _ if got != model => {
                let lost = model.iter().filter(|(k, v)| got.get(*k) != Some(v)).count() as u64;
                rep.lost += lost;
                rep.failures.push(format!(
                    "kill {k} (seed {seed}): after {} acknowledged ops the pool holds {} keys, the model {} ({lost} differ)",
                    rep.acked,
                    got.len(),
                    model.len()
                ));
                break;
            }
            // In flight but not applied (or a no-op): the child resumes after it.
            Some(f) => next = f + 1,
            None => {}
        }
        match store.check() {
            Ok(c) if c.is_ok() => {}
            Ok(c) => {
                rep.failures.push(format!("kill {k} (seed {seed}): check: {:?}", c.problems));
                break;
            }
            Err(e) => {
                rep.failures.push(format!("kill {k} (seed {seed}): check failed: {e}"));
                break;
            }
        }
        // Half the rounds resume from a clean close, half from the crash.
        if k % 2 == 0 {
            store.abandon();
        } else if let Err(e) = store.close() {
            rep.failures.push(format!("kill {k}: close: {e}"));
            break;
        }
        rep.kills += 1;
    }
    rep
}
