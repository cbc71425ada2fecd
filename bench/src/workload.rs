//! Key and request generators (uniform, scrambled zipfian, latest) and the
//! multi-threaded case runner with per-operation latency histograms.

use crate::clock::Laps;
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use quanta::Clock;
use std::sync::Barrier;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Key numbers at and above this are never inserted: `read-missing` asks
/// for them.
pub const MISSING_BASE: u64 = 1 << 62;

/// Small, fast, seedable generator (splitmix64).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`, decorrelated from neighbouring seeds.
    pub fn new(seed: u64) -> Rng {
        let mut r = Rng(seed ^ 0x6a09_e667_f3bc_c908);
        r.next();
        r
    }
    /// Next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next() as u128 * n as u128) >> 64) as u64
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Zipfian ranks over `0..n` with constant `theta` (Gray et al., "Quickly
/// generating billion-record synthetic databases", SIGMOD'94), the method
/// YCSB uses; rank 0 is the most popular.
#[derive(Clone, Debug)]
pub struct Zipf {
    n: u64,
    alpha: f64,
    zetan: f64,
    eta: f64,
    two_cut: f64,
}

fn zeta(n: u64, theta: f64) -> f64 {
    (1..=n).map(|i| (i as f64).powf(-theta)).sum()
}

/// 64-bit FNV-1a over the eight little-endian bytes of `x`.
fn fnv1a(x: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in x.to_le_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl Zipf {
    /// Ranks over `0..n` (n ≥ 2) with constant `theta` in (0, 1).
    pub fn new(n: u64, theta: f64) -> Zipf {
        let n = n.max(2);
        let zetan = zeta(n, theta);
        let zeta2 = zeta(2, theta);
        let alpha = 1.0 / (1.0 - theta);
        let eta = (1.0 - (2.0 / n as f64).powf(1.0 - theta)) / (1.0 - zeta2 / zetan);
        Zipf { n, alpha, zetan, eta, two_cut: 1.0 + 0.5f64.powf(theta) }
    }
    /// A rank: 0 most often.
    pub fn rank(&self, rng: &mut Rng) -> u64 {
        let u = rng.unit();
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < self.two_cut {
            return 1;
        }
        let r = (self.n as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        r.min(self.n - 1)
    }
    /// A rank scattered over the key space by a hash, so that the popular
    /// keys are not neighbours (YCSB's "scrambled zipfian").
    pub fn scrambled(&self, rng: &mut Rng) -> u64 {
        fnv1a(self.rank(rng)) % self.n
    }
}

/// Write key number `i` as `size` bytes (at least 8) into `buf`: a fixed
/// prefix and 8 big-endian bytes, scattered over the key space (random
/// order) or in order.
pub fn key_into(buf: &mut Vec<u8>, i: u64, size: usize, scattered: bool) {
    let x = if scattered { i.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(17) ^ 0x5bd1_e995 } else { i };
    let n = size.max(8);
    buf.clear();
    buf.resize(n - 8, b'k');
    buf.extend_from_slice(&x.to_be_bytes());
}

/// Key number `i` (see [`key_into`]).
pub fn key(i: u64, size: usize, scattered: bool) -> Vec<u8> {
    let mut k = Vec::with_capacity(size.max(8));
    key_into(&mut k, i, size, scattered);
    k
}

/// When a case stops: after `ops` operations in all or after `secs`,
/// whichever comes first.
#[derive(Clone, Copy, Debug)]
pub struct Limit {
    /// Operations in all threads.
    pub ops: u64,
    /// Seconds.
    pub secs: f64,
}

/// What a case measured.
pub struct Outcome {
    /// Operations done.
    pub ops: u64,
    /// Wall-clock seconds from the common start to the last thread's end.
    pub secs: f64,
    /// Latency of every operation, nanoseconds.
    pub hist: Histogram<u64>,
    /// Sum of what the operations returned (hits, keys scanned).
    pub found: u64,
    /// Operations done by each thread.
    pub per_thread: Vec<u64>,
}

/// A latency histogram, 1 ns to 60 s, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds")
}

/// Run `op(state, thread, j)` for the j-th operation of each thread until
/// the limit, timing every call. `init(thread)` makes each thread's state.
/// The progress bar shows the fraction of the limit reached.
pub fn run<S>(
    threads: usize,
    limit: Limit,
    pb: &ProgressBar,
    init: impl Fn(usize) -> S + Sync,
    op: impl Fn(&mut S, usize, u64) -> u64 + Sync,
) -> Outcome {
    let threads = threads.max(1);
    let barrier = Barrier::new(threads + 1);
    let clock = &Clock::new();
    let done = AtomicU64::new(0);
    let running = AtomicU64::new(threads as u64);
    let dur = Duration::from_secs_f64(limit.secs);
    pb.set_length(1000);
    pb.set_position(0);
    let (results, secs) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (barrier, done, running, init, op) = (&barrier, &done, &running, &init, &op);
                let quota = limit.ops / threads as u64 + u64::from((t as u64) < limit.ops % threads as u64);
                s.spawn(move || {
                    let mut st = init(t);
                    let mut h = histogram();
                    let mut found = 0;
                    let mut n = 0;
                    barrier.wait();
                    let begin = Instant::now();
                    let deadline = begin + dur;
                    let mut laps = Laps::start(clock);
                    while n < quota {
                        found += op(&mut st, t, n);
                        let _ = h.record(laps.lap());
                        n += 1;
                        if n % 256 == 0 {
                            done.fetch_add(256, Ordering::Relaxed);
                            if Instant::now() >= deadline {
                                break;
                            }
                            laps.reset();
                        }
                    }
                    let end = Instant::now();
                    running.fetch_sub(1, Ordering::Release);
                    (h, found, n, begin, end)
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        while running.load(Ordering::Acquire) > 0 {
            std::thread::sleep(Duration::from_millis(50));
            let by_time = start.elapsed().as_secs_f64() / limit.secs.max(1e-9);
            let by_ops = done.load(Ordering::Relaxed) as f64 / limit.ops.max(1) as f64;
            pb.set_position((by_time.max(by_ops).min(1.0) * 1000.0) as u64);
            let rate = done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64().max(1e-9);
            pb.set_message(format!("{:.0} ops/s", rate));
        }
        let r: Vec<_> = handles.into_iter().map(|h| h.join().expect("bench thread")).collect();
        // From the first thread's start to the last one's end.
        let begin = r.iter().map(|x| x.3).min().unwrap_or(start);
        let end = r.iter().map(|x| x.4).max().unwrap_or(start);
        (r, end.duration_since(begin).as_secs_f64())
    });
    pb.set_position(1000);
    let mut hist = histogram();
    let mut found = 0;
    let mut per_thread = Vec::new();
    for (h, f, n, _, _) in results {
        hist.add(h).expect("same bounds");
        found += f;
        per_thread.push(n);
    }
    Outcome { ops: per_thread.iter().sum(), secs, hist, found, per_thread }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_is_skewed_and_in_range() {
        let z = Zipf::new(1000, 0.99);
        let mut r = Rng::new(7);
        let mut counts = vec![0u64; 1000];
        for _ in 0..200_000 {
            let k = z.rank(&mut r);
            counts[k as usize] += 1;
            assert!(z.scrambled(&mut r) < 1000);
        }
        // With theta 0.99 over 1000 items rank 0 takes ~13%, rank 1 about half that.
        let p0 = counts[0] as f64 / 200_000.0;
        assert!((0.10..0.17).contains(&p0), "p0 = {p0}");
        assert!(counts[0] > counts[1] && counts[1] > counts[10] && counts[10] > counts[500]);
    }

    #[test]
    fn keys_are_distinct_and_sized() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..10_000 {
            let k = key(i, 16, true);
            assert_eq!(k.len(), 16);
            assert!(seen.insert(k));
        }
        assert!(key(1, 16, false) < key(2, 16, false));
    }
}
