//! What the user asks for (a [`Persistence`] and overrides), and what the
//! layer chose ([`PersistInfo`]): backend, flush instruction, copy path.

use crate::error::OpenError;
use std::fmt;

/// Default size at or above which the flushcache copy uses non-temporal
/// stores (bytes).
pub const DEFAULT_MOVNT_THRESHOLD: usize = 256;

/// A persistence backend: how data in the region reaches the persistence
/// domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backend {
    /// Persistent memory with ADR: line write-back instructions, then sfence.
    Pmem,
    /// The platform flushes CPU caches on power loss: fences only.
    Eadr,
    /// An ordinary file: dirty pages are written with `msync(MS_SYNC)`.
    Msync,
    /// Volatile memory: nothing survives power loss; no flush at all.
    Volatile,
    /// The crash simulator (tests only).
    Sim,
}

impl Backend {
    /// The backend's name as used in options, flags and `DAXKV_PERSISTENCE`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Pmem => "pmem",
            Backend::Eadr => "eadr",
            Backend::Msync => "msync",
            Backend::Volatile => "volatile",
            Backend::Sim => "sim",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the user asks for: a backend, or `Auto` to probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Persistence {
    /// Probe the mapping and file system (the default).
    #[default]
    Auto,
    /// Force a backend.
    Force(Backend),
}

impl std::str::FromStr for Persistence {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "auto" => Persistence::Auto,
            "pmem" => Persistence::Force(Backend::Pmem),
            "eadr" => Persistence::Force(Backend::Eadr),
            "msync" => Persistence::Force(Backend::Msync),
            "volatile" => Persistence::Force(Backend::Volatile),
            "sim" => Persistence::Force(Backend::Sim),
            _ => {
                return Err(format!(
                    "unknown persistence backend '{s}' (expected auto, pmem, eadr, msync or volatile)"
                ));
            }
        })
    }
}

/// The instruction that writes cache lines back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FlushInstr {
    /// `clwb`: write back, keep the line cached.
    Clwb,
    /// `clflushopt`: write back and evict, unordered.
    Clflushopt,
    /// `clflush`: write back and evict, ordered (slowest).
    Clflush,
    /// No line flush (eadr, msync, volatile, sim).
    None,
}

impl FlushInstr {
    /// Lower-case name, as in benchmark case names.
    pub fn name(self) -> &'static str {
        match self {
            FlushInstr::Clwb => "clwb",
            FlushInstr::Clflushopt => "clflushopt",
            FlushInstr::Clflush => "clflush",
            FlushInstr::None => "none",
        }
    }
}

/// The vector width used for non-temporal copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CopyIsa {
    /// 64-byte AVX-512 streaming stores.
    Avx512,
    /// 32-byte AVX2 streaming stores.
    Avx2,
    /// 16-byte SSE2 streaming stores.
    Sse2,
    /// No non-temporal stores: every copy is cached stores (+ flush).
    Plain,
}

impl CopyIsa {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            CopyIsa::Avx512 => "avx512",
            CopyIsa::Avx2 => "avx2",
            CopyIsa::Sse2 => "sse2",
            CopyIsa::Plain => "plain",
        }
    }

    /// Every non-temporal path this CPU can run, widest first, then `Plain`.
    pub fn available() -> Vec<CopyIsa> {
        let mut v = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            let cpu = super::x86_64::detect();
            if cpu.avx512f {
                v.push(CopyIsa::Avx512);
            }
            if cpu.avx2 {
                v.push(CopyIsa::Avx2);
            }
            if cpu.sse2 {
                v.push(CopyIsa::Sse2);
            }
        }
        v.push(CopyIsa::Plain);
        v
    }
}

/// Every flush instruction this CPU has, best first.
pub fn available_flushes() -> Vec<FlushInstr> {
    let mut v = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        let cpu = super::x86_64::detect();
        if cpu.clwb {
            v.push(FlushInstr::Clwb);
        }
        if cpu.clflushopt {
            v.push(FlushInstr::Clflushopt);
        }
        v.push(FlushInstr::Clflush);
    }
    v
}

/// Options of the persistence layer. `from_env` reads the `DAXKV_*`
/// variables; fields set in code after that take precedence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistOptions {
    /// Backend wanted, or `Auto`.
    pub persistence: Persistence,
    /// Do not use clwb even if present (`DAXKV_NO_CLWB=1`).
    pub no_clwb: bool,
    /// Do not use clflushopt even if present (`DAXKV_NO_CLFLUSHOPT=1`).
    pub no_clflushopt: bool,
    /// Never use non-temporal stores (`DAXKV_NO_MOVNT=1`).
    pub no_movnt: bool,
    /// Copies of at least this many bytes use non-temporal stores
    /// (`DAXKV_MOVNT_THRESHOLD`).
    pub movnt_threshold: usize,
    /// Force one flush instruction (tests and benchmarks).
    pub force_flush: Option<FlushInstr>,
    /// Force one non-temporal copy path (tests and benchmarks).
    pub force_copy: Option<CopyIsa>,
}

impl Default for PersistOptions {
    fn default() -> Self {
        PersistOptions {
            persistence: Persistence::Auto,
            no_clwb: false,
            no_clflushopt: false,
            no_movnt: false,
            movnt_threshold: DEFAULT_MOVNT_THRESHOLD,
            force_flush: None,
            force_copy: None,
        }
    }
}

fn env_flag(var: &'static str) -> Result<bool, OpenError> {
    match std::env::var(var) {
        Err(_) => Ok(false),
        Ok(v) => match v.as_str() {
            "" | "0" | "false" | "no" => Ok(false),
            "1" | "true" | "yes" => Ok(true),
            _ => Err(OpenError::Env { var, value: v, why: "expected 0 or 1" }),
        },
    }
}

impl PersistOptions {
    /// Defaults overridden by `DAXKV_PERSISTENCE`, `DAXKV_NO_CLWB`,
    /// `DAXKV_NO_CLFLUSHOPT`, `DAXKV_NO_MOVNT` and `DAXKV_MOVNT_THRESHOLD`.
    pub fn from_env() -> Result<Self, OpenError> {
        let mut o = PersistOptions::default();
        if let Ok(v) = std::env::var("DAXKV_PERSISTENCE") {
            o.persistence = v.parse().map_err(|_| OpenError::Env {
                var: "DAXKV_PERSISTENCE",
                value: v.clone(),
                why: "expected auto, pmem, eadr, msync or volatile",
            })?;
        }
        o.no_clwb = env_flag("DAXKV_NO_CLWB")?;
        o.no_clflushopt = env_flag("DAXKV_NO_CLFLUSHOPT")?;
        o.no_movnt = env_flag("DAXKV_NO_MOVNT")?;
        if let Ok(v) = std::env::var("DAXKV_MOVNT_THRESHOLD") {
            o.movnt_threshold = v.parse().map_err(|_| OpenError::Env {
                var: "DAXKV_MOVNT_THRESHOLD",
                value: v.clone(),
                why: "expected a byte count",
            })?;
        }
        Ok(o)
    }

    /// The same options with the backend forced.
    pub fn with_backend(mut self, b: Backend) -> Self {
        self.persistence = Persistence::Force(b);
        self
    }
}

/// What the layer chose at open, and why. `Region::persist_info` returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistInfo {
    /// The backend in use.
    pub backend: Backend,
    /// Why it was chosen (probe result or "forced by ...").
    pub reason: String,
    /// Line write-back instruction used by `flush`.
    pub flush: FlushInstr,
    /// Copy path used for large copies.
    pub copy: CopyIsa,
    /// Copies at or above this size use non-temporal stores.
    pub movnt_threshold: usize,
    /// Whether the mapping was made with `MAP_SYNC`.
    pub map_sync: bool,
}

impl fmt::Display for PersistInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "persistence {} ({}); flush {}, copy {} at >= {} B{}",
            self.backend,
            self.reason,
            self.flush.name(),
            self.copy.name(),
            self.movnt_threshold,
            if self.map_sync { ", MAP_SYNC" } else { "" }
        )
    }
}
