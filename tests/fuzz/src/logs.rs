//! Damage to a redo log, chosen by the fuzzer.

use daxkv_alloc::{PersistOptions, Region};
use daxkv_log::Log;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Bytes of the log area (a ring of about 7 KiB: entries wrap round it).
const LEN: u64 = 8192;

/// The operations of entry `i`: one to three of varied sizes, each naming
/// its entry.
fn entry(i: u64) -> Vec<Vec<u8>> {
    (0..1 + i % 3).map(|j| format!("entry {i} op {j} ").repeat(1 + (i * 7 + j) as usize % 13).into_bytes()).collect()
}

/// Build a log holding a history the first two bytes choose (how many
/// entries were committed, and up to which the owner checkpointed), flip
/// the bytes the rest names (each 3 bytes: a place in the area, and what to
/// XOR there), then scan and open it. Whatever the damage, the log is
/// refused with an error or yields entries numbered on from its
/// checkpoint, each exactly as it was committed (a damaged record is
/// never served); undamaged, it yields every entry after the checkpoint.
/// An opened log takes a new entry, which the next scan finds last.
pub fn log(data: &[u8]) {
    let (n, c) = (u64::from(data.first().copied().unwrap_or(0) % 48), data.get(1).copied().unwrap_or(0));
    let region = Arc::new(Region::anonymous(LEN as usize, &PersistOptions::default()).expect("map the area"));
    let log = Log::create(region.clone(), 0, LEN).expect("create the log");
    let mut committed: BTreeMap<u64, Vec<Vec<u8>>> = BTreeMap::new();
    let mut applied = 0;
    for i in 0..n {
        let ops = entry(i);
        let seq = match log.try_append(&ops) {
            Ok(seq) => seq,
            Err(_) => {
                // Full: the owner applies everything and checkpoints.
                applied = log.next_seq() - 1;
                log.checkpoint(applied).expect("checkpoint");
                log.try_append(&ops).expect("append after a checkpoint")
            }
        };
        log.commit(seq).expect("commit");
        committed.insert(seq, ops);
    }
    // Then a checkpoint of part of what is left, as the bytes say.
    let last = log.next_seq() - 1;
    if last > applied && c > 0 {
        applied += (u64::from(c) % (last - applied)).max(1);
        log.checkpoint(applied).expect("checkpoint");
    }
    drop(log);
    let damage = data.get(2..).unwrap_or_default();
    for d in damage.chunks_exact(3) {
        let at = u64::from(u16::from_le_bytes([d[0], d[1]])) % LEN;
        let b = region.bytes(at, 1)[0] ^ d[2];
        region.write(at, &[b]);
    }
    let damaged = damage.chunks_exact(3).any(|d| d[2] != 0);
    let scanned = Log::scan(&region, 0, LEN);
    if !damaged {
        let rec = scanned.as_ref().expect("an undamaged log scans");
        assert_eq!(rec.applied_through(), applied, "checkpoint");
    }
    let Ok(rec) = scanned else { return };
    let from = rec.applied_through();
    let found = served(rec, &committed);
    if !damaged {
        assert_eq!(found, committed.range(applied + 1..).count() as u64, "entries of an undamaged log");
    }
    let Ok((log, rec)) = Log::open(region.clone(), 0, LEN) else {
        assert!(damaged, "an undamaged log does not open");
        return;
    };
    assert_eq!(rec.applied_through(), from, "open and scan disagree on the checkpoint");
    assert_eq!(served(rec, &committed), found, "open and scan disagree on the entries");
    // A new entry, found again by the next scan.
    let next = log.next_seq();
    log.checkpoint(next - 1).expect("checkpoint");
    let ops = vec![b"after the damage".to_vec()];
    let seq = log.append_commit(&ops).expect("append to the opened log");
    drop(log);
    let got: Vec<_> = Log::scan(&region, 0, LEN).expect("scan after the append").collect();
    assert_eq!(got.len(), 1, "entries after the new one's checkpoint");
    assert_eq!((got[0].seq, &got[0].ops), (seq, &ops), "the new entry");
}

/// Check the entries a scan yields: numbered on from its checkpoint, each
/// exactly as committed. Returns how many.
fn served(rec: daxkv_log::Recovery, committed: &BTreeMap<u64, Vec<Vec<u8>>>) -> u64 {
    let first = rec.applied_through() + 1;
    let mut n = 0;
    for e in rec {
        assert_eq!(e.seq, first + n, "entries out of order");
        assert_eq!(Some(&e.ops), committed.get(&e.seq), "entry {} is not what was committed", e.seq);
        n += 1;
    }
    n
}
