//! # daxkv-fuzz
//!
//! What the fuzz targets run, one function each, taking the fuzzer's bytes:
//! [`requests`] (bytes a client sends to the server), [`ops`] (store
//! operations, against a model), [`log`] (damage to a redo log), [`pool`] (damage
//! to a pool file) and [`dump`] (a dump file to load). Each panics when
//! it finds something wrong; bad input must only ever get an error.
//!
//! The targets themselves are in `libfuzzer/` (cargo-fuzz, nightly:
//! `bash .ci/fuzz`); `tests/replay.rs` runs every committed seed and
//! every input that once found a bug through the same functions on
//! stable, as part of `cargo test`.
#![forbid(unsafe_code)]

use daxkv::{Backend, Options, Persistence, Store};
use daxkv_tests::ShmDir;

mod dumps;
mod logs;
mod ops;
mod pools;
mod requests;

pub use dumps::dump;
pub use logs::log;
pub use ops::ops;
pub use pools::pool;
pub use requests::requests;

/// A target's function: it takes the fuzzer's bytes.
pub type Target = fn(&[u8]);

/// The targets, by name: the name of their seed directory under `seeds/`.
pub const TARGETS: [(&str, Target); 5] =
    [("requests", requests), ("ops", ops), ("log", log), ("pool", pool), ("dump", dump)];

/// A store on /dev/shm (volatile backend: the harnesses check behaviour,
/// not persistence) made once a process and shared by every input, with
/// the directory it lives in.
struct Scratch {
    store: std::sync::Arc<Store>,
    _dir: ShmDir,
}

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = ShmDir::new(tag);
        let opts = Options::new()
            .pool_size(32 << 20)
            .persistence(Persistence::Force(Backend::Volatile))
            .create_if_missing(true);
        let store = Store::open(dir.0.join("scratch.pool"), &opts).expect("create the pool").into();
        Scratch { store, _dir: dir }
    }
}
