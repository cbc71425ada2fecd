//! # daxkv-tests
//!
//! The crash-recovery suite (seeded workloads, the crash explorer over the
//! simulator with nested crashes in recovery, the mutation score, kill
//! torture) and behaviour tests by topic (in `tests/`). The `daxkv-crash`
//! binary runs the suite in quick or full mode and replays failures.
#![forbid(unsafe_code)]

pub mod corrupt;
pub mod explore;
pub mod mutants;
pub mod torture;
pub mod workload;

/// A directory of one test's own under `/dev/shm` (the stand-in for DAX
/// memory), removed with everything in it on drop.
pub struct ShmDir(pub std::path::PathBuf);

impl ShmDir {
    /// `/dev/shm/daxkv-{tag}-{pid}`, created empty.
    pub fn new(tag: &str) -> ShmDir {
        let dir = std::path::Path::new("/dev/shm").join(format!("daxkv-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a directory in /dev/shm");
        ShmDir(dir)
    }

    /// Open the pool `name` in this directory with `pmem` forced (the real
    /// flush instructions), creating it with `size` bytes if missing.
    pub fn pmem_store(&self, name: &str, size: u64) -> daxkv::Store {
        let opts = daxkv::Options::new()
            .pool_size(size)
            .persistence(daxkv::Persistence::Force(daxkv::Backend::Pmem))
            .create_if_missing(true);
        daxkv::Store::open(self.0.join(name), &opts).expect("create a pool")
    }
}

impl Drop for ShmDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
