//! The crash suite in quick mode: every workload, a crash at every drain,
//! every image (duplicates removed), some recovered on a simulator of their
//! own and crashed again during recovery. At least 10,000 images over at
//! least three workloads, and no violation.

use daxkv_tests::explore::{Config, explore};
use daxkv_tests::workload::Kind;

#[test]
fn quick_crash_suite() {
    let mut total = 0;
    let mut nested = 0;
    let mut failures = Vec::new();
    for kind in Kind::ALL {
        let cfg = Config::quick(0x5eed);
        let r = explore(kind, &cfg);
        eprintln!(
            "{:>10}: {} crash points, {} images ({} duplicates skipped), {} nested points / {} images, {} distinct states, {:.1}s",
            r.workload, r.points, r.images, r.duplicates, r.nested_points, r.nested_images, r.states, r.secs
        );
        assert!(r.points > 100, "{} visited only {} crash points", r.workload, r.points);
        total += r.images;
        nested += r.nested_images;
        for v in &r.violations {
            failures.push(format!(
                "{}: op {} point {} image {}: {}\n  replay: {}",
                v.workload,
                v.op,
                v.point,
                v.image,
                v.what,
                v.replay_command(cfg.ops)
            ));
        }
    }
    assert!(failures.is_empty(), "{} violations:\n{}", failures.len(), failures.join("\n"));
    assert!(total >= 10_000, "only {total} images checked");
    assert!(nested > 0, "no crash inside recovery was explored");
}
