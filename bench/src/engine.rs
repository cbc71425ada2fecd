//! The engines `daxkv-bench compare` measures, behind one trait: daxkv
//! (any backend) and the peers a user would pick instead on the same
//! memory, LMDB (through heed, which builds LMDB from source) and redb,
//! each configured so that a write is durable when it returns.

use daxkv::{Options, Persistence, Store};
use std::ops::Bound;
use std::path::{Path, PathBuf};

/// One key-value engine under test. Every method panics on an engine
/// error: a benchmark that fails must not print a figure.
pub trait Engine: Send + Sync {
    /// Engine name: `daxkv`, `lmdb`, `redb`.
    fn name(&self) -> &'static str;
    /// Backend or durability mode, short (e.g. `pmem`, `sync`, `immediate`).
    fn backend(&self) -> String;
    /// How it is configured and what one acknowledged write costs, in words.
    fn durability(&self) -> String;
    /// Store `value` under `key`, durable when this returns (one
    /// transaction per call for the peers).
    fn put(&self, key: &[u8], value: &[u8]);
    /// Copy the value of `key` into `out`; false if absent.
    fn get(&self, key: &[u8], out: &mut Vec<u8>) -> bool;
    /// Visit up to `n` pairs from `start` on in key order; returns how many
    /// and adds their byte counts to `bytes`.
    fn scan(&self, start: &[u8], n: usize, bytes: &mut u64) -> usize;
    /// Store many pairs in as few durable commits as the engine allows
    /// (loading, not measured against single puts).
    fn put_batch(&self, pairs: &[(Vec<u8>, Vec<u8>)]);
    /// Remove the files (called after the engine is dropped).
    fn files(&self) -> PathBuf;
}

/// Which engine, as chosen on the command line.
#[derive(Clone, Debug, PartialEq)]
pub enum Spec {
    /// daxkv with one backend.
    Daxkv(String),
    /// LMDB, durable commits.
    Lmdb,
    /// redb, default durability (`Durability::Immediate`).
    Redb,
}

impl Spec {
    /// Name as used in rows and legends.
    pub fn label(&self) -> String {
        match self {
            Spec::Daxkv(b) => format!("daxkv-{b}"),
            Spec::Lmdb => "lmdb".into(),
            Spec::Redb => "redb".into(),
        }
    }

    /// Expand `--engine` values (daxkv, lmdb, redb, all) and the daxkv
    /// backends into a list of engines.
    pub fn expand(engines: &[String], backends: &[String]) -> Result<Vec<Spec>, String> {
        let mut out = Vec::new();
        for e in engines {
            let add: Vec<Spec> = match e.as_str() {
                "daxkv" => backends.iter().map(|b| Spec::Daxkv(b.clone())).collect(),
                "lmdb" => vec![Spec::Lmdb],
                "redb" => vec![Spec::Redb],
                "all" => backends.iter().map(|b| Spec::Daxkv(b.clone())).chain([Spec::Lmdb, Spec::Redb]).collect(),
                other => return Err(format!("unknown engine {other:?} (daxkv, lmdb, redb, all)")),
            };
            for s in add {
                if !out.contains(&s) {
                    out.push(s);
                }
            }
        }
        for b in backends {
            b.parse::<Persistence>().map_err(|e| format!("--backend {b}: {e}"))?;
        }
        Ok(out)
    }

    /// Create a fresh, empty instance under `dir` sized for `keys` pairs of
    /// `pair_bytes` (plus room for YCSB inserts).
    pub fn create(&self, dir: &Path, tag: &str, keys: u64, pair_bytes: u64) -> Box<dyn Engine> {
        let base = dir.join(format!("daxkv-bench-{}-{}-{tag}", std::process::id(), self.label()));
        remove(&base);
        match self {
            Spec::Daxkv(b) => {
                let p: Persistence = b.parse().expect("checked in expand");
                let pool_size = (keys * (pair_bytes + 64) * 4 + (512 << 20)).next_multiple_of(1 << 20);
                let opts = Options::new().pool_size(pool_size).persistence(p).create_if_missing(true);
                let store = Store::open(&base, &opts).unwrap_or_else(|e| panic!("daxkv pool {}: {e}", base.display()));
                let backend = store.persist_info().backend.name().to_string();
                let info = store.persist_info().to_string();
                Box::new(Daxkv { store, path: base, backend, info })
            }
            Spec::Lmdb => {
                std::fs::create_dir_all(&base).expect("lmdb dir");
                let map = (keys * (pair_bytes + 64) * 8 + (1 << 30)).next_multiple_of(1 << 20);
                let mut o = heed::EnvOpenOptions::new();
                o.map_size(map as usize).max_readers(256);
                #[allow(unsafe_code)]
                // SAFETY: a fresh directory that only this process opens, and
                // only once; no unsafe flags (NO_SYNC, NO_LOCK, ...) are set.
                let env = unsafe { o.open(&base) }.expect("lmdb env");
                let mut w = env.write_txn().expect("lmdb txn");
                let db: heed::Database<heed::types::Bytes, heed::types::Bytes> =
                    env.create_database(&mut w, None).expect("lmdb db");
                w.commit().expect("lmdb commit");
                Box::new(Lmdb { env, db, dir: base })
            }
            Spec::Redb => {
                std::fs::create_dir_all(&base).expect("redb dir");
                let file = base.join("bench.redb");
                let db = redb::Database::create(&file).expect("redb create");
                let w = db.begin_write().expect("redb txn");
                w.open_table(TABLE).expect("redb table");
                w.commit().expect("redb commit");
                Box::new(Redb { db, dir: base })
            }
        }
    }
}

/// Remove a pool file or an engine directory.
pub fn remove(p: &Path) {
    if p.is_dir() {
        let _ = std::fs::remove_dir_all(p);
    } else {
        let _ = std::fs::remove_file(p);
    }
}

struct Daxkv {
    store: Store,
    path: PathBuf,
    backend: String,
    info: String,
}

impl Engine for Daxkv {
    fn name(&self) -> &'static str {
        "daxkv"
    }
    fn backend(&self) -> String {
        self.backend.clone()
    }
    fn durability(&self) -> String {
        let what = match self.backend.as_str() {
            "pmem" => {
                "every put flushed (clwb/NT stores) and fenced before it returns; forced on tmpfs, so the real flush instructions run on DRAM"
            }
            "eadr" => "every put fenced before it returns (caches in the persistence domain)",
            "msync" => "every put msync'ed before it returns",
            _ => "volatile: nothing survives power loss (upper bound, not a durable figure)",
        };
        format!("daxkv {}: {what}; {}", env!("CARGO_PKG_VERSION"), self.info)
    }
    fn put(&self, key: &[u8], value: &[u8]) {
        self.store.put(key, value).expect("daxkv put");
    }
    fn get(&self, key: &[u8], out: &mut Vec<u8>) -> bool {
        match self.store.get_ref(key).expect("daxkv get") {
            Some(v) => {
                out.clear();
                out.extend_from_slice(&v);
                true
            }
            None => false,
        }
    }
    fn scan(&self, start: &[u8], n: usize, bytes: &mut u64) -> usize {
        // Borrowed pairs, as the peers' cursors give them.
        let mut it = self.store.range(start..);
        let mut c = 0;
        while c < n
            && let Some((k, v)) = it.next_ref()
        {
            *bytes += (k.len() + v.len()) as u64;
            c += 1;
        }
        c
    }
    fn put_batch(&self, pairs: &[(Vec<u8>, Vec<u8>)]) {
        for ch in pairs.chunks(64) {
            let ops: Vec<(Vec<u8>, Option<Vec<u8>>)> = ch.iter().map(|(k, v)| (k.clone(), Some(v.clone()))).collect();
            self.store.write_batch(&ops).expect("daxkv write_batch");
        }
    }
    fn files(&self) -> PathBuf {
        self.path.clone()
    }
}

struct Lmdb {
    env: heed::Env,
    db: heed::Database<heed::types::Bytes, heed::types::Bytes>,
    dir: PathBuf,
}

impl Engine for Lmdb {
    fn name(&self) -> &'static str {
        "lmdb"
    }
    fn backend(&self) -> String {
        "sync".into()
    }
    fn durability(&self) -> String {
        let v = heed::lmdb_version();
        format!(
            "LMDB {}.{}.{} (heed 0.22, built from source), env on {} with default flags: \
             every commit fdatasync'ed (no NOSYNC/NOMETASYNC/WRITEMAP); one write txn per put, one read txn per get/scan",
            v.major,
            v.minor,
            v.patch,
            self.dir.parent().map_or("?".into(), |p| p.display().to_string())
        )
    }
    fn put(&self, key: &[u8], value: &[u8]) {
        let mut w = self.env.write_txn().expect("lmdb write txn");
        self.db.put(&mut w, key, value).expect("lmdb put");
        w.commit().expect("lmdb commit");
    }
    fn get(&self, key: &[u8], out: &mut Vec<u8>) -> bool {
        let r = self.env.read_txn().expect("lmdb read txn");
        match self.db.get(&r, key).expect("lmdb get") {
            Some(v) => {
                out.clear();
                out.extend_from_slice(v);
                true
            }
            None => false,
        }
    }
    fn scan(&self, start: &[u8], n: usize, bytes: &mut u64) -> usize {
        let r = self.env.read_txn().expect("lmdb read txn");
        let range = (Bound::Included(start), Bound::Unbounded);
        let mut c = 0;
        for kv in self.db.range(&r, &range).expect("lmdb range").take(n) {
            let (k, v) = kv.expect("lmdb scan");
            *bytes += (k.len() + v.len()) as u64;
            c += 1;
        }
        c
    }
    fn put_batch(&self, pairs: &[(Vec<u8>, Vec<u8>)]) {
        let mut w = self.env.write_txn().expect("lmdb write txn");
        for (k, v) in pairs {
            self.db.put(&mut w, k, v).expect("lmdb put");
        }
        w.commit().expect("lmdb commit");
    }
    fn files(&self) -> PathBuf {
        self.dir.clone()
    }
}

const TABLE: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("kv");

struct Redb {
    db: redb::Database,
    dir: PathBuf,
}

impl Engine for Redb {
    fn name(&self) -> &'static str {
        "redb"
    }
    fn backend(&self) -> String {
        "immediate".into()
    }
    fn durability(&self) -> String {
        format!(
            "redb 4.5, file in {} with default durability (Durability::Immediate: every commit fsync'ed); \
             one write txn per put, one read txn per get/scan",
            self.dir.parent().map_or("?".into(), |p| p.display().to_string())
        )
    }
    fn put(&self, key: &[u8], value: &[u8]) {
        let w = self.db.begin_write().expect("redb write txn");
        w.open_table(TABLE).expect("redb table").insert(key, value).expect("redb insert");
        w.commit().expect("redb commit");
    }
    fn get(&self, key: &[u8], out: &mut Vec<u8>) -> bool {
        use redb::ReadableDatabase;
        let r = self.db.begin_read().expect("redb read txn");
        let t = r.open_table(TABLE).expect("redb table");
        match t.get(key).expect("redb get") {
            Some(v) => {
                out.clear();
                out.extend_from_slice(v.value());
                true
            }
            None => false,
        }
    }
    fn scan(&self, start: &[u8], n: usize, bytes: &mut u64) -> usize {
        use redb::ReadableDatabase;
        let r = self.db.begin_read().expect("redb read txn");
        let t = r.open_table(TABLE).expect("redb table");
        let mut c = 0;
        for kv in t.range(start..).expect("redb range").take(n) {
            let (k, v) = kv.expect("redb scan");
            *bytes += (k.value().len() + v.value().len()) as u64;
            c += 1;
        }
        c
    }
    fn put_batch(&self, pairs: &[(Vec<u8>, Vec<u8>)]) {
        let w = self.db.begin_write().expect("redb write txn");
        {
            let mut t = w.open_table(TABLE).expect("redb table");
            for (k, v) in pairs {
                t.insert(k.as_slice(), v.as_slice()).expect("redb insert");
            }
        }
        w.commit().expect("redb commit");
    }
    fn files(&self) -> PathBuf {
        self.dir.clone()
    }
}
