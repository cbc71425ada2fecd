//! Random damage to a pool file: whatever is flipped, zeroed, overwritten
//! or copied, opening it gives a typed error or a store, and the store's
//! reads, scans, `check`, writes, close and reopen return (no panic, no
//! hang). When `check` finds nothing wrong, every value read is one that
//! was written under that key: damage is reported, never served.
//!
//! Two base images, one closed cleanly (open trusts the saved index) and
//! one left by a crash (open replays the log and walks the leaves), each
//! damaged in `DAXKV_CORRUPT_CASES` ways (default 300) from
//! `DAXKV_CORRUPT_SEED` (default fixed). A failing case prints its seed
//! and damage; `DAXKV_CORRUPT_SHOW=1` prints every case's outcome.

use daxkv_tests::ShmDir;
use daxkv_tests::corrupt::{POOL, SB_COPIES, Targets, base_image, exercise, reseal, salvaged, set_word, targets, word};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

/// Most ways a case damages its image.
const MAX_DAMAGE: usize = 4;

/// A value a damaged word might plausibly hold: near its old value, an
/// offset inside or just outside the pool, an extreme, or noise.
fn nasty(rng: &mut StdRng, old: u64) -> u64 {
    match rng.gen_range(0..8) {
        0 => 0,
        1 => u64::MAX,
        2 => old ^ (1 << rng.gen_range(0..64)),
        3 => rng.gen_range(0..POOL),
        4 => rng.gen_range(0..POOL) & !63,
        5 => POOL - rng.gen_range(0..4096u64),
        6 => old.wrapping_add(rng.gen_range(1..200u64)).wrapping_sub(100),
        _ => rng.r#gen(),
    }
}

/// Damage `img` in one random way; returns what was done.
fn mutate(rng: &mut StdRng, img: &mut [u8], t: &Targets) -> String {
    let (live_words, live_lines) = (&t.words, &t.lines);
    match rng.gen_range(0..12) {
        0..=3 => {
            let at = t.structure[rng.gen_range(0..t.structure.len())];
            let (old, new) = (word(img, at), nasty(rng, word(img, at)));
            set_word(img, at, new);
            format!("structure word at {at:#x}: {old:#x} -> {new:#x}")
        }
        4 | 5 => {
            let at = live_words[rng.gen_range(0..live_words.len())];
            let (old, new) = (word(img, at), nasty(rng, word(img, at)));
            set_word(img, at, new);
            format!("word at {at:#x}: {old:#x} -> {new:#x}")
        }
        6 | 7 => {
            let at = rng.gen_range(0..img.len());
            let bit = rng.gen_range(0..8);
            let at = if rng.gen_bool(0.8) {
                live_words[rng.gen_range(0..live_words.len())] + rng.gen_range(0..8)
            } else {
                at
            };
            img[at] ^= 1 << bit;
            format!("bit {bit} of byte {at:#x}")
        }
        8 => {
            let at = live_lines[rng.gen_range(0..live_lines.len())];
            img[at..at + 64].fill(0);
            format!("zeroed line {at:#x}")
        }
        9 => {
            let from = live_lines[rng.gen_range(0..live_lines.len())];
            let to = live_lines[rng.gen_range(0..live_lines.len())];
            let line: Vec<u8> = img[from..from + 64].to_vec();
            img[to..to + 64].copy_from_slice(&line);
            format!("line {from:#x} copied over {to:#x}")
        }
        _ => {
            // A superblock field with a valid checksum: the geometry and
            // offsets themselves must be checked, not only the crc.
            let field = 8 * rng.gen_range(1..17usize);
            let both = rng.gen_bool(0.5);
            let old = word(img, field);
            let new = nasty(rng, old);
            for (i, &sb) in SB_COPIES.iter().enumerate() {
                if both || i == 0 {
                    set_word(img, sb + field, new);
                    reseal(img, sb);
                }
            }
            format!("superblock {} field {field}: {old:#x} -> {new:#x}, resealed", if both { "A+B" } else { "A" })
        }
    }
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn run(crashed: bool) {
    let d = ShmDir::new(&format!("corrupt-{crashed}"));
    let base_path = d.0.join("base.pool");
    let h = std::sync::Arc::new(base_image(&base_path, crashed));
    // Undamaged, salvage hands over exactly what the store holds.
    let (pairs, rep) = salvaged(&base_path, &h);
    let rep = rep.unwrap();
    assert!(rep.is_complete() && rep.unfinished == 0, "{rep:?}");
    assert!(pairs.into_iter().eq(h.model.clone()), "salvage of the undamaged pool differs from the model");
    let base = std::fs::read(&base_path).unwrap();
    let t = targets(&base);
    let cases = env("DAXKV_CORRUPT_CASES", 300);
    let seed0 = env("DAXKV_CORRUPT_SEED", 0x5eed);
    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    for case in 0..cases {
        let seed = seed0.wrapping_mul(1_000_003).wrapping_add(case);
        let mut rng = StdRng::seed_from_u64(seed);
        let mut img = base.clone();
        let what: Vec<String> = (0..rng.gen_range(1..=MAX_DAMAGE)).map(|_| mutate(&mut rng, &mut img, &t)).collect();
        let path: PathBuf = d.0.join(format!("case-{case}.pool"));
        std::fs::write(&path, &img).unwrap();
        let (tx, rx) = mpsc::channel();
        let (p, h2) = (path.clone(), h.clone());
        std::thread::spawn(move || {
            let out = catch_unwind(AssertUnwindSafe(|| exercise(&p, &h2, seed)));
            let _ = tx.send(out.map_err(|e| {
                e.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            }));
        });
        let out = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(out) => out,
            Err(_) => Err("no answer within 60 s (a hang)".into()),
        };
        match out {
            Ok(summary) => {
                if std::env::var_os("DAXKV_CORRUPT_SHOW").is_some() {
                    eprintln!("case {case}: {summary}");
                }
                let kind = summary.split([':', ',']).take(if summary.starts_with("opened") { 2 } else { 1 }).collect();
                *outcomes.entry(kind).or_default() += 1;
            }
            Err(msg) => panic!(
                "crashed base: {crashed}, case {case} (DAXKV_CORRUPT_SEED={seed0}), seed {seed}: {msg}\n  damage: {what:?}"
            ),
        }
        let _ = std::fs::remove_file(&path);
    }
    eprintln!("crashed base: {crashed}: {outcomes:?}");
}

#[test]
fn damage_to_a_cleanly_closed_pool() {
    run(false);
}

#[test]
fn damage_to_a_crashed_pool() {
    run(true);
}
