//! The crash explorer: run a workload on the simulator, and at every drain
//! recover every crash image the simulator yields and hold it to the
//! oracle. Some images are recovered on a simulator of their own, so that
//! crashes during recovery are explored too (nested crashes).

use crate::workload::{Kind, Model, Op, generate, observed};
use daxkv::{Backend, PersistOptions, Region, Store};
use daxkv_alloc::sim::{CrashPoint, ImageDesc, SimConfig, Site};
use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// How to explore.
#[derive(Debug, Clone)]
pub struct Config {
    /// Operations per workload.
    pub ops: usize,
    /// Seed of the workload and of the simulator's random images.
    pub seed: u64,
    /// Exhaustive enumeration up to this many combinations per point.
    pub max_exhaustive: u64,
    /// Random images per crash point when not exhaustive.
    pub random_samples: u32,
    /// One image in this many is recovered on a simulator and crashed
    /// again at every drain of its recovery (0: never).
    pub nested_every: u64,
    /// Also run a few operations after recovery and compare (1 in N).
    pub continue_every: u64,
    /// Salvage the image first and compare with what recovery finds (1 in
    /// N; 0: never).
    pub salvage_every: u64,
    /// Persistence sites switched off (mutation testing).
    pub disabled: HashSet<Site>,
    /// At most this many lines get line-by-line images per point (0: all).
    pub max_line_images: usize,
    /// Stop at the first violation.
    pub stop_at_first: bool,
    /// Only check crash point number `only_point`, image `only_image` (replay).
    pub only: Option<(u64, Option<ImageDesc>)>,
}

impl Config {
    /// The quick mode used in the normal test run.
    pub fn quick(seed: u64) -> Config {
        Config {
            ops: 300,
            seed,
            max_exhaustive: 256,
            random_samples: 12,
            nested_every: 256,
            continue_every: 16,
            salvage_every: 4,
            max_line_images: 24,
            disabled: HashSet::new(),
            stop_at_first: false,
            only: None,
        }
    }

    /// The full mode: the simulator's own exhaustive limit (4096), more
    /// operations, more random images, more nested recoveries.
    pub fn full(seed: u64) -> Config {
        Config {
            ops: 1000,
            max_exhaustive: 4096,
            random_samples: 32,
            nested_every: 32,
            continue_every: 8,
            salvage_every: 2,
            max_line_images: 64,
            ..Config::quick(seed)
        }
    }
}

/// A broken promise: what, where, and how to replay it.
#[derive(Debug, Clone)]
pub struct Violation {
    /// Workload.
    pub workload: &'static str,
    /// Its seed.
    pub seed: u64,
    /// Operation in progress.
    pub op: usize,
    /// Crash point number.
    pub point: u64,
    /// The image.
    pub image: String,
    /// What was wrong.
    pub what: String,
}

impl Violation {
    /// The command that replays this violation.
    pub fn replay_command(&self, ops: usize) -> String {
        format!(
            "cargo run --release -p daxkv-tests --bin daxkv-crash -- replay --workload {} --seed {} --ops {} --point {} --image '{}'",
            self.workload, self.seed, ops, self.point, self.image
        )
    }
}

/// What one exploration found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Workload name.
    pub workload: &'static str,
    /// Crash points visited (drains of the workload).
    pub points: u64,
    /// Crash images checked (after removing duplicates).
    pub images: u64,
    /// Images skipped as identical to one already checked.
    pub duplicates: u64,
    /// Crash points inside recovery (nested).
    pub nested_points: u64,
    /// Images checked at nested points.
    pub nested_images: u64,
    /// Distinct recovered states.
    pub states: u64,
    /// Seconds taken.
    pub secs: f64,
    /// Violations found (empty when the store kept every promise).
    pub violations: Vec<Violation>,
    /// Persistence sites the workload ran through, with call and redundant counts.
    pub sites: Vec<(Site, u64, u64)>,
}

#[derive(Clone)]
struct Oracle {
    op: usize,
    desc: String,
    before: Arc<Model>,
    after: Arc<Model>,
    /// The pool is being created: "no pool yet" is an acceptable outcome.
    creating: bool,
    /// The pool is being grown to this size: growing the image again must
    /// finish the job.
    grow: Option<u64>,
}

struct Shared {
    cfg: Config,
    kind: Kind,
    oracle: Oracle,
    seen: HashSet<u64>,
    states: HashSet<u64>,
    report: Report,
    scratch: Arc<Region>,
    counter: u64,
    nested_sites: Vec<(Site, u64, u64)>,
    /// Blocks recovery reached in this op's images, each with the first
    /// point and image that reached it.
    reached: HashMap<u64, (u64, String)>,
}

fn hash(b: &[u8]) -> u64 {
    (crc32c::crc32c(b) as u64) << 32 | crc32c::crc32c_append(0x9e37_79b9, b) as u64
}

fn state_hash(m: &Model) -> u64 {
    let mut h = 0u32;
    for (k, v) in m {
        h = crc32c::crc32c_append(h, k);
        h = crc32c::crc32c_append(h, &(v.len() as u64).to_le_bytes());
        h = crc32c::crc32c_append(h, v);
    }
    h as u64 | (m.len() as u64) << 32
}

fn contents(s: &Store) -> Result<Model, String> {
    let mut m = Model::new();
    let mut it = s.iter();
    while let Some((k, v, at)) = it.next_with_expiry() {
        m.insert(k.to_vec(), observed(v, at));
    }
    Ok(m)
}

/// Recover `region` and hold it to the oracle: the state before or after
/// the op in progress, `check()` clean, and (sometimes) later ops agree.
/// With `salvage`, [`daxkv::salvage`] reads the image first, as recovery
/// will but without writing: it must meet no damage and hand over exactly
/// what recovery then finds. Returns the recovered contents and the
/// blocks recovery reached: the leaves it walked and the records it kept.
fn verify(region: Arc<Region>, o: &Oracle, continue_ops: bool, salvage: bool) -> Result<(Model, Vec<u64>), String> {
    let mut salvaged = Model::new();
    let salvage = salvage.then(|| {
        daxkv::salvage_region(&region, std::path::Path::new("crash image"), |k, v, at| {
            salvaged.insert(k.to_vec(), observed(v, at));
            Ok(())
        })
    });
    // The leaves recovery walks, before it replays and unlinks: it reads
    // each of them, kept or not.
    let walked = daxkv::leaf_chain(&region).unwrap_or_default();
    let s = match Store::open_on(region.clone()) {
        Ok(s) => s,
        // A crash while the pool is created leaves no pool, and says so.
        Err(daxkv::PoolError::NotAPool { .. } | daxkv::PoolError::BadSuperblock { .. }) if o.creating => {
            return Ok((Model::new(), Vec::new()));
        }
        Err(e) => return Err(format!("recovery failed: {e}")),
    };
    let got = contents(&s)?;
    match salvage {
        Some(Ok(rep)) if !rep.is_complete() => return Err(format!("salvage met damage: {:?}", rep.problems)),
        Some(Ok(_)) if salvaged != got => {
            return Err(format!("salvage handed over {} keys, recovery found {}", salvaged.len(), got.len()));
        }
        Some(Err(e)) => return Err(format!("salvage failed where recovery did not: {e}")),
        _ => {}
    }
    if got != *o.before && got != *o.after {
        let (b, a) = (o.before.len(), o.after.len());
        let missing: Vec<_> = o.before.keys().filter(|k| !got.contains_key(*k)).take(3).collect();
        return Err(format!(
            "recovered {} keys, neither the state before ({b}) nor after ({a}) the op; e.g. missing {:?}",
            got.len(),
            missing.iter().map(|k| String::from_utf8_lossy(k)).collect::<Vec<_>>()
        ));
    }
    let rep = s.check().map_err(|e| e.to_string())?;
    if !rep.is_ok() {
        return Err(format!("check: {:?}", &rep.problems[..rep.problems.len().min(3)]));
    }
    let mut blocks = s.reachable_blocks().map_err(|e| e.to_string())?;
    blocks.extend(walked);
    let mut now = got.clone();
    if continue_ops {
        // (During a grow, in whichever layout the image has.)
        let more = [
            Op::Put(b"after-crash-a".to_vec(), vec![1; 300]),
            Op::Delete(now.keys().next().cloned().unwrap_or_else(|| b"x".to_vec())),
            Op::Batch(vec![(b"after-crash-b".to_vec(), Some(vec![2; 40])), (b"after-crash-c".to_vec(), None)]),
        ];
        for op in &more {
            let changed = op.run(&s).map_err(|e| format!("operation after recovery: {e}"))?;
            op.apply(&mut now, changed);
        }
        if contents(&s)? != now {
            return Err("operations after recovery disagree with the model".into());
        }
        let rep = s.check().map_err(|e| e.to_string())?;
        if !rep.is_ok() {
            return Err(format!("check after further operations: {:?}", rep.problems));
        }
    }
    if let Some(size) = o.grow {
        // Growing the image again finishes the grow; growing it once more
        // to the whole region (a larger size than the one interrupted)
        // works on top of that.
        let s = finish_grow(s, region.clone(), size, &now)?;
        if region.len() > size {
            finish_grow(s, region.clone(), region.len(), &now)?;
        }
    }
    Ok((got, blocks))
}

/// A crash image taken during a grow, opened as `s` with contents `got`:
/// growing it to `size` ends at `size` with the same contents.
fn finish_grow(s: Store, region: Arc<Region>, size: u64, got: &Model) -> Result<Store, String> {
    s.close().map_err(|e| format!("close before finishing the grow: {e}"))?;
    Store::grow_on(region.clone(), size).map_err(|e| format!("finishing the grow: {e}"))?;
    let s = Store::open_on(region).map_err(|e| format!("open after finishing the grow: {e}"))?;
    if s.stats().pool_size != size {
        return Err(format!("grown again to {size} bytes, the pool has {}", s.stats().pool_size));
    }
    if contents(&s)? != *got {
        return Err("finishing the grow changed the contents".into());
    }
    let rep = s.check().map_err(|e| e.to_string())?;
    if !rep.is_ok() {
        return Err(format!("check after finishing the grow: {:?}", &rep.problems[..rep.problems.len().min(3)]));
    }
    Ok(s)
}

/// Close `store`, grow its pool to `size` (if given) and open it again.
fn reopen(store: Store, region: &Arc<Region>, grow: Option<u64>) -> Result<Store, String> {
    store.close().map_err(|e| format!("close: {e}"))?;
    if let Some(size) = grow {
        Store::grow_on(region.clone(), size).map_err(|e| format!("grow: {e}"))?;
    }
    Store::open_on(region.clone()).map_err(|e| format!("open after the close: {e}"))
}

fn oracle_grow(op: &Op) -> Option<u64> {
    if let Op::Grow(size) = op { Some(*size) } else { None }
}

fn guarded<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => Err(format!(
            "panic: {}",
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        )),
    }
}

fn on_point(sh: &Arc<Mutex<Shared>>, cp: &CrashPoint<'_>) {
    let mut g = sh.lock().expect("explorer state");
    if g.cfg.stop_at_first && !g.report.violations.is_empty() {
        return;
    }
    g.report.points += 1;
    let point = cp.index;
    if let Some((p, _)) = &g.cfg.only
        && *p != point
    {
        return;
    }
    let only_img = g.cfg.only.as_ref().and_then(|(_, d)| *d);
    cp.for_each_image(|img, desc| {
        if let Some(d) = &only_img
            && d != desc
        {
            return ControlFlow::Continue(());
        }
        if g.cfg.only.is_none() && !g.seen.insert(hash(img)) {
            g.report.duplicates += 1;
            return ControlFlow::Continue(());
        }
        g.report.images += 1;
        g.counter += 1;
        let n = g.counter;
        let nested = g.cfg.nested_every > 0 && n.is_multiple_of(g.cfg.nested_every);
        let cont = g.cfg.continue_every > 0 && n.is_multiple_of(g.cfg.continue_every);
        let salvage = g.cfg.salvage_every > 0 && n.is_multiple_of(g.cfg.salvage_every);
        let res = if nested {
            nested_check(&mut g, img)
        } else {
            let scratch = g.scratch.clone();
            scratch.write(0, img);
            guarded(|| verify(scratch, &g.oracle, cont, salvage))
        };
        match res {
            Ok((m, blocks)) => {
                let h = state_hash(&m);
                g.states.insert(h);
                for b in blocks {
                    g.reached.entry(b).or_insert_with(|| (point, desc.to_string()));
                }
            }
            Err(what) => {
                let v = Violation {
                    workload: g.kind.name(),
                    seed: g.cfg.seed,
                    op: g.oracle.op,
                    point,
                    image: desc.to_string(),
                    what: format!("during {}: {what}", g.oracle.desc),
                };
                g.report.violations.push(v);
                if g.cfg.stop_at_first {
                    return ControlFlow::Break(());
                }
            }
        }
        ControlFlow::Continue(())
    });
}

/// Recover `img` on a simulator; at every drain of that recovery, recover
/// each (sampled) image again on plain memory: a crash during recovery must
/// be survivable too.
fn nested_check(g: &mut Shared, img: &[u8]) -> Result<(Model, Vec<u64>), String> {
    let cfg = SimConfig {
        disabled: g.cfg.disabled.clone(),
        max_exhaustive: 8,
        random_samples: 2,
        seed: g.cfg.seed ^ 0xabcd,
        max_line_images: 8,
    };
    let region = Arc::new(Region::sim(img, cfg));
    let inner: Arc<Mutex<(u64, u64, Vec<String>)>> = Arc::new(Mutex::new((0, 0, Vec::new())));
    let oracle = g.oracle.clone();
    let scratch = g.scratch.clone();
    {
        let inner = inner.clone();
        let o2 = oracle.clone();
        region.simulator().expect("sim").set_hook(move |cp| {
            let mut st = inner.lock().expect("nested");
            st.0 += 1;
            cp.for_each_image(|img2, d| {
                st.1 += 1;
                scratch.write(0, img2);
                if let Err(e) = guarded(|| verify(scratch.clone(), &o2, false, false)) {
                    st.2.push(format!("crash during recovery (its point {}, image {d}): {e}", cp.index));
                }
                ControlFlow::Continue(())
            });
        });
    }
    let res = guarded(|| verify(region.clone(), &oracle, false, false));
    region.simulator().expect("sim").clear_hook();
    for (site, c) in region.simulator().expect("sim").sites() {
        g.nested_sites.push((site, c.calls, c.redundant));
    }
    let st = inner.lock().expect("nested");
    g.report.nested_points += st.0;
    g.report.nested_images += st.1;
    if let Some(e) = st.2.first() {
        return Err(e.clone());
    }
    res
}

/// Explore one workload.
pub fn explore(kind: Kind, cfg: &Config) -> Report {
    let start = Instant::now();
    let ops = generate(kind, cfg.seed, cfg.ops);
    let (pool, log) = kind.geometry();
    let simcfg = SimConfig {
        disabled: cfg.disabled.clone(),
        max_exhaustive: cfg.max_exhaustive,
        random_samples: cfg.random_samples,
        seed: cfg.seed,
        max_line_images: cfg.max_line_images,
    };
    let region = Arc::new(Region::sim(&vec![0u8; pool], simcfg));
    let scratch = Arc::new(
        Region::anonymous(pool, &PersistOptions::default().with_backend(Backend::Volatile)).expect("scratch memory"),
    );
    let empty = Arc::new(Model::new());
    let sh = Arc::new(Mutex::new(Shared {
        cfg: cfg.clone(),
        kind,
        oracle: Oracle {
            op: 0,
            desc: "create".into(),
            before: empty.clone(),
            after: empty.clone(),
            creating: true,
            grow: None,
        },
        seen: HashSet::new(),
        states: HashSet::new(),
        report: Report { workload: kind.name(), ..Report::default() },
        scratch,
        counter: 0,
        nested_sites: Vec::new(),
        reached: HashMap::new(),
    }));
    {
        let sh = sh.clone();
        region.simulator().expect("sim").set_hook(move |cp| on_point(&sh, cp));
    }
    // Crashes while the pool is created are explored too.
    let mut store = match Store::create_on_sized(region.clone(), kind.start_size(), log) {
        Ok(s) => s,
        Err(e) => {
            let mut g = sh.lock().expect("explorer state");
            g.report.violations.push(Violation {
                workload: kind.name(),
                seed: cfg.seed,
                op: 0,
                point: 0,
                image: String::new(),
                what: format!("create failed: {e}"),
            });
            return g.report.clone();
        }
    };
    sh.lock().expect("explorer state").oracle =
        Oracle { op: 0, desc: "created".into(), before: empty.clone(), after: empty, creating: false, grow: None };
    let mut model = Model::new();
    for (i, op) in ops.iter().enumerate() {
        let mut after = model.clone();
        // Where an op may be refused (CAS mismatch, full pool) it leaves the
        // state before it, which the oracle accepts anyway.
        op.apply(&mut after, true);
        {
            let mut g = sh.lock().expect("explorer state");
            g.oracle = Oracle {
                op: i,
                desc: op.describe(),
                before: Arc::new(model.clone()),
                after: Arc::new(after.clone()),
                creating: false,
                grow: oracle_grow(op),
            };
        }
        let failed = |what: String| {
            let mut g = sh.lock().expect("explorer state");
            g.report.violations.push(Violation {
                workload: kind.name(),
                seed: cfg.seed,
                op: i,
                point: 0,
                image: String::new(),
                what,
            });
            g.report.clone()
        };
        // What the heap holds in use before the op: with what it holds
        // after, every block an image of the op may reach. A block in
        // neither was freed or retired (and not handed out again) across
        // the whole op, so no image may reach it: its unlinking was durable
        // before it was let go. (Reuse by another thread can come before
        // any drain of this one, which the single-threaded simulator cannot
        // show by contents alone.)
        let in_use_before = store.blocks_in_use().unwrap_or_default();
        sh.lock().expect("explorer state").reached.clear();
        let changed = match op {
            // The store is gone if this failed: stop here.
            Op::Grow(_) | Op::Reopen => match reopen(store, &region, oracle_grow(op)) {
                Ok(s) => {
                    store = s;
                    true
                }
                Err(what) => return failed(what),
            },
            op => match op.run(&store) {
                Ok(c) => c,
                Err(e) => {
                    failed(format!("{} failed: {e}", op.describe()));
                    break;
                }
            },
        };
        op.apply(&mut model, changed);
        let in_use_after = store.blocks_in_use().unwrap_or_default();
        let mut g = sh.lock().expect("explorer state");
        let mut let_go: Vec<(&u64, &(u64, String))> = g
            .reached
            .iter()
            .filter(|(b, _)| in_use_before.binary_search(b).is_err() && in_use_after.binary_search(b).is_err())
            .collect();
        let_go.sort();
        if let Some(&(&b, (point, image))) = let_go.first() {
            let v = Violation {
                workload: kind.name(),
                seed: cfg.seed,
                op: i,
                point: *point,
                image: image.clone(),
                what: format!(
                    "during {}: recovery reaches block {b} (and {} more), which the live heap held free \
                     or retired before and after the op",
                    op.describe(),
                    let_go.len() - 1
                ),
            };
            g.report.violations.push(v);
        }
        let m = Arc::new(model.clone());
        g.oracle = Oracle {
            op: i,
            desc: format!("after {}", op.describe()),
            before: m.clone(),
            after: m,
            creating: false,
            grow: None,
        };
        if g.cfg.stop_at_first && !g.report.violations.is_empty() {
            break;
        }
    }
    region.simulator().expect("sim").clear_hook();
    let live = contents(&store).unwrap_or_default();
    let mut g = sh.lock().expect("explorer state");
    if live != model {
        let v = Violation {
            workload: kind.name(),
            seed: cfg.seed,
            op: ops.len(),
            point: 0,
            image: "live".into(),
            what: "the live store disagrees with the model".into(),
        };
        g.report.violations.push(v);
    }
    g.report.sites =
        region.simulator().expect("sim").sites().into_iter().map(|(s, c)| (s, c.calls, c.redundant)).collect();
    g.report.states = g.states.len() as u64;
    g.report.secs = start.elapsed().as_secs_f64();
    drop(store);
    g.report.clone()
}
