//! Crash at every drain of a random workload under the simulator, and check
//! every post-crash image the simulator offers: acknowledged entries are
//! recovered whole, nothing is recovered in part, nothing uncommitted is
//! recovered unless its commit was in progress, and the log goes on working
//! after recovery (with crashes during that too).
#![cfg(not(loom))]

use daxkv_alloc::Region;
use daxkv_alloc::sim::{CrashPoint, SimConfig};
use daxkv_log::{Log, LogError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};

const IMAGE: usize = 4096;
const BASE: u64 = 1024;
const LEN: u64 = 2048;

type Ops = Vec<Vec<u8>>;

/// What the workload has done, as the hook sees it at a crash.
#[derive(Default, Clone)]
struct Model {
    /// Every entry appended, by sequence number.
    entries: BTreeMap<u64, Ops>,
    /// Highest sequence number whose commit returned.
    acked: u64,
    /// Highest sequence number appended (or about to be).
    appended: u64,
    /// Last checkpoint that returned, and one in progress.
    ckpt_done: u64,
    ckpt_pending: Option<u64>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap()
}

/// Recover from `img` and check it against `m`; returns the recovered
/// entries and where the log was applied through.
fn check(img: &[u8], m: &Model) -> Result<(u64, Vec<(u64, Ops)>), String> {
    let r = Arc::new(Region::sim(img, SimConfig::default()));
    let rec = Log::scan(&r, BASE, LEN).map_err(|e| format!("scan: {e}"))?;
    let applied = rec.applied_through();
    if applied != m.ckpt_done && Some(applied) != m.ckpt_pending {
        return Err(format!("applied through {applied}, checkpoints were {} / {:?}", m.ckpt_done, m.ckpt_pending));
    }
    let end = *rec.end();
    let got: Vec<(u64, Ops)> = rec.map(|e| (e.seq, e.ops)).collect();
    for (i, (seq, ops)) in got.iter().enumerate() {
        if *seq != applied + 1 + i as u64 {
            return Err(format!("entry {i} has seq {seq}, expected {}", applied + 1 + i as u64));
        }
        match m.entries.get(seq) {
            Some(want) if want == ops => {}
            Some(_) => return Err(format!("entry {seq} recovered with other contents (partial or mixed)")),
            None => return Err(format!("entry {seq} was never appended")),
        }
    }
    let last = applied + got.len() as u64;
    if last < m.acked {
        return Err(format!("acknowledged entry {} lost: recovered through {last}, end {end:?}", last + 1));
    }
    if last > m.appended {
        return Err(format!("recovered through {last}, beyond the last appended {}", m.appended));
    }
    // open must agree with scan
    let (_log, rec2) = Log::open(r, BASE, LEN).map_err(|e| format!("open: {e}"))?;
    let got2: Vec<(u64, Ops)> = rec2.map(|e| (e.seq, e.ops)).collect();
    if got2 != got {
        return Err("open recovered other entries than scan".into());
    }
    Ok((applied, got))
}

fn random_ops(rng: &mut StdRng, sizes: Option<&Ops>) -> Ops {
    match sizes {
        // Same lengths as `sizes`, other bytes: a record of the very same length.
        Some(like) => like.iter().map(|o| o.iter().map(|b| b ^ 0xa5).collect()).collect(),
        None => (0..rng.gen_range(1..=5))
            .map(|_| {
                let n = if rng.gen_bool(0.1) { rng.gen_range(200..400) } else { rng.gen_range(0..100) };
                (0..n).map(|_| rng.r#gen()).collect()
            })
            .collect(),
    }
}

/// What the second life's hook knows and found.
#[derive(Default)]
struct SecondLife {
    /// The new entry was appended (its commit may be in progress).
    appended: bool,
    /// Its commit returned.
    acked: bool,
    failure: Option<String>,
    images: u64,
}

/// After a crash: reopen the recovered image under a second simulator and
/// append one entry the same length as the first lost one (if any), with a
/// crash at every drain of that too (open's own drains included). Nothing
/// from before the crash that was not recovered may come back.
fn second_life(img: &[u8], applied: u64, base: Vec<(u64, Ops)>, m: &Model, rng: &mut StdRng) -> Result<u64, String> {
    let next = applied + base.len() as u64 + 1;
    let new_ops = random_ops(rng, m.entries.get(&next));
    let r = Arc::new(Region::sim(img, SimConfig::default()));
    let state = Arc::new(Mutex::new(SecondLife::default()));
    {
        let (state, base, new_ops) = (state.clone(), base.clone(), new_ops.clone());
        r.simulator().unwrap().set_hook(move |cp: &CrashPoint| {
            let mut st = lock(&state);
            let (appended, acked) = (st.appended, st.acked);
            cp.for_each_image(|img, desc| {
                st.images += 1;
                let r = Region::sim(img, SimConfig::default());
                let res = Log::scan(&r, BASE, LEN).map_err(|e| e.to_string()).and_then(|rec| {
                    let got: Vec<(u64, Ops)> = rec.map(|e| (e.seq, e.ops)).collect();
                    let mut with = base.clone();
                    with.push((next, new_ops.clone()));
                    if got == base && !acked || got == with && appended {
                        Ok(())
                    } else {
                        Err(format!(
                            "second life recovered {:?}, expected {:?} (+ entry {next} if appended={appended}, acked={acked})",
                            got.iter().map(|e| e.0).collect::<Vec<_>>(),
                            base.iter().map(|e| e.0).collect::<Vec<_>>()
                        ))
                    }
                });
                if let Err(e) = res {
                    st.failure = Some(format!("crash point {} image {desc}: {e}", cp.index));
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            });
        });
    }
    let (log, rec) = Log::open(r.clone(), BASE, LEN).map_err(|e| e.to_string())?;
    assert_eq!(rec.len(), base.len());
    lock(&state).appended = true;
    let seq = log.try_append(&new_ops);
    match seq {
        Ok(seq) => {
            assert_eq!(seq, next);
            log.commit(seq).map_err(|e| e.to_string())?;
            lock(&state).acked = true;
        }
        // The recovered log may be full; then only open was exercised.
        Err(LogError::Full { .. }) => lock(&state).appended = false,
        Err(e) => return Err(e.to_string()),
    }
    let st = lock(&state);
    match &st.failure {
        Some(e) => Err(e.clone()),
        None => Ok(st.images),
    }
}

#[test]
fn crash_at_every_drain() {
    let seed: u64 = std::env::var("DAXKV_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x10c);
    eprintln!("seed {seed} (DAXKV_CRASH_SEED to replay)");
    let mut rng = StdRng::seed_from_u64(seed);
    let region = Arc::new(Region::sim(&vec![0u8; IMAGE], SimConfig::default()));
    let log = Log::create(region.clone(), BASE, LEN).unwrap();
    let model = Arc::new(Mutex::new(Model::default()));
    let create_drains = log.stats().drains;
    // (crash points, images, second lives, second-life images, failure)
    let report = Arc::new(Mutex::new((0u64, 0u64, 0u64, 0u64, None::<String>)));
    {
        let (model, report) = (model.clone(), report.clone());
        let mut hook_rng = StdRng::seed_from_u64(seed ^ 0xc0ffee);
        region.simulator().unwrap().set_hook(move |cp: &CrashPoint| {
            let m = lock(&model).clone();
            let mut rep = lock(&report);
            if rep.4.is_some() {
                return;
            }
            rep.0 += 1;
            let mut failure = None;
            let mut n = 0u64;
            cp.for_each_image(|img, desc| {
                n += 1;
                let res = check(img, &m).and_then(|(applied, got)| {
                    // Every 16th image also lives on and crashes again.
                    if n % 16 == 1 {
                        rep.2 += 1;
                        rep.3 += second_life(img, applied, got, &m, &mut hook_rng)?;
                    }
                    Ok(())
                });
                match res {
                    Ok(()) => ControlFlow::Continue(()),
                    Err(e) => {
                        failure = Some(format!("crash point {} ({}) image {desc}: {e}", cp.index, cp.site));
                        ControlFlow::Break(())
                    }
                }
            });
            rep.1 += n;
            rep.4 = failure;
        });
    }

    let mut applied = 0u64;
    for _batch in 0..400 {
        let k = rng.gen_range(1..=3);
        let mut last = None;
        for _ in 0..k {
            let ops = random_ops(&mut rng, None);
            let seq = log.next_seq();
            {
                let mut m = lock(&model);
                m.entries.insert(seq, ops.clone());
                m.appended = seq;
            }
            let seq = match log.try_append(&ops) {
                Ok(s) => s,
                Err(LogError::Full { .. }) => {
                    // Commit what is appended, then apply and checkpoint
                    // everything but a random few, and retry.
                    if let Some(l) = last.take() {
                        log.commit(l).unwrap();
                        lock(&model).acked = l;
                    }
                    let acked = lock(&model).acked;
                    applied = acked.saturating_sub(rng.gen_range(0..2)).max(applied);
                    lock(&model).ckpt_pending = Some(applied);
                    log.checkpoint(applied).unwrap();
                    {
                        let mut m = lock(&model);
                        m.ckpt_done = applied;
                        m.ckpt_pending = None;
                    }
                    match log.try_append(&ops) {
                        Ok(s) => s,
                        Err(LogError::Full { .. }) => {
                            applied = lock(&model).acked;
                            lock(&model).ckpt_pending = Some(applied);
                            log.checkpoint(applied).unwrap();
                            let mut m = lock(&model);
                            m.ckpt_done = applied;
                            m.ckpt_pending = None;
                            drop(m);
                            log.try_append(&ops).unwrap()
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
                Err(e) => panic!("{e}"),
            };
            assert_eq!(seq, lock(&model).appended);
            last = Some(seq);
        }
        if let Some(l) = last {
            log.commit(l).unwrap();
            lock(&model).acked = l;
        }
        if let Some(e) = &lock(&report).4 {
            panic!("{e}");
        }
    }
    region.simulator().unwrap().clear_hook();
    let rep = lock(&report).clone();
    if let Some(e) = rep.4 {
        panic!("{e}");
    }
    let stats = log.stats();
    eprintln!("{} crash points, {} images, {} second lives with {} images; {stats:?}", rep.0, rep.1, rep.2, rep.3);
    assert!(stats.bytes > 10 * log.capacity(), "the workload must wrap the log several times: {stats:?}");
    assert!(stats.checkpoints > 10);
    assert_eq!(rep.0, stats.drains - create_drains, "a crash point at every drain");
    assert!(rep.2 > 100 && rep.3 > 100, "second lives ran");
}

/// The checkpoint is never durable before the applied state it declares:
/// the owner writes its state (flushed, not drained) and checkpoints; in
/// every crash image where recovery starts after an entry, that entry's
/// applied state is on media.
#[test]
fn checkpoint_never_precedes_applied_state() {
    const STATE: u64 = 64; // the owner's "applied state": one word per entry
    let region = Arc::new(Region::sim(&vec![0u8; IMAGE], SimConfig::default()));
    let log = Log::create(region.clone(), BASE, LEN).unwrap();
    let failure = Arc::new(Mutex::new(None::<String>));
    let images = Arc::new(Mutex::new(0u64));
    {
        let (failure, images) = (failure.clone(), images.clone());
        region.simulator().unwrap().set_hook(move |cp: &CrashPoint| {
            cp.for_each_image(|img, desc| {
                *lock(&images) += 1;
                let r = Region::sim(img, SimConfig::default());
                let applied = Log::scan(&r, BASE, LEN).unwrap().applied_through();
                for seq in 1..=applied {
                    if r.read_u64(STATE + 8 * (seq - 1)) != seq {
                        *lock(&failure) =
                            Some(format!("image {desc}: checkpoint {applied} durable, state of {seq} not"));
                        return ControlFlow::Break(());
                    }
                }
                ControlFlow::Continue(())
            });
        });
    }
    for seq in 1..=40u64 {
        assert_eq!(log.append_commit(&[seq.to_le_bytes()]).unwrap(), seq);
        region.write_u64(STATE + 8 * (seq - 1), seq);
        region.flush(STATE + 8 * (seq - 1), 8);
        if seq % 3 == 0 {
            log.checkpoint(seq).unwrap();
        }
        if let Some(e) = lock(&failure).take() {
            panic!("{e}");
        }
    }
    assert!(*lock(&images) > 100);
}

/// What two committing threads have done, as the hook sees it.
#[derive(Default, Clone)]
struct SharedModel {
    /// Tags of entries about to be appended or appended.
    registered: std::collections::BTreeSet<(u8, u32)>,
    /// Sequence number → tag, for entries whose commit returned.
    acked: BTreeMap<u64, (u8, u32)>,
    ckpt_done: u64,
    ckpt_pending: std::collections::BTreeSet<u64>,
}

/// The operations of entry `i` of thread `t`: recognisable whole.
fn tagged_ops(t: u8, i: u32) -> Ops {
    let mut ops = vec![[vec![t], i.to_le_bytes().to_vec()].concat()];
    let n = (i as usize * 7 + t as usize) % 4;
    for k in 0..n {
        ops.push(vec![t ^ k as u8 ^ i as u8; (i as usize * 13 + k * 29) % 150]);
    }
    ops
}

fn check_shared(img: &[u8], m: &SharedModel) -> Result<(), String> {
    let r = Region::sim(img, SimConfig::default());
    let rec = Log::scan(&r, BASE, LEN).map_err(|e| e.to_string())?;
    let applied = rec.applied_through();
    if applied != m.ckpt_done && !m.ckpt_pending.contains(&applied) {
        return Err(format!("applied through {applied}: checkpoints {} / {:?}", m.ckpt_done, m.ckpt_pending));
    }
    let got: Vec<_> = rec.collect();
    let mut tags = std::collections::BTreeSet::new();
    for (i, e) in got.iter().enumerate() {
        if e.seq != applied + 1 + i as u64 {
            return Err(format!("seq gap at {}", e.seq));
        }
        let tag = e.ops.first().filter(|o| o.len() == 5).map(|o| (o[0], u32::from_le_bytes([o[1], o[2], o[3], o[4]])));
        let Some(tag) = tag.filter(|t| m.registered.contains(t)) else {
            return Err(format!("entry {} is no appended entry", e.seq));
        };
        if e.ops != tagged_ops(tag.0, tag.1) || !tags.insert(tag) {
            return Err(format!("entry {} recovered in part or twice", e.seq));
        }
        if m.acked.get(&e.seq).is_some_and(|&t| t != tag) {
            return Err(format!("entry {} holds another entry's operations", e.seq));
        }
    }
    let last = applied + got.len() as u64;
    if let Some((&seq, _)) = m.acked.range(last + 1..).next() {
        return Err(format!("acknowledged entry {seq} lost (recovered through {last})"));
    }
    Ok(())
}

/// Two threads commit at once (so drains are shared) and checkpoint when
/// the log is full; crash at every drain, check every image.
#[test]
fn crash_with_concurrent_committers() {
    let region = Arc::new(Region::sim(&vec![0u8; IMAGE], SimConfig::default()));
    let log = Log::create(region.clone(), BASE, LEN).unwrap();
    let model = Arc::new(Mutex::new(SharedModel::default()));
    let failure = Arc::new(Mutex::new(None::<String>));
    {
        let (model, failure) = (model.clone(), failure.clone());
        region.simulator().unwrap().set_hook(move |cp: &CrashPoint| {
            let m = lock(&model).clone();
            let mut f = lock(&failure);
            if f.is_some() {
                return;
            }
            cp.for_each_image(|img, desc| match check_shared(img, &m) {
                Ok(()) => ControlFlow::Continue(()),
                Err(e) => {
                    *f = Some(format!("crash point {} image {desc}: {e}", cp.index));
                    ControlFlow::Break(())
                }
            });
        });
    }
    std::thread::scope(|s| {
        for t in 0..2u8 {
            let (log, model) = (&log, &model);
            s.spawn(move || {
                for i in 0..120u32 {
                    let ops = tagged_ops(t, i);
                    lock(model).registered.insert((t, i));
                    let seq = loop {
                        match log.try_append(&ops) {
                            Ok(seq) => break seq,
                            Err(LogError::Full { .. }) => {
                                let d = log.durable_seq();
                                lock(model).ckpt_pending.insert(d);
                                log.checkpoint(d).unwrap();
                                let mut m = lock(model);
                                m.ckpt_done = m.ckpt_done.max(d);
                                m.ckpt_pending.remove(&d);
                            }
                            Err(e) => panic!("{e}"),
                        }
                    };
                    log.commit(seq).unwrap();
                    lock(model).acked.insert(seq, (t, i));
                }
            });
        }
    });
    region.simulator().unwrap().clear_hook();
    if let Some(e) = lock(&failure).take() {
        panic!("{e}");
    }
    let st = log.stats();
    eprintln!("{st:?}");
    assert_eq!(st.appends, 240);
    assert!(st.bytes > 5 * log.capacity() && st.checkpoints > 5, "{st:?}");
}
