//! The mutation score of the crash suite: every persistence call site
//! (flush, drain, copy, fill) the workloads run through is switched off in
//! turn, and the explorer must then find a violation. A site whose removal
//! goes unnoticed is either redundant (the simulator saw it write back
//! nothing new) or a gap in the suite.

use crate::explore::{Config, explore};
use crate::workload::Kind;
use daxkv_alloc::sim::Site;
use std::collections::BTreeMap;

/// The verdict on one site.
#[derive(Debug, Clone)]
pub struct SiteResult {
    /// The site.
    pub site: Site,
    /// Calls in the reference run.
    pub calls: u64,
    /// Calls the simulator judged redundant.
    pub redundant: u64,
    /// The violation that detected its removal, if any.
    pub detected_by: Option<String>,
}

impl SiteResult {
    /// Whether every call of the site was redundant.
    pub fn always_redundant(&self) -> bool {
        self.calls > 0 && self.redundant == self.calls
    }
}

/// Every site the workloads reach, from a reference run.
pub fn sites(cfg: &Config, kinds: &[Kind]) -> BTreeMap<Site, (u64, u64)> {
    let mut all: BTreeMap<Site, (u64, u64)> = BTreeMap::new();
    for &k in kinds {
        let r = explore(k, cfg);
        for (s, c, red) in r.sites {
            let e = all.entry(s).or_default();
            e.0 += c;
            e.1 += red;
        }
    }
    all
}

/// Switch off each site in turn and explore until a violation shows.
pub fn run(cfg: &Config, kinds: &[Kind], mut progress: impl FnMut(&SiteResult)) -> Vec<SiteResult> {
    let reference = sites(cfg, kinds);
    let mut out = Vec::new();
    for (site, (calls, redundant)) in reference {
        let mut c = cfg.clone();
        c.disabled.insert(site);
        c.stop_at_first = true;
        let mut detected_by = None;
        for &k in kinds {
            let r = explore(k, &c);
            if let Some(v) = r.violations.first() {
                detected_by = Some(format!("{} op {} point {}: {}", v.workload, v.op, v.point, v.what));
                break;
            }
        }
        let res = SiteResult { site, calls, redundant, detected_by };
        progress(&res);
        out.push(res);
    }
    out
}
