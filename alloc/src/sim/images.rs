//! Crash points and the crash images they yield.
//!
//! At a crash point the persisted image plus any choice, for every pending
//! 8-byte word, of "not written back" or one of the values the word held is
//! a state the media could be found in after power loss. Words of one line
//! may be chosen apart, which models tearing inside a line; an aligned word
//! is never torn. When there are at most `max_exhaustive` combinations all
//! are produced; otherwise the all/none images, each line alone, each line
//! left out, and seeded random samples.

use super::sites::Site;
use super::state::SimConfig;
use std::ops::ControlFlow;

/// A word that may or may not have reached media, with the values it may
/// have reached it with (none equal to the persisted value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingWord {
    /// Word index in the region (byte offset / 8).
    pub word: usize,
    /// Values it may hold after a crash, oldest first; the last is the
    /// current value if that differs from the persisted one.
    pub candidates: Vec<u64>,
}

/// How an image was chosen, enough to reproduce it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageDesc {
    /// `exhaustive`, `none`, `all`, `only-line`, `all-but-line` or `random`.
    pub strategy: &'static str,
    /// Combination number (exhaustive), line number, or sample number.
    pub index: u64,
    /// Seed of a random sample (0 otherwise).
    pub seed: u64,
}

impl std::fmt::Display for ImageDesc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}#{}", self.strategy, self.index)?;
        if self.strategy == "random" {
            write!(f, " seed={:#x}", self.seed)?;
        }
        Ok(())
    }
}

/// A moment (just before a drain settles) at which power may fail.
#[derive(Debug)]
pub struct CrashPoint<'a> {
    /// 1-based number of this crash point in the simulator's life.
    pub index: u64,
    /// The drain about to run.
    pub site: Site,
    persisted: &'a [u8],
    pending: Vec<PendingWord>,
    cfg: &'a SimConfig,
}

fn splitmix(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl<'a> CrashPoint<'a> {
    pub(crate) fn new(
        index: u64,
        site: Site,
        persisted: &'a [u8],
        pending: Vec<PendingWord>,
        cfg: &'a SimConfig,
    ) -> Self {
        CrashPoint { index, site, persisted, pending, cfg }
    }

    /// The words that may go either way.
    pub fn pending(&self) -> &[PendingWord] {
        &self.pending
    }

    /// What media holds if nothing pending was written back.
    pub fn persisted(&self) -> &[u8] {
        self.persisted
    }

    /// Number of distinct images (saturating).
    pub fn combinations(&self) -> u64 {
        self.pending.iter().fold(1u64, |acc, p| acc.saturating_mul(p.candidates.len() as u64 + 1))
    }

    /// Whether `for_each_image` enumerates every combination.
    pub fn is_exhaustive(&self) -> bool {
        self.combinations() <= self.cfg.max_exhaustive
    }

    /// The pending words grouped by cache line: ranges into `pending`.
    fn lines(&self) -> Vec<std::ops::Range<usize>> {
        let mut out = Vec::new();
        let mut start = 0;
        for i in 1..=self.pending.len() {
            if i == self.pending.len() || self.pending[i].word / 8 != self.pending[start].word / 8 {
                out.push(start..i);
                start = i;
            }
        }
        out
    }

    /// Call `f` with every image this point yields (see the module docs),
    /// stopping early if it returns `Break`. Returns the number of images.
    pub fn for_each_image(&self, mut f: impl FnMut(&[u8], &ImageDesc) -> ControlFlow<()>) -> u64 {
        let mut buf = self.persisted.to_vec();
        let mut choice = vec![0usize; self.pending.len()];
        let mut count = 0u64;
        let mut emit = |choice: &[usize], desc: ImageDesc, buf: &mut Vec<u8>| -> ControlFlow<()> {
            for (p, &c) in self.pending.iter().zip(choice) {
                let v = if c == 0 {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&self.persisted[p.word * 8..p.word * 8 + 8]);
                    u64::from_le_bytes(b)
                } else {
                    p.candidates[c - 1]
                };
                buf[p.word * 8..p.word * 8 + 8].copy_from_slice(&v.to_le_bytes());
            }
            count += 1;
            f(buf, &desc)
        };
        let latest = |i: usize| self.pending[i].candidates.len();

        if self.is_exhaustive() {
            let total = self.combinations();
            for n in 0..total {
                let mut rest = n;
                for (i, p) in self.pending.iter().enumerate() {
                    let radix = p.candidates.len() as u64 + 1;
                    choice[i] = (rest % radix) as usize;
                    rest /= radix;
                }
                let desc = ImageDesc { strategy: "exhaustive", index: n, seed: 0 };
                if emit(&choice, desc, &mut buf).is_break() {
                    break;
                }
            }
            return count;
        }

        let lines = self.lines();
        let mut plan: Vec<(Vec<usize>, ImageDesc)> = Vec::new();
        plan.push((vec![0; choice.len()], ImageDesc { strategy: "none", index: 0, seed: 0 }));
        plan.push(((0..choice.len()).map(latest).collect(), ImageDesc { strategy: "all", index: 0, seed: 0 }));
        let step = match self.cfg.max_line_images {
            0 => 1,
            m => lines.len().div_ceil(m).max(1),
        };
        for (li, r) in lines.iter().enumerate().step_by(step) {
            let mut only = vec![0; choice.len()];
            let mut but: Vec<usize> = (0..choice.len()).map(latest).collect();
            for i in r.clone() {
                only[i] = latest(i);
                but[i] = 0;
            }
            plan.push((only, ImageDesc { strategy: "only-line", index: li as u64, seed: 0 }));
            plan.push((but, ImageDesc { strategy: "all-but-line", index: li as u64, seed: 0 }));
        }
        for (ci, c) in plan.iter() {
            if emit(ci, *c, &mut buf).is_break() {
                return count;
            }
        }
        for s in 0..self.cfg.random_samples as u64 {
            let seed = self.cfg.seed ^ self.index.wrapping_mul(0x1000_0000_01b3) ^ (s << 40);
            let desc = ImageDesc { strategy: "random", index: s, seed };
            self.random_choice(seed, &lines, &mut choice);
            if emit(&choice, desc, &mut buf).is_break() {
                break;
            }
        }
        count
    }

    /// The choice of the random image with this seed (also used to replay).
    fn random_choice(&self, seed: u64, lines: &[std::ops::Range<usize>], choice: &mut [usize]) {
        let mut rng = seed;
        for r in lines {
            let mode = splitmix(&mut rng) % 4;
            for i in r.clone() {
                let n = self.pending[i].candidates.len();
                choice[i] = match mode {
                    0 => 0,
                    1 => n,
                    // torn line: each word on its own, any value it held
                    _ => (splitmix(&mut rng) % (n as u64 + 1)) as usize,
                };
            }
        }
    }

    /// Rebuild one image from its description (to replay a failure).
    pub fn image(&self, desc: &ImageDesc) -> Option<Vec<u8>> {
        let mut out = None;
        self.for_each_image(|img, d| {
            if d == desc {
                out = Some(img.to_vec());
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        out
    }
}
