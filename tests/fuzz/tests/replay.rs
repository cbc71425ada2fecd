//! Every committed input of every fuzz target (`seeds/<target>/`: the
//! starting points, and each input that once found a bug), run through
//! the target's function on stable.

use std::path::Path;

#[test]
fn every_seed_runs_clean() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    for (name, run) in daxkv_fuzz::TARGETS {
        let mut files: Vec<_> = std::fs::read_dir(root.join(name))
            .unwrap_or_else(|e| panic!("seeds/{name}: {e}"))
            .map(|e| e.expect("a directory entry").path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "seeds/{name} is empty");
        for f in files {
            eprintln!("{name}: {}", f.display());
            run(&std::fs::read(&f).expect("read a seed"));
        }
    }
}
