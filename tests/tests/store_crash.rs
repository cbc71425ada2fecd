//! The store under the crash simulator (the quick version; the full suite
//! is `daxkv-tests`' crash explorer): a 2,000-operation workload of puts,
//! deletes, transactions and batches that splits leaves; at every drain,
//! every crash image must recover to the state before or after the
//! operation in progress (transactions all or nothing), with every
//! acknowledged operation present and `check()` clean.

use daxkv::{Backend, PersistOptions, Region, Store};
use daxkv_alloc::sim::SimConfig;
use rand::{Rng, SeedableRng, rngs::StdRng};
use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};

const POOL: usize = 2 << 20;
const LOG: u64 = 128 << 10;
/// Exhaustive enumeration up to this many combinations per crash point
/// (the full suite uses the simulator's default, 4096); above it, the
/// all/none, each-line, all-but-line and seeded random images.
const MAX_EXHAUSTIVE: u64 = 256;

type Model = BTreeMap<Vec<u8>, Vec<u8>>;
type Op = Box<dyn FnOnce(&Store)>;

#[derive(Clone, Default)]
struct Oracle {
    op: u64,
    desc: String,
    before: Arc<Model>,
    after: Arc<Model>,
}

#[derive(Default)]
struct Tally {
    points: u64,
    images: u64,
}

fn contents(s: &Store) -> Model {
    s.iter().map(|kv| kv.unwrap()).collect()
}

fn check_image(scratch: &Arc<Region>, img: &[u8], o: &Oracle, point: u64, desc: &str) {
    scratch.write(0, img);
    let s = Store::open_on(scratch.clone())
        .unwrap_or_else(|e| panic!("op {} ({}), crash point {point}, image {desc}: open failed: {e}", o.op, o.desc));
    let got = contents(&s);
    assert!(
        got == *o.before || got == *o.after,
        "op {} ({}), crash point {point}, image {desc}: recovered {} keys, neither the state before ({}) nor after ({})",
        o.op,
        o.desc,
        got.len(),
        o.before.len(),
        o.after.len()
    );
    let rep = s.check().unwrap();
    assert!(rep.is_ok(), "op {} ({}), crash point {point}, image {desc}: check: {:?}", o.op, o.desc, rep.problems);
    assert_eq!(s.len(), got.len() as u64);
}

fn key(rng: &mut StdRng) -> Vec<u8> {
    format!("k{:04}", rng.gen_range(0..600)).into_bytes()
}

fn value(rng: &mut StdRng) -> Vec<u8> {
    let len = if rng.gen_range(0..20) == 0 { rng.gen_range(1000..5000) } else { rng.gen_range(0..300) };
    let b: u8 = rng.r#gen();
    vec![b; len]
}

#[test]
fn crash_at_every_drain_of_2000_operations() {
    let cfg = SimConfig { max_exhaustive: MAX_EXHAUSTIVE, ..SimConfig::default() };
    let region = Arc::new(Region::sim(&vec![0u8; POOL], cfg));
    let store = Store::create_on(region.clone(), LOG).unwrap();
    let oracle = Arc::new(Mutex::new(Oracle::default()));
    let tally = Arc::new(Mutex::new(Tally::default()));
    {
        let (oracle, tally) = (oracle.clone(), tally.clone());
        let scratch =
            Arc::new(Region::anonymous(POOL, &PersistOptions::default().with_backend(Backend::Volatile)).unwrap());
        region.simulator().unwrap().set_hook(move |cp| {
            let o = oracle.lock().unwrap().clone();
            let n = cp.for_each_image(|img, d| {
                check_image(&scratch, img, &o, cp.index, &d.to_string());
                ControlFlow::Continue(())
            });
            let mut t = tally.lock().unwrap();
            t.points += 1;
            t.images += n;
        });
    }
    let mut rng = StdRng::seed_from_u64(5);
    let mut model = Model::new();
    let mut peak_leaves = 0;
    for op in 0..2000u64 {
        let mut after = model.clone();
        // The last quarter mostly deletes: leaves empty out and merge.
        let shrink = op >= 1500;
        let r =
            if shrink { [0, 50, 50, 50, 50, 50, 50, 75, 90, 99][rng.gen_range(0..10)] } else { rng.gen_range(0..100) };
        let (desc, run): (String, Op) = if r < 50 {
            let (k, v) = (key(&mut rng), value(&mut rng));
            after.insert(k.clone(), v.clone());
            (format!("put {}", String::from_utf8_lossy(&k)), Box::new(move |s| s.put(&k, &v).unwrap()))
        } else if r < 70 {
            let k = key(&mut rng);
            after.remove(&k);
            (
                format!("delete {}", String::from_utf8_lossy(&k)),
                Box::new(move |s| {
                    let _ = s.delete(&k).unwrap();
                }),
            )
        } else {
            // Mostly small; now and then more keys than a leaf holds.
            let n = if rng.gen_range(0..40) == 0 { rng.gen_range(70..130) } else { rng.gen_range(2..8) };
            let ops: Vec<(Vec<u8>, Option<Vec<u8>>)> = (0..n)
                .map(|_| {
                    (
                        key(&mut rng),
                        if rng.gen_bool(if shrink { 0.1 } else { 0.8 }) { Some(value(&mut rng)) } else { None },
                    )
                })
                .collect();
            for (k, v) in &ops {
                match v {
                    Some(v) => after.insert(k.clone(), v.clone()),
                    None => after.remove(k),
                };
            }
            if r < 85 {
                (
                    "transaction".into(),
                    Box::new(move |s| {
                        s.transaction(|tx| {
                            for (k, v) in &ops {
                                match v {
                                    Some(v) => tx.put(k, v)?,
                                    None => drop(tx.delete(k)?),
                                }
                            }
                            Ok(())
                        })
                        .unwrap()
                    }),
                )
            } else {
                ("batch".into(), Box::new(move |s| s.write_batch(&ops).unwrap()))
            }
        };
        *oracle.lock().unwrap() =
            Oracle { op, desc: desc.clone(), before: Arc::new(model.clone()), after: Arc::new(after.clone()) };
        run(&store);
        model = after;
        // Acknowledged: only the new state is acceptable from here.
        let m = Arc::new(model.clone());
        *oracle.lock().unwrap() = Oracle { op, desc, before: m.clone(), after: m };
        peak_leaves = peak_leaves.max(store.stats().leaves);
    }
    assert_eq!(contents(&store), model);
    let t = tally.lock().unwrap();
    eprintln!(
        "store crash test: {} crash points, {} images; leaves: peak {peak_leaves}, now {}, {} merged away",
        t.points,
        t.images,
        store.stats().leaves,
        store.stats().merges
    );
    assert!(t.points >= 4000, "crash points: {}", t.points);
    assert!(t.images >= 50_000, "images: {}", t.images);
    let st = store.stats();
    assert!(peak_leaves >= 10, "the workload must split leaves (peak {peak_leaves})");
    assert!(st.merges >= 5, "the workload must merge leaves: {} merges", st.merges);
    assert!(st.leaves < peak_leaves / 2, "leaves {} of a peak of {peak_leaves}", st.leaves);
}
