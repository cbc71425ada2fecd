//! The simulator's two images and the bookkeeping between them.
//!
//! The region's own memory is the cache view: what the program reads and
//! writes. `persisted` is what would survive a crash right now. Between the
//! two, every 8-byte word written since it last settled is *pending* with
//! the list of values it has held (any of them may reach media: a line can
//! be evicted at any moment) and, if it was flushed or written with
//! non-temporal stores, which of those values the next drain makes durable.

use super::images::{CrashPoint, PendingWord};
use super::sites::{Site, SiteKind, SiteStats};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::panic::Location;

/// Most values remembered for one word between settlements; older ones are
/// forgotten (a word rewritten that often without a flush is a hot spot the
/// program does not care to persist).
const MAX_VERSIONS: usize = 6;

/// How the simulator enumerates crash images and which sites it disables.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Sites switched off: a disabled flush or copy does not flush, a
    /// disabled drain does not settle anything.
    pub disabled: HashSet<Site>,
    /// Enumerate every combination when there are at most this many.
    pub max_exhaustive: u64,
    /// Random images per crash point when not exhaustive.
    pub random_samples: u32,
    /// Seed of the random images.
    pub seed: u64,
    /// When not exhaustive, at most this many lines get their own
    /// "only this line" and "all but this line" images (evenly spread over
    /// the pending lines); 0 means every line.
    pub max_line_images: usize,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            disabled: HashSet::new(),
            max_exhaustive: 4096,
            random_samples: 16,
            seed: 0x5eed,
            max_line_images: 0,
        }
    }
}

/// Simulator-wide counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimCounters {
    /// Flush calls (including the flushes inside copies and fills).
    pub flushes: u64,
    /// Flush calls that had nothing new to write back.
    pub redundant_flushes: u64,
    /// Drain calls.
    pub drains: u64,
    /// Drain calls with nothing flushed to make durable.
    pub redundant_drains: u64,
    /// Crash points offered to the hook.
    pub crash_points: u64,
}

#[derive(Debug, Clone, Default)]
struct Word {
    /// Values held since the word last settled, oldest first, none equal to
    /// its neighbour.
    versions: Vec<u64>,
    /// Index in `versions` of the value the last flush captured.
    flushed: Option<usize>,
}

type Hook = Box<dyn FnMut(&CrashPoint<'_>) + Send>;

struct State {
    persisted: Vec<u8>,
    pending: BTreeMap<usize, Word>,
    sites: HashMap<Site, SiteStats>,
    counters: SimCounters,
    hook: Option<Hook>,
}

/// The crash simulator attached to one region (see the crate docs).
pub struct Sim {
    cfg: SimConfig,
    state: Mutex<State>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim").field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

fn word_at(bytes: &[u8], w: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[w * 8..w * 8 + 8]);
    u64::from_le_bytes(b)
}

impl Sim {
    pub(crate) fn new(initial: &[u8], cfg: SimConfig) -> Sim {
        Sim {
            cfg,
            state: Mutex::new(State {
                persisted: initial.to_vec(),
                pending: BTreeMap::new(),
                sites: HashMap::new(),
                counters: SimCounters::default(),
                hook: None,
            }),
        }
    }

    /// The configuration this simulator runs with.
    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }

    /// Call `hook` at every crash point (just before each drain settles).
    /// The hook must not write to this simulator's region.
    pub fn set_hook(&self, hook: impl FnMut(&CrashPoint<'_>) + Send + 'static) {
        self.state.lock().hook = Some(Box::new(hook));
    }

    /// Stop offering crash points.
    pub fn clear_hook(&self) {
        self.state.lock().hook = None;
    }

    /// Every site seen so far with its counters, in a stable order.
    pub fn sites(&self) -> Vec<(Site, SiteStats)> {
        let mut v: Vec<_> = self.state.lock().sites.iter().map(|(s, c)| (*s, *c)).collect();
        v.sort_by_key(|(s, _)| *s);
        v
    }

    /// Simulator-wide counters.
    pub fn counters(&self) -> SimCounters {
        self.state.lock().counters
    }

    /// What would survive a crash now if nothing pending reached media.
    pub fn persisted_image(&self) -> Vec<u8> {
        self.state.lock().persisted.clone()
    }

    /// Number of words that could still go either way at a crash.
    pub fn pending_words(&self) -> usize {
        self.state.lock().pending.len()
    }

    fn site(&self, st: &mut State, kind: SiteKind, loc: &'static Location<'static>) -> (Site, bool) {
        let site = Site::here(kind, loc);
        st.sites.entry(site).or_default().calls += 1;
        (site, self.cfg.disabled.contains(&site))
    }

    /// Record a store of `view[off..off+len]` into the cache view.
    /// `view(w)` reads word `w` of the cache view.
    pub(crate) fn on_write(&self, view: &dyn Fn(usize) -> u64, off: usize, len: usize) {
        if len == 0 {
            return;
        }
        let mut st = self.state.lock();
        Self::record(&mut st, view, off, len);
    }

    /// Returns whether the store changed any word (a store of the values
    /// already there changes nothing).
    fn record(st: &mut State, view: &dyn Fn(usize) -> u64, off: usize, len: usize) -> bool {
        let mut changed = false;
        for w in off / 8..(off + len).div_ceil(8) {
            let cur = view(w);
            match st.pending.get_mut(&w) {
                Some(word) => {
                    if word.versions.last() != Some(&cur) {
                        changed = true;
                        word.versions.push(cur);
                        if word.versions.len() > MAX_VERSIONS {
                            // Forget the oldest value, but never the one a
                            // flush captured: the next drain needs it.
                            let rm = usize::from(word.flushed == Some(0));
                            word.versions.remove(rm);
                            if let Some(i) = word.flushed
                                && i > rm
                            {
                                word.flushed = Some(i - 1);
                            }
                        }
                    }
                }
                None => {
                    if cur != word_at(&st.persisted, w) {
                        changed = true;
                        st.pending.insert(w, Word { versions: vec![cur], flushed: None });
                    }
                }
            }
        }
        changed
    }

    /// Flush the lines touched by `[off, off+len)`: capture their words'
    /// current values as what the next drain makes durable.
    fn flush_lines(st: &mut State, off: usize, len: usize) -> bool {
        if len == 0 {
            return false;
        }
        let first_word = (off & !63) / 8;
        let end_word = ((off + len).div_ceil(64) * 64) / 8;
        let mut useful = false;
        for (_, word) in st.pending.range_mut(first_word..end_word) {
            let last = word.versions.len() - 1;
            if word.flushed != Some(last) {
                word.flushed = Some(last);
                useful = true;
            }
        }
        useful
    }

    pub(crate) fn on_flush(&self, off: usize, len: usize, kind: SiteKind, loc: &'static Location<'static>) {
        let mut st = self.state.lock();
        let (site, disabled) = self.site(&mut st, kind, loc);
        st.counters.flushes += 1;
        let useful = !disabled && Self::flush_lines(&mut st, off, len);
        if !useful && !disabled {
            st.counters.redundant_flushes += 1;
            if let Some(s) = st.sites.get_mut(&site) {
                s.redundant += 1;
            }
        }
    }

    /// A copy or fill: the store itself, then (unless the site is off) the
    /// flush of the lines it touched, which is what the flushcache copy's
    /// cached-store-plus-flush and non-temporal paths both amount to.
    pub(crate) fn on_copy(
        &self,
        view: &dyn Fn(usize) -> u64,
        off: usize,
        len: usize,
        kind: SiteKind,
        loc: &'static Location<'static>,
    ) {
        let mut st = self.state.lock();
        let (site, disabled) = self.site(&mut st, kind, loc);
        // A copy of the bytes already there is redundant (its flush of
        // neighbouring words aside).
        if !Self::record(&mut st, view, off, len)
            && let Some(s) = st.sites.get_mut(&site)
        {
            s.redundant += 1;
        }
        if !disabled {
            Self::flush_lines(&mut st, off, len);
        }
    }

    pub(crate) fn on_drain(&self, loc: &'static Location<'static>) {
        let mut st = self.state.lock();
        let (site, disabled) = self.site(&mut st, SiteKind::Drain, loc);
        st.counters.drains += 1;
        if st.hook.is_some() {
            st.counters.crash_points += 1;
            let index = st.counters.crash_points;
            let mut hook = st.hook.take();
            {
                let pending: Vec<PendingWord> = st
                    .pending
                    .iter()
                    .filter_map(|(&w, word)| {
                        let old = word_at(&st.persisted, w);
                        let mut c: Vec<u64> = Vec::new();
                        for &v in &word.versions {
                            if v != old && !c.contains(&v) {
                                c.push(v);
                            }
                        }
                        (!c.is_empty()).then_some(PendingWord { word: w, candidates: c })
                    })
                    .collect();
                let cp = CrashPoint::new(index, site, &st.persisted, pending, &self.cfg);
                if let Some(h) = hook.as_mut() {
                    h(&cp);
                }
            }
            if st.hook.is_none() {
                st.hook = hook;
            }
        }
        if disabled {
            return;
        }
        let mut useful = false;
        let State { persisted, pending, .. } = &mut *st;
        pending.retain(|&w, word| {
            if let Some(i) = word.flushed.take() {
                useful = true;
                persisted[w * 8..w * 8 + 8].copy_from_slice(&word.versions[i].to_le_bytes());
                word.versions.drain(..=i);
            }
            // The last version is always the current value; keep the word
            // while any value it held since the flush could still differ
            // from what is now persisted.
            let p = word_at(persisted, w);
            !word.versions.iter().all(|&v| v == p)
        });
        if !useful {
            st.counters.redundant_drains += 1;
            if let Some(s) = st.sites.get_mut(&site) {
                s.redundant += 1;
            }
        }
    }
}
