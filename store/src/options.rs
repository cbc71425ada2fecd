//! [`Options`]: how a pool is created and opened.

use daxkv_alloc::{PersistOptions, Persistence};
use daxkv_log::GroupCommitOptions;

/// Options for [`crate::Store::create`] and [`crate::Store::open`].
#[derive(Debug, Clone)]
pub struct Options {
    pub(crate) pool_size: u64,
    pub(crate) persist: PersistOptions,
    pub(crate) create_if_missing: bool,
    pub(crate) log_size: Option<u64>,
    pub(crate) group_commit: GroupCommitOptions,
    pub(crate) prefault: bool,
    pub(crate) point_cache: Option<u64>,
    pub(crate) verify: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options::new()
    }
}

impl Options {
    /// Defaults: a 256 MiB pool, persistence chosen by probing (or by
    /// `DAXKV_PERSISTENCE` and the other `DAXKV_*` overrides if set), no
    /// creation on open, a log of 1/64 of the pool (256 KiB .. 64 MiB),
    /// default group-commit waits, pages faulted in at creation, a point
    /// cache of 1/32 of the pool size, no check at open.
    pub fn new() -> Options {
        Options {
            pool_size: 256 << 20,
            persist: PersistOptions::from_env().unwrap_or_default(),
            create_if_missing: false,
            log_size: None,
            group_commit: GroupCommitOptions::default(),
            prefault: true,
            point_cache: None,
            verify: false,
        }
    }

    /// Whether [`crate::Store::open`] runs [`crate::Store::check`] before
    /// it hands out the store, and refuses a pool with any problem with
    /// [`crate::PoolError::Damaged`] (default `false`).
    ///
    /// After a clean close, open otherwise trusts the saved index and the
    /// leaves and records as they are (it reads only the index, which is
    /// checksummed, to reopen in milliseconds), so damage there would
    /// surface later: a record failing its checksum, or a key not found.
    /// With this set, a damaged pool is refused before anything is written
    /// to it (except, in a pool of format version 2 or 3, the zeroing of
    /// heap header words those versions never used). After a crash, recovery runs first (it must, to settle
    /// unfinished operations) and the check follows. The check reads every
    /// leaf and record: about 0.1-0.2 s per million keys here (reopening
    /// without it takes about 5 ms).
    pub fn verify(mut self, yes: bool) -> Options {
        self.verify = yes;
        self
    }

    /// Whether [`crate::Store::create`] faults in every page of the new pool
    /// (default `true`) where they are memory (tmpfs, DAX), so that writes
    /// never wait for a page fault and the kernel's zeroing of the page:
    /// on /dev/shm that is about 0.2 s per GiB at creation, and puts into
    /// the fresh pool up to twice as fast. Skipped on ordinary file
    /// systems, where it would dirty the whole file.
    pub fn prefault(mut self, yes: bool) -> Options {
        self.prefault = yes;
        self
    }

    /// DRAM for the point cache, in bytes (default: 1/32 of the pool size;
    /// 0 turns it off). The cache maps a key's hash to its record, so a
    /// get it answers reads one DRAM line and the record instead of walking
    /// the index and the leaf. It is volatile, filled by writes and gets,
    /// and costs 8 bytes per cached key (64-byte buckets of 7); pages it
    /// never touches take no memory.
    pub fn point_cache(mut self, bytes: u64) -> Options {
        self.point_cache = Some(bytes);
        self
    }

    /// Size of a pool to create, in bytes (at least 1 MiB).
    pub fn pool_size(mut self, bytes: u64) -> Options {
        self.pool_size = bytes;
        self
    }

    /// The persistence backend, or `Persistence::Auto` to probe.
    pub fn persistence(mut self, p: Persistence) -> Options {
        self.persist.persistence = p;
        self
    }

    /// All persistence-layer options (backend, flush and copy overrides).
    pub fn persist_options(mut self, p: PersistOptions) -> Options {
        self.persist = p;
        self
    }

    /// Create the pool if the file does not exist (for `open`).
    pub fn create_if_missing(mut self, yes: bool) -> Options {
        self.create_if_missing = yes;
        self
    }

    /// Size of the redo log area of a pool to create, in bytes.
    pub fn log_size(mut self, bytes: u64) -> Options {
        self.log_size = Some(bytes);
        self
    }

    /// How concurrent transactions and batches wait for each other to share
    /// one drain of the log (applies to every open, not stored in the pool).
    pub fn group_commit(mut self, g: GroupCommitOptions) -> Options {
        self.group_commit = g;
        self
    }

    pub(crate) fn log_len(&self) -> u64 {
        let l = self.log_size.unwrap_or((self.pool_size / 64).clamp(256 << 10, 64 << 20));
        l.div_ceil(4096) * 4096
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Backend, Store};

    /// The group-commit waits given at create and at open reach the log.
    #[test]
    fn group_commit_settings_reach_the_log() {
        let dir = std::env::temp_dir().join(format!("daxkv-gc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.pool");
        let g = GroupCommitOptions { leader_wait_spins: 7, follower_spins: 9 };
        let o = Options::new().pool_size(8 << 20).persistence(Persistence::Force(Backend::Volatile));
        let s = Store::create(&path, &o.clone().group_commit(g)).unwrap();
        assert_eq!(s.log.group_commit(), g);
        s.close().unwrap();
        let s = Store::open(&path, &o).unwrap();
        assert_eq!(s.log.group_commit(), GroupCommitOptions::default());
        s.close().unwrap();
        let g2 = GroupCommitOptions { leader_wait_spins: 0, follower_spins: 1 };
        let s = Store::open(&path, &o.group_commit(g2)).unwrap();
        assert_eq!(s.log.group_commit(), g2);
        s.close().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
