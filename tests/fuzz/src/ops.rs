//! Store operations chosen by the fuzzer, checked against a model.

use daxkv::{Backend, Error, MAX_KEY, MAX_VALUE, Options, Persistence, Store};
use daxkv_tests::ShmDir;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::OnceLock;

/// An expiry ahead of any test run (2100-01-01), and one long past.
const LATER: u64 = 4_102_444_800_000;
const PAST: u64 = 1_000;

/// What the store should hold: each key's value and expiry. Expired keys
/// stay (the store counts them in `len` until a write or a purge removes
/// them) but are absent to every read.
type Model = BTreeMap<Vec<u8>, (Vec<u8>, Option<u64>)>;

fn live(e: &(Vec<u8>, Option<u64>)) -> bool {
    e.1 != Some(PAST)
}

fn read<'m>(m: &'m Model, k: &[u8]) -> Option<&'m [u8]> {
    m.get(k).filter(|e| live(e)).map(|e| e.0.as_slice())
}

/// The fuzzer's bytes, taken from the front; zeros once they run out.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        let (&b, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        b
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
}

/// The state of one input's run.
struct Run<'a> {
    b: Bytes<'a>,
    keys: Vec<Vec<u8>>,
    /// Values made so far.
    n: u32,
}

impl Run<'_> {
    /// A key: short, behind a long shared prefix, of a chosen length (up
    /// to one byte over the limit, and empty), or one used before.
    fn key(&mut self) -> Vec<u8> {
        let h = self.b.u8();
        let k = match h % 4 {
            0 => vec![b'k', self.b.u8(), self.b.u8()],
            1 => {
                let mut k = vec![b'p'; 40];
                k.extend([self.b.u8(), self.b.u8()]);
                k
            }
            2 => vec![h; usize::from(self.b.u16()) % (MAX_KEY + 2)],
            _ if !self.keys.is_empty() => return self.keys[usize::from(self.b.u16()) % self.keys.len()].clone(),
            _ => vec![b'k'],
        };
        self.keys.push(k.clone());
        k
    }

    /// A value: small, of pages, or at and past the limits.
    fn value(&mut self) -> Vec<u8> {
        let v = self.b.u8();
        let len = match v >> 6 {
            0 => usize::from(v & 63),
            1 => usize::from(v & 63) * 64,
            2 => usize::from(v & 63) * 4096,
            _ => [0, 1 << 20, MAX_VALUE + 1][usize::from(v & 63) % 3],
        };
        // Its number at both ends, the rest filled by memset (a loop over
        // 64 MiB under the fuzzer's instrumentation takes seconds); one
        // past the limit is left as fresh zero pages, never touched.
        self.n += 1;
        let fill = if len > MAX_VALUE { 0 } else { self.n as u8 };
        let mut v = vec![fill; len];
        let tag = self.n.to_le_bytes();
        let k = len.min(4);
        v[..k].copy_from_slice(&tag[..k]);
        v[len - k..].copy_from_slice(&tag[..k]);
        v
    }

    fn expiry(&mut self) -> Option<u64> {
        [None, Some(LATER), Some(PAST)][usize::from(self.b.u8() % 3)]
    }
}

/// Whether a write of `k` (and `v`) is refused whatever the store holds,
/// and then with which error.
fn invalid(k: &[u8], v: Option<&[u8]>) -> Option<&'static str> {
    if k.is_empty() {
        Some("EmptyKey")
    } else if k.len() > MAX_KEY {
        Some("KeyTooLarge")
    } else if v.is_some_and(|v| v.len() > MAX_VALUE) {
        Some("ValueTooLarge")
    } else {
        None
    }
}

fn name(e: &Error) -> &'static str {
    match e {
        Error::EmptyKey => "EmptyKey",
        Error::KeyTooLarge { .. } => "KeyTooLarge",
        Error::ValueTooLarge { .. } => "ValueTooLarge",
        Error::PoolFull(_) => "PoolFull",
        _ => "other",
    }
}

/// A write's outcome: `true` if it was applied. It must fail exactly when
/// its arguments are invalid, with that error, or else succeed or find
/// the pool full (and then leave everything as it was).
fn wrote<T: std::fmt::Debug>(r: &Result<T, Error>, bad: Option<&'static str>, what: &str) -> bool {
    match (r, bad) {
        (Ok(_), None) => true,
        (Err(e), Some(b)) if name(e) == b => false,
        (Err(Error::PoolFull(_)), None) => false,
        _ => panic!("{what}: {r:?}, expected {}", bad.unwrap_or("success")),
    }
}

/// Reads of a key a write would refuse find nothing (or say why).
fn check_read<T>(r: Result<Option<T>, Error>, want: Option<&[u8]>, got: impl Fn(&T) -> &[u8], k: &[u8]) {
    match (r, invalid(k, None)) {
        (Ok(g), _) => assert_eq!(g.as_ref().map(got), want, "read of {:?}", short(k)),
        (Err(e), Some(b)) if name(&e) == b => {}
        (Err(e), _) => panic!("read of {:?}: {e}", short(k)),
    }
}

fn short(k: &[u8]) -> String {
    let s = String::from_utf8_lossy(&k[..k.len().min(48)]).into_owned();
    if k.len() > 48 { format!("{s}... ({} bytes)", k.len()) } else { s }
}

/// Compare a scan's pairs with the model's, up to `n`.
fn same_scan<'a>(
    what: &str,
    got: impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), Error>>,
    want: impl Iterator<Item = (&'a Vec<u8>, &'a (Vec<u8>, Option<u64>))>,
    n: usize,
) {
    let got: Vec<(Vec<u8>, Vec<u8>)> = got.take(n).map(|r| r.expect("scan")).collect();
    let want: Vec<(Vec<u8>, Vec<u8>)> =
        want.filter(|(_, e)| live(e)).take(n).map(|(k, e)| (k.clone(), e.0.clone())).collect();
    assert!(got == want, "{what}: {} pairs from the store, {} from the model", got.len(), want.len());
}

fn options() -> Options {
    Options::new()
        .pool_size(8 << 20)
        .log_size(256 << 10)
        .persistence(Persistence::Force(Backend::Volatile))
        .create_if_missing(true)
}

/// Run the store operations the bytes describe (puts, deletes, reads,
/// compare-and-swap, scans both ways and by prefix, transactions that
/// commit or abort, batches, expiries, purges, fills that split leaves,
/// a close and reopen) on a fresh pool, against a model: every answer
/// must be the model's, a refused write must be refused for its
/// arguments or a full pool and change nothing, and at the end `check()`
/// passes and the store holds exactly the model.
pub fn ops(data: &[u8]) {
    static DIR: OnceLock<ShmDir> = OnceLock::new();
    let path = DIR.get_or_init(|| ShmDir::new("fuzz-ops")).0.join("ops.pool");
    let _ = std::fs::remove_file(&path);
    let mut s = Store::open(&path, &options()).expect("create the pool");
    let mut m = Model::new();
    let mut run = Run { b: Bytes(data), keys: Vec::new(), n: 0 };
    for _ in 0..64 {
        if run.b.0.is_empty() {
            break;
        }
        match run.b.u8() % 14 {
            0 => {
                let (k, v) = (run.key(), run.value());
                if wrote(&s.put(&k, &v), invalid(&k, Some(&v)), "put") {
                    m.insert(k, (v, None));
                }
            }
            1 => {
                let k = run.key();
                let r = s.delete(&k);
                if wrote(&r, invalid(&k, None), "delete") {
                    let was = m.remove(&k).is_some_and(|e| live(&e));
                    assert_eq!(r.ok(), Some(was), "delete of {:?}", short(&k));
                }
            }
            2 => {
                let k = run.key();
                check_read(s.get(&k), read(&m, &k), |v: &Vec<u8>| v.as_slice(), &k);
                check_read(s.get_ref(&k), read(&m, &k), |v| &**v, &k);
            }
            3 => {
                let k = run.key();
                let expected = if run.b.u8() & 1 == 0 { read(&m, &k).map(<[u8]>::to_vec) } else { Some(run.value()) };
                let new = if run.b.u8() & 1 == 0 { Some(run.value()) } else { None };
                let r = s.compare_and_swap(&k, expected.as_deref(), new.as_deref());
                if wrote(&r, invalid(&k, new.as_deref()), "compare_and_swap") {
                    let cur = read(&m, &k).map(<[u8]>::to_vec);
                    if cur == expected {
                        assert!(matches!(r, Ok(Ok(()))), "compare_and_swap of {:?} should match: {r:?}", short(&k));
                        match new {
                            Some(v) => m.insert(k, (v, None)),
                            None => m.remove(&k),
                        };
                    } else {
                        assert_eq!(r.ok(), Some(Err(cur)), "compare_and_swap of {:?} should not match", short(&k));
                    }
                }
            }
            4 => {
                let (k, n) = (run.key(), usize::from(run.b.u8()));
                same_scan("range", s.range(k.as_slice()..), m.range(k.clone()..), n);
            }
            5 => {
                let (k, n) = (run.key(), usize::from(run.b.u8()));
                same_scan("range_rev", s.range_rev(..=k.as_slice()), m.range(..=k.clone()).rev(), n);
            }
            6 => {
                let k = run.key();
                let p = &k[..k.len().min(usize::from(run.b.u8() % 4))];
                let want =
                    m.range::<[u8], _>((Bound::Included(p), Bound::Unbounded)).take_while(|(x, _)| x.starts_with(p));
                same_scan("prefix", s.prefix(p), want, 300);
                let back = s.prefix_rev(p).take(300).count();
                assert_eq!(back, m.iter().filter(|(x, e)| x.starts_with(p) && live(e)).take(300).count(), "prefix_rev");
            }
            7 => transaction(&mut run, &s, &mut m),
            8 => {
                let (k, v, at) = (run.key(), run.value(), run.expiry());
                if wrote(&s.put_with_expiry(&k, &v, at), invalid(&k, Some(&v)), "put_with_expiry") {
                    m.insert(k, (v, at));
                }
            }
            9 => {
                let mut ops = Vec::new();
                for _ in 0..=run.b.u8() % 4 {
                    let k = run.key();
                    let v = if run.b.u8() & 1 == 0 { Some(run.value()) } else { None };
                    ops.push((k, v, run.expiry()));
                }
                let refs: Vec<_> = ops.iter().map(|(k, v, at)| (k.as_slice(), v.as_deref(), *at)).collect();
                let bad = ops.iter().find_map(|(k, v, _)| invalid(k, v.as_deref()));
                if wrote(&s.write_batch_with_expiry(&refs), bad, "write_batch_with_expiry") {
                    for (k, v, at) in ops {
                        match v {
                            Some(v) => m.insert(k, (v, at)),
                            None => m.remove(&k),
                        };
                    }
                }
            }
            10 => {
                // Sequential keys, enough to split leaves.
                let base = run.b.u16();
                for i in 0..u32::from(run.b.u8()) {
                    let k = format!("f{:06}", u32::from(base) + i).into_bytes();
                    let v = run.value();
                    if wrote(&s.put(&k, &v), invalid(&k, Some(&v)), "fill") {
                        m.insert(k, (v, None));
                    }
                }
            }
            11 => {
                s.close().expect("close");
                s = Store::open(&path, &options()).expect("reopen");
            }
            12 => {
                let (k, at) = (run.key(), run.expiry());
                let r = s.set_expiry(&k, at);
                if wrote(&r, invalid(&k, None), "set_expiry") {
                    let found = m.get_mut(&k).filter(|e| live(e));
                    assert_eq!(r.ok(), Some(found.is_some()), "set_expiry of {:?}", short(&k));
                    if let Some(e) = found {
                        e.1 = at;
                    }
                }
            }
            _ => {
                let (k, max) = (run.key(), usize::from(run.b.u8()));
                let p = s.purge_expired(&k, max).expect("purge");
                let mut removed = 0;
                // It looks at one key at least.
                let gone: Vec<Vec<u8>> =
                    m.range(k.clone()..).take(max.max(1)).filter(|(_, e)| !live(e)).map(|(k, _)| k.clone()).collect();
                for g in gone {
                    m.remove(&g);
                    removed += 1;
                }
                assert_eq!(p.removed, removed, "purge from {:?}", short(&k));
            }
        }
        assert_eq!(s.len(), m.len() as u64, "len");
    }
    let report = s.check().expect("check");
    assert!(report.is_ok(), "check: {:?}", report.problems);
    same_scan("everything", s.iter(), m.iter(), usize::MAX);
    s.close().expect("close");
}

/// Up to four reads and writes in one transaction, checked against a copy
/// of the model that becomes the model if it commits; it aborts instead
/// when the bytes say so.
fn transaction(run: &mut Run<'_>, s: &Store, m: &mut Model) {
    enum Step {
        Put(Vec<u8>, Vec<u8>),
        Delete(Vec<u8>),
        Get(Vec<u8>),
    }
    let steps: Vec<Step> = (0..=run.b.u8() % 4)
        .map(|_| match run.b.u8() % 3 {
            0 => Step::Put(run.key(), run.value()),
            1 => Step::Delete(run.key()),
            _ => Step::Get(run.key()),
        })
        .collect();
    let abort = run.b.u8().is_multiple_of(4);
    let mut after = m.clone();
    let r = s.transaction(|tx| {
        after = m.clone();
        for step in &steps {
            match step {
                Step::Put(k, v) => {
                    tx.put(k, v)?;
                    after.insert(k.clone(), (v.clone(), None));
                }
                Step::Delete(k) => {
                    let was = tx.delete(k)?;
                    assert_eq!(was, after.remove(k).is_some_and(|e| live(&e)), "tx delete of {:?}", short(k));
                }
                Step::Get(k) => assert_eq!(tx.get(k)?.as_deref(), read(&after, k), "tx get of {:?}", short(k)),
            }
        }
        if abort { Err(Error::EmptyKey) } else { Ok(()) }
    });
    let bad = steps.iter().find_map(|st| match st {
        Step::Put(k, v) => invalid(k, Some(v)),
        Step::Delete(k) | Step::Get(k) => invalid(k, None),
    });
    let bad = bad.or(abort.then_some("EmptyKey"));
    if wrote(&r, bad, "transaction") {
        *m = after;
    }
}
