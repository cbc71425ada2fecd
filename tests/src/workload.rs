//! Seeded workload generators and the model they are checked against.

use daxkv::{Error, Store};
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::collections::BTreeMap;

/// The model of a store: a sorted map from each key to what a reader
/// observes of it ([`observed`]).
pub type Model = BTreeMap<Vec<u8>, Vec<u8>>;

/// An expiry far ahead: never reached while a workload runs.
pub const LATER: u64 = 4_000_000_000_000;
/// An expiry long past: the key is absent as soon as it is written.
pub const PAST: u64 = 1;

/// What a reader observes of a key: its value, then, if it has an expiry,
/// a marker and the expiry (so the model checks expiries too).
pub fn observed(value: &[u8], expires: Option<u64>) -> Vec<u8> {
    let mut v = value.to_vec();
    if let Some(at) = expires {
        v.extend_from_slice(b"\0expires:");
        v.extend_from_slice(&at.to_le_bytes());
    }
    v
}

/// One operation of a workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Put a key.
    Put(Vec<u8>, Vec<u8>),
    /// Put a key that expires at the given time ([`LATER`] or [`PAST`]).
    PutExpiring(Vec<u8>, Vec<u8>, u64),
    /// Delete a key.
    Delete(Vec<u8>),
    /// Compare-and-swap: expected value (None = absent), new value (None = delete).
    Cas(Vec<u8>, Option<Vec<u8>>, Option<Vec<u8>>),
    /// A transaction of puts (Some) and deletes (None), all or nothing.
    Tx(Vec<(Vec<u8>, Option<Vec<u8>>)>),
    /// A write batch, all or nothing.
    Batch(Vec<(Vec<u8>, Option<Vec<u8>>)>),
    /// Remove every key, all or nothing.
    Clear,
    /// Close the store, grow its pool to this many bytes and open it
    /// again (run by the explorer, which owns the store: [`Op::run`]
    /// cannot).
    Grow(u64),
    /// Close the store cleanly and open it again (run by the explorer).
    Reopen,
}

impl Op {
    /// A short description for reports.
    pub fn describe(&self) -> String {
        let k = |k: &[u8]| String::from_utf8_lossy(k).into_owned();
        match self {
            Op::Put(key, v) => format!("put {} ({} B)", k(key), v.len()),
            Op::PutExpiring(key, v, at) => format!("put {} ({} B) expiring at {at}", k(key), v.len()),
            Op::Delete(key) => format!("delete {}", k(key)),
            Op::Cas(key, _, _) => format!("cas {}", k(key)),
            Op::Tx(w) => format!("transaction of {}", w.len()),
            Op::Batch(w) => format!("batch of {}", w.len()),
            Op::Clear => "clear".into(),
            Op::Grow(size) => format!("grow to {size} bytes"),
            Op::Reopen => "close and reopen".into(),
        }
    }

    /// Run the op on `store`; `Ok(true)` if it changed the state (or may
    /// have), `Ok(false)` if it was refused (pool full, CAS mismatch).
    /// [`Op::Grow`] and [`Op::Reopen`] need the store closed and panic
    /// here.
    pub fn run(&self, store: &Store) -> Result<bool, Error> {
        let full = |r: Result<(), Error>| match r {
            Ok(()) => Ok(true),
            Err(Error::PoolFull(_)) => Ok(false),
            Err(e) => Err(e),
        };
        match self {
            Op::Put(k, v) => full(store.put(k, v)),
            Op::PutExpiring(k, v, at) => full(store.put_with_expiry(k, v, Some(*at))),
            Op::Delete(k) => store.delete(k).map(|_| true),
            Op::Cas(k, e, n) => match store.compare_and_swap(k, e.as_deref(), n.as_deref()) {
                Ok(r) => Ok(r.is_ok()),
                Err(Error::PoolFull(_)) => Ok(false),
                Err(e) => Err(e),
            },
            Op::Tx(w) => full(store.transaction(|tx| {
                for (k, v) in w {
                    match v {
                        Some(v) => tx.put(k, v)?,
                        None => {
                            tx.delete(k)?;
                        }
                    }
                }
                Ok(())
            })),
            Op::Batch(w) => full(store.write_batch(w)),
            Op::Clear => store.clear().map(|_| true),
            Op::Grow(_) | Op::Reopen => panic!("{} closes the store: the explorer runs it", self.describe()),
        }
    }

    /// Apply the op to the model as the store applies it when `changed`.
    pub fn apply(&self, m: &mut Model, changed: bool) {
        if !changed {
            return;
        }
        match self {
            Op::Put(k, v) => {
                m.insert(k.clone(), v.clone());
            }
            // (Workloads use only times far ahead or long past.)
            Op::PutExpiring(k, _, PAST) => {
                m.remove(k);
            }
            Op::PutExpiring(k, v, at) => {
                m.insert(k.clone(), observed(v, Some(*at)));
            }
            Op::Delete(k) => {
                m.remove(k);
            }
            Op::Cas(k, _, n) => match n {
                Some(v) => {
                    m.insert(k.clone(), v.clone());
                }
                None => {
                    m.remove(k);
                }
            },
            Op::Tx(w) | Op::Batch(w) => {
                for (k, v) in w {
                    match v {
                        Some(v) => m.insert(k.clone(), v.clone()),
                        None => m.remove(k),
                    };
                }
            }
            Op::Clear => m.clear(),
            // Neither changes a key.
            Op::Grow(_) | Op::Reopen => {}
        }
    }
}

/// The workloads of the crash suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Random puts, deletes, CAS, transactions and batches, small and large
    /// values.
    Mixed,
    /// Sequential fills that split leaves, then deletes that merge them
    /// and batches that empty and unlink them.
    FillDrain,
    /// Big values in a small pool: allocations fail with PoolFull, deletes
    /// free space, puts succeed again.
    PoolFull,
    /// Many small transactions through a small log: it wraps several times.
    LogWrap,
    /// 2 KiB records fill the pool and are all deleted (their slabs go back
    /// to the page pool); one-line records of another class then get new
    /// slabs on the same pages, so one-drain inserts land in blocks that
    /// held whole records before (zeroed when their slab was made).
    SlabReuse,
    /// Values of 4 to 30 KiB fill a 1 MiB pool, which is grown (full) to
    /// 2.5 MiB a third of the way through and (its metadata now after its
    /// pages) to 4 MiB at two thirds; puts fill the new room. The store is
    /// also closed and reopened three times.
    Grow,
    /// Leaves emptied by single deletes while the leaf before is too full
    /// to take their last keys: the delete that empties one unlinks it, as
    /// the last change of its op. No image of a later op may reach the
    /// leaf once it is retired (see `explore`).
    Unlink,
}

impl Kind {
    /// Every workload.
    pub const ALL: [Kind; 7] =
        [Kind::Mixed, Kind::FillDrain, Kind::PoolFull, Kind::LogWrap, Kind::SlabReuse, Kind::Grow, Kind::Unlink];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Mixed => "mixed",
            Kind::FillDrain => "fill-drain",
            Kind::PoolFull => "pool-full",
            Kind::LogWrap => "log-wrap",
            Kind::SlabReuse => "slab-reuse",
            Kind::Grow => "grow",
            Kind::Unlink => "unlink",
        }
    }

    /// Parse a name.
    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }

    /// Region and log size for this workload (bytes).
    pub fn geometry(self) -> (usize, u64) {
        match self {
            Kind::PoolFull => (2 << 20, 128 << 10),
            Kind::LogWrap => (2 << 20, 16 << 10),
            Kind::Grow => (GROWN, 128 << 10),
            _ => (2 << 20, 128 << 10),
        }
    }

    /// The pool's size when it is created: the whole region, except where
    /// the workload grows it.
    pub fn start_size(self) -> u64 {
        match self {
            Kind::Grow => 1 << 20,
            k => k.geometry().0 as u64,
        }
    }
}

/// The region of the grow workload: its pool's size after the second grow.
const GROWN: usize = 4 << 20;

fn val(rng: &mut StdRng, small: bool) -> Vec<u8> {
    let len = if small || rng.gen_range(0..20) != 0 { rng.gen_range(0..200) } else { rng.gen_range(300..6000) };
    let b: u8 = rng.r#gen();
    (0..len).map(|i| b.wrapping_add(i as u8)).collect()
}

fn key(rng: &mut StdRng, space: u32) -> Vec<u8> {
    format!("k{:05}", rng.gen_range(0..space)).into_bytes()
}

fn writes(rng: &mut StdRng, n: usize, space: u32) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    (0..n).map(|_| (key(rng, space), if rng.gen_bool(0.8) { Some(val(rng, true)) } else { None })).collect()
}

/// Generate `n` operations of workload `kind` from `seed`. CAS expectations
/// are filled in against the model as it evolves, so about half succeed.
pub fn generate(kind: Kind, seed: u64, n: usize) -> Vec<Op> {
    let mut rng = StdRng::seed_from_u64(seed ^ (kind as u64) << 32);
    let mut model = Model::new();
    let mut ops = Vec::with_capacity(n);
    for i in 0..n {
        let op = match kind {
            Kind::Mixed => match rng.gen_range(0..100) {
                0..=36 => Op::Put(key(&mut rng, 500), val(&mut rng, false)),
                // An expiry ends the record (in each of its layouts); one
                // long past leaves a record that reads as absent.
                37..=40 => {
                    let at = if rng.gen_bool(0.5) { LATER } else { PAST };
                    // Small, medium and large records are laid out apart.
                    let len = [rng.gen_range(0..200), rng.gen_range(300..4000), rng.gen_range(4097..9000)];
                    let v = vec![rng.r#gen(); len[rng.gen_range(0..3)]];
                    Op::PutExpiring(key(&mut rng, 500), v, at)
                }
                // A long key (several cache lines) with a large value: the
                // record's header and key are copied apart from its value.
                41..=44 => {
                    let mut k = key(&mut rng, 500);
                    k.resize(k.len() + rng.gen_range(64..400), b'~');
                    Op::Put(k, vec![rng.r#gen(); rng.gen_range(4097..9000)])
                }
                45..=59 => Op::Delete(key(&mut rng, 500)),
                60..=69 => {
                    let k = key(&mut rng, 500);
                    let cur = model.get(&k).cloned();
                    let exp = if rng.gen_bool(0.6) { cur } else { Some(b"no such value".to_vec()) };
                    let new = if rng.gen_bool(0.8) { Some(val(&mut rng, true)) } else { None };
                    Op::Cas(k, exp, new)
                }
                70..=84 => {
                    let n = if rng.gen_range(0..30) == 0 { rng.gen_range(65..120) } else { rng.gen_range(2..8) };
                    Op::Tx(writes(&mut rng, n, 500))
                }
                85..=98 => {
                    let n = rng.gen_range(2..12);
                    Op::Batch(writes(&mut rng, n, 500))
                }
                _ => Op::Clear,
            },
            Kind::FillDrain => {
                // Fill in order (splits), then delete in order, each delete
                // followed by a put whose record is leaf-sized, so a leaf
                // unlinked by a delete is reused at once; then refill.
                let (fill, drain) = (n * 3 / 10, n * 8 / 10);
                if i == drain + 10 {
                    // A clear of a store whose only leaf is the head (the
                    // refill after the clear below has ten keys): its
                    // bitmap alone is the publish. Not earlier: a fill
                    // short of keys no longer empties a leaf by single
                    // deletes, and the unlink's drain went untested.
                    Op::Clear
                } else if i < fill {
                    Op::Put(format!("f{:05}", i).into_bytes(), val(&mut rng, true))
                } else if i < drain {
                    let j = (i - fill) / 2;
                    if (i - fill) % 40 == 0 {
                        // The top 45 keys in one batch: more than a leaf
                        // holds here, so the top leaf empties at once (the
                        // unlink of an empty leaf; single deletes merge a
                        // leaf into its predecessor before it is empty).
                        Op::Batch(
                            (j..j + 45)
                                .map(|d| (format!("f{:05}", fill.saturating_sub(1 + d)).into_bytes(), None))
                                .collect(),
                        )
                    } else if (i - fill) % 2 == 0 {
                        // from the top, so leaves shrink and merge
                        Op::Delete(format!("f{:05}", fill - 1 - j).into_bytes())
                    } else {
                        // below every f key: lands in the first leaves, not
                        // in the ones being emptied
                        Op::Put(format!("a{:05}", j).into_bytes(), vec![b'L'; 600])
                    }
                } else if i == drain {
                    // What is left (a few leaves) goes at once.
                    Op::Clear
                } else {
                    Op::Put(format!("f{:05}", (i * 7) % fill.max(1)).into_bytes(), val(&mut rng, true))
                }
            }
            Kind::PoolFull => {
                if rng.gen_range(0..3) == 0 {
                    Op::Delete(key(&mut rng, 40))
                } else {
                    let len = rng.gen_range(20_000..120_000);
                    Op::Put(key(&mut rng, 40), vec![rng.r#gen(); len])
                }
            }
            Kind::SlabReuse => {
                let (fill, drain) = (n * 4 / 10, n * 6 / 10);
                if i < fill {
                    // ~2 KiB records, 8 to a batch, until the pool is full
                    // (later batches fail with PoolFull).
                    Op::Batch(
                        (0..8)
                            .map(|d| {
                                (
                                    format!("r{:05}", i * 8 + d).into_bytes(),
                                    Some(vec![rng.r#gen(); rng.gen_range(1800..2000)]),
                                )
                            })
                            .collect(),
                    )
                } else if i < drain {
                    // Every record deleted.
                    let per = (fill * 8).div_ceil((drain - fill).max(1));
                    let j = (i - fill) * per;
                    Op::Batch((j..(j + per).min(fill * 8)).map(|d| (format!("r{d:05}").into_bytes(), None)).collect())
                } else {
                    // One-line records: another class, whose new slabs can
                    // only take the freed pages; a block at an old record's
                    // start, written by a one-drain insert whose line does
                    // not land, must not bring the old record back.
                    Op::Put(format!("t{i:05}").into_bytes(), vec![rng.r#gen(); rng.gen_range(0..40)])
                }
            }
            Kind::Grow => {
                if i == n / 3 {
                    Op::Grow(5 << 19)
                } else if i == 2 * n / 3 {
                    Op::Grow(GROWN as u64)
                } else if i == n / 6 || i == n / 2 || i == 5 * n / 6 {
                    // Close and reopen: full (no room to save the index, so
                    // the reopen recovers), then with room (a clean close
                    // and open, superblock writes included).
                    Op::Reopen
                } else {
                    match rng.gen_range(0..20) {
                        0..=2 => Op::Delete(key(&mut rng, 300)),
                        3 => Op::Tx(writes(&mut rng, 3, 300)),
                        // Slab classes up to 16 KiB, and extents above.
                        _ => {
                            let len = if rng.gen_range(0..4) == 0 {
                                rng.gen_range(17_000..30_000)
                            } else {
                                rng.gen_range(4_000..16_000)
                            };
                            Op::Put(key(&mut rng, 300), vec![rng.r#gen(); len])
                        }
                    }
                }
            }
            Kind::Unlink => {
                // Cycles of 200 ops, each on a store cleared to one leaf.
                // Keys 0..120 in order leave three leaves, split as
                // [0, 32), [32, 64) and [64, 120); twelve more keys in the
                // middle one give it 44, more than a merge may make (40),
                // so the last leaf's deletes, from the top down, empty it
                // and the delete of key 64 unlinks it.
                let k = |j: usize, extra: bool| format!("u{j:03}{}", if extra { "+" } else { "" }).into_bytes();
                let t = i % 200;
                if t == 0 && i > 0 {
                    Op::Clear
                } else if t < 120 {
                    Op::Put(k(t, false), val(&mut rng, true))
                } else if t < 132 {
                    Op::Put(k(40 + t - 120, true), val(&mut rng, true))
                } else if t < 188 {
                    Op::Delete(k(119 - (t - 132), false))
                } else {
                    // Then other changes, whose first drain would settle
                    // an unlink left pending.
                    Op::Put(k((t * 7) % 64, false), val(&mut rng, true))
                }
            }
            Kind::LogWrap => {
                let n = rng.gen_range(2..6);
                // Keys far apart so that several leaves change: the log path.
                Op::Tx(
                    (0..n)
                        .map(|j| {
                            (
                                format!("w{:02}{:04}", j * 20, rng.gen_range(0..300)).into_bytes(),
                                Some(val(&mut rng, true)),
                            )
                        })
                        .collect(),
                )
            }
        };
        // The model only steers CAS expectations; outcomes are decided when
        // the op runs.
        op.apply(&mut model, true);
        ops.push(op);
    }
    ops
}
