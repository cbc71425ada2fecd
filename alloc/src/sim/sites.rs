//! Persistence call sites: every flush, drain, copy and fill is identified
//! by the source location that called it (`#[track_caller]`), so that a
//! site can be counted, listed and switched off.

use std::fmt;
use std::panic::Location;

/// What a call site does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SiteKind {
    /// `Region::flush` (or the flush half of `persist`).
    Flush,
    /// `Region::drain` (or the drain half of `persist`).
    Drain,
    /// `Region::copy_nodrain`.
    Copy,
    /// `Region::set_nodrain`.
    Set,
}

impl SiteKind {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            SiteKind::Flush => "flush",
            SiteKind::Drain => "drain",
            SiteKind::Copy => "copy",
            SiteKind::Set => "set",
        }
    }
}

/// One persistence call site: kind and source location.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Site {
    /// What the site does.
    pub kind: SiteKind,
    /// Source file of the caller.
    pub file: &'static str,
    /// Line of the caller.
    pub line: u32,
    /// Column of the caller.
    pub col: u32,
}

impl Site {
    pub(crate) fn here(kind: SiteKind, loc: &'static Location<'static>) -> Site {
        Site { kind, file: loc.file(), line: loc.line(), col: loc.column() }
    }
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}:{}:{}", self.kind.name(), self.file, self.line, self.col)
    }
}

/// Counters of one site.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SiteStats {
    /// Times the site was called.
    pub calls: u64,
    /// Calls that changed nothing: a flush of lines with nothing new to
    /// write back, a drain with nothing flushed or stored non-temporally, a
    /// copy or fill of the bytes already there.
    pub redundant: u64,
}
