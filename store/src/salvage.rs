//! [`salvage`]: copy every intact pair out of a pool that may be damaged,
//! without writing to it.
//!
//! Open refuses a pool whose structure contradicts itself (a slot naming a
//! record outside the heap, leaves out of key order, a broken chain...):
//! serving from it could return wrong data, and repairing it in place
//! could destroy what is left. Salvage is the way out. It reads the pool
//! as recovery would, with the log's committed entries laid over the
//! leaves in memory instead of applied, and hands over each pair whose
//! record's checksum verifies. Damage it meets is reported and stepped
//! over: a bad record is left out, and a broken leaf chain is continued
//! from the index saved at the last clean close when there is one.

use crate::error::PoolError;
use crate::format::{self, HEADER_BYTES};
use crate::leaf::{self, LEAF_BYTES, REC_HEADER, SLOTS, UNVERIFIED};
use crate::recovery::{decode_set, in_heap, load_snapshot};
use daxkv_alloc::Region;
use daxkv_log::{Found, Log};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

/// What [`salvage`] found.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct SalvageReport {
    /// Leaves read.
    pub leaves: u64,
    /// Pairs handed over.
    pub keys: u64,
    /// Their key and value bytes.
    pub bytes: u64,
    /// Keys left out because they had expired (not damage).
    pub expired: u64,
    /// Live slots naming a record that an insert cut short by a crash
    /// never finished (never acknowledged: recovery drops them too).
    pub unfinished: u64,
    /// The damage met, one line each; empty when the pool was sound.
    pub problems: Vec<String>,
    /// What was found that loses nothing: a superblock copy that did not
    /// validate (torn by a crash while it was written, or damaged), read
    /// from the other.
    pub notes: Vec<String>,
}

impl SalvageReport {
    /// Whether no damage was met. Damage that leaves a pool looking
    /// consistent cannot be seen: a bitmap bit cleared, or, in a pool left
    /// by a crash, a chain cut short (after a clean close the key count
    /// saved then catches both).
    pub fn is_complete(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Why [`salvage`] stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SalvageError {
    /// The file could not be read as a pool at all: no usable superblock,
    /// not a daxkv pool, in use by another process...
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// The callback failed (writing the pairs out).
    #[error("writing the salvaged pairs: {0}")]
    Output(#[source] std::io::Error),
}

/// Whether some 8-byte word of the record at `rec` (in the heap) is all
/// zeros where the record is, as a torn one-drain insert leaves it: its
/// block was zero on media, and only whole aligned words are sure to have
/// reached it or not. (A record of mostly zero bytes looks torn too.)
fn looks_torn(r: &Region, rec: u64) -> bool {
    let len = leaf::record_size(r, rec).unwrap_or(REC_HEADER);
    let end = rec + len;
    let mut at = rec;
    while at < end {
        let to = ((at / 8 + 1) * 8).min(end);
        if r.bytes(at, (to - at) as usize).iter().all(|&b| b == 0) {
            return true;
        }
        at = to;
    }
    false
}

/// Why a live slot's record is not handed over.
enum Fault {
    Empty,
    OutsideHeap,
    Lengths,
    Checksum,
}

impl Fault {
    fn what(&self) -> &'static str {
        match self {
            Fault::Empty => "missing",
            Fault::OutsideHeap => "outside the heap",
            Fault::Lengths => "with impossible lengths",
            Fault::Checksum => "failing its checksum",
        }
    }
}

/// Hand every intact pair of the pool at `path` to `each`, with its expiry
/// (milliseconds since the Unix epoch, `None`: never), in key order
/// (unless the damage put leaves out of order, which the report says),
/// and report what was left out and why. Keys that have expired are left
/// out and counted. The pool is opened and mapped
/// read-only (so read-only media do), under a shared lock: a pool a store
/// holds open is refused as locked.
pub fn salvage(
    path: impl AsRef<Path>,
    each: impl FnMut(&[u8], &[u8], Option<u64>) -> std::io::Result<()>,
) -> Result<SalvageReport, SalvageError> {
    let path = path.as_ref();
    let region = Region::open_read_only(path, HEADER_BYTES).map_err(PoolError::from)?;
    salvage_region(&region, path, each)
}

/// [`salvage`] of a mapped pool (`path` names it in errors).
pub fn salvage_region(
    r: &Region,
    path: &Path,
    mut each: impl FnMut(&[u8], &[u8], Option<u64>) -> std::io::Result<()>,
) -> Result<SalvageReport, SalvageError> {
    let (sb, damaged) = format::read(r, path)?;
    let mut rep = SalvageReport::default();
    // Keys that expired before the salvage began are left out.
    let now = crate::store::now_ms();
    if let Some(copy) = damaged {
        rep.notes.push(format!("superblock copy {copy} is torn or damaged; read the other"));
    }
    // The committed entries recovery would replay, as (offset, word), laid
    // over what is read. An entry that is not all word writes inside the
    // heap ends the overlay: later entries may build on it.
    let mut overlay: BTreeMap<u64, u64> = BTreeMap::new();
    match Log::scan(r, sb.log_off, sb.log_len) {
        Ok(entries) => {
            if let Some((slot, fault)) = entries.damaged_slot() {
                rep.notes.push(format!("log checkpoint slot {slot} is torn or damaged ({fault}); read the other"));
            }
            let end = *entries.end();
            match end.found {
                Found::BadOps => rep.problems.push(format!(
                    "log entry {} at {} passes its checksum but its operations do not parse: it and any later entries left out",
                    end.next_seq, end.offset
                )),
                f if !f.is_clean() => rep.notes.push(format!(
                    "the log ends at entry {} with {f:?}: a commit cut short by a crash (never acknowledged), or damage",
                    end.next_seq
                )),
                _ => {}
            }
            for e in entries {
                let ops: Option<Vec<(u64, u64)>> = e
                    .ops
                    .iter()
                    .map(|op| decode_set(op).filter(|&(off, _)| off.is_multiple_of(8) && in_heap(&sb, off, 8)))
                    .collect();
                let Some(ops) = ops else {
                    rep.problems.push(format!(
                        "log entry {} is not word writes inside the heap: it and later entries left out",
                        e.seq
                    ));
                    break;
                };
                overlay.extend(ops);
            }
        }
        Err(e) => rep.problems.push(format!("log unreadable ({e}): its entries not yet applied are left out")),
    }
    let snapshot = if sb.clean { load_snapshot(r, &sb) } else { None };
    let leaf_ok = |off: u64| off.is_multiple_of(8) && in_heap(&sb, off, LEAF_BYTES as u64);
    let mut seen = HashSet::new();
    let mut last: Option<Vec<u8>> = None;
    let mut cur = sb.head_leaf;
    // Once the chain ends (or breaks): the leaves of the saved index that
    // it did not reach.
    let mut rest: Option<Vec<u64>> = None;
    loop {
        if let Some(q) = &mut rest {
            match q.pop() {
                Some(off) => cur = off,
                None => break,
            }
        } else if cur == 0 || !leaf_ok(cur) || seen.contains(&cur) {
            let broken = match cur {
                0 => None,
                _ if !leaf_ok(cur) => Some("is outside the heap"),
                _ => Some("loops back"),
            };
            let q: Vec<u64> = snapshot
                .iter()
                .flatten()
                .rev()
                .filter(|l| leaf_ok(l.off) && !seen.contains(&l.off))
                .map(|l| l.off)
                .collect();
            let after = rep.leaves;
            match broken {
                Some(why) if snapshot.is_some() => rep.problems.push(format!(
                    "leaf chain broken after {after} leaves: next leaf {cur} {why}; \
                     continuing with the {} leaves of the index saved at the last clean close not read yet",
                    q.len()
                )),
                Some(why) => rep.problems.push(format!(
                    "leaf chain broken after {after} leaves: next leaf {cur} {why}; \
                     no index saved at a clean close to continue from"
                )),
                None if !q.is_empty() => rep.problems.push(format!(
                    "{} leaves of the index saved at the last clean close are not on the leaf chain; read as well",
                    q.len()
                )),
                None => {}
            }
            rest = Some(q);
            continue;
        }
        if !seen.insert(cur) {
            continue;
        }
        // The leaf as recovery would see it after replaying the log.
        let mut b = [0u8; LEAF_BYTES];
        r.read(cur, &mut b);
        for (&off, &v) in overlay.range(cur..cur + LEAF_BYTES as u64) {
            let at = (off - cur) as usize;
            b[at..at + 8].copy_from_slice(&v.to_le_bytes());
        }
        let word = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
        rep.leaves += 1;
        let mut pairs: Vec<(&[u8], &[u8], Option<u64>)> = Vec::with_capacity(SLOTS);
        let mut unfinished: Vec<usize> = Vec::new();
        for i in leaf::live(word(0)) {
            let slot = word(80 + 8 * i);
            let rec = slot & !UNVERIFIED;
            let fault = if rec == 0 {
                Some(Fault::Empty)
            } else if !in_heap(&sb, rec, REC_HEADER) {
                Some(Fault::OutsideHeap)
            } else {
                match leaf::record_intact(r, rec) {
                    Some((k, _, _)) if k > 0 && leaf::record_size(r, rec).is_some_and(|n| in_heap(&sb, rec, n)) => None,
                    Some(_) => Some(Fault::Lengths),
                    None => Some(Fault::Checksum),
                }
            };
            // What a one-drain insert cut short by a crash leaves (see
            // `Store::put_locked`): a zero slot, or a flagged slot naming a
            // record some of whose words never reached media (its block was
            // zero there). Never acknowledged, so not damage.
            let cut_short = match fault {
                Some(Fault::Empty) => true,
                Some(Fault::Lengths | Fault::Checksum) => slot & UNVERIFIED != 0 && looks_torn(r, rec),
                _ => false,
            };
            match fault {
                None => pairs.push((leaf::record_key(r, rec), leaf::record_value(r, rec), leaf::record_expiry(r, rec))),
                Some(_) if cut_short => unfinished.push(i),
                Some(f) => rep.problems.push(format!("leaf {cur} slot {i}: record at {rec} {}; left out", f.what())),
            }
        }
        // A leaf stays locked until its insert is durable, so a crash cuts
        // short at most one insert per leaf, and none before a clean close.
        if sb.clean || unfinished.len() > 1 {
            for i in unfinished.drain(..) {
                rep.problems.push(format!(
                    "leaf {cur} slot {i}: record missing or torn{}; left out",
                    if sb.clean { " in a pool closed cleanly" } else { " (more than one in the leaf)" }
                ));
            }
        }
        rep.unfinished += unfinished.len() as u64;
        pairs.sort_unstable();
        pairs.dedup_by(|b, a| {
            let dup = a.0 == b.0;
            if dup {
                rep.problems.push(format!("leaf {cur}: key {:?} in two slots; kept one", String::from_utf8_lossy(a.0)));
            }
            dup
        });
        if let (Some(first), Some(prev)) = (pairs.first(), &last)
            && first.0 <= prev.as_slice()
        {
            rep.problems.push(format!(
                "leaf {cur}: keys out of order with the leaves before it (a later copy of a key wins on load)"
            ));
        }
        for &(k, v, at) in &pairs {
            if at.is_some_and(|at| at <= now) {
                rep.expired += 1;
                continue;
            }
            each(k, v, at).map_err(SalvageError::Output)?;
            rep.keys += 1;
            rep.bytes += (k.len() + v.len()) as u64;
        }
        if let Some(&(k, _, _)) = pairs.last()
            && last.as_deref().is_none_or(|prev| k > prev)
        {
            last = Some(k.to_vec());
        }
        cur = word(8);
    }
    if sb.clean && rep.keys + rep.expired != sb.keys && rep.problems.is_empty() {
        rep.problems.push(format!(
            "the pool held {} keys at its clean close; {} found",
            sb.keys,
            rep.keys + rep.expired
        ));
    }
    Ok(rep)
}
