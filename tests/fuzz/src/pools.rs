//! Damage to a pool file, chosen by the fuzzer.

use daxkv_tests::ShmDir;
use daxkv_tests::corrupt::{History, POOL, SB_COPIES, Targets, base_image, exercise, reseal, set_word, targets, word};
use std::sync::OnceLock;

/// A base image, what was written to it, and where damage is worth making.
struct Base {
    img: Vec<u8>,
    history: History,
    targets: Targets,
}

/// The two base images (closed cleanly, left by a crash), made once a
/// process, and the directory the damaged copies are written to.
struct World {
    bases: [Base; 2],
    dir: ShmDir,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let dir = ShmDir::new("fuzz-pool");
        let base = |crashed: bool| {
            let path = dir.0.join(format!("base-{crashed}.pool"));
            let history = base_image(&path, crashed);
            let img = std::fs::read(&path).expect("read the base image");
            let _ = std::fs::remove_file(&path);
            Base { targets: targets(&img), img, history }
        };
        World { bases: [base(false), base(true)], dir }
    })
}

/// Bytes one damage takes: what (1), which place (4), a value (8).
const OP: usize = 13;

/// Apply one damage to `img`.
fn damage(img: &mut [u8], t: &Targets, op: &[u8]) {
    let what = op[0];
    let pick = u32::from_le_bytes(op[1..5].try_into().expect("4 bytes")) as usize;
    let val = u64::from_le_bytes(op[5..13].try_into().expect("8 bytes"));
    let of = |v: &[usize]| v[pick % v.len()];
    match what % 8 {
        0 => set_word(img, of(&t.structure), val),
        1 => {
            let at = of(&t.structure);
            set_word(img, at, word(img, at) ^ val);
        }
        // An offset inside the pool (a line's, with bit 3 of `what`).
        2 => {
            let off = val % POOL;
            set_word(img, of(&t.structure), if what & 8 != 0 { off & !63 } else { off });
        }
        3 => set_word(img, of(&t.words), val),
        4 => img[of(&t.words) + (val % 8) as usize] ^= (val >> 8) as u8 | 1,
        5 => img[of(&t.lines)..][..64].fill(0),
        6 => {
            let to = t.lines[(val % t.lines.len() as u64) as usize];
            img.copy_within(of(&t.lines)..of(&t.lines) + 64, to);
        }
        // A superblock field with its checksum made valid again (both
        // copies with bit 3 of `what`), so that the geometry itself is
        // checked.
        _ => {
            let field = 8 * (1 + pick % 16);
            for (i, &sb) in SB_COPIES.iter().enumerate() {
                if i == 0 || what & 8 != 0 {
                    set_word(img, sb + field, val);
                    reseal(img, sb);
                }
            }
        }
    }
}

/// Damage a base image as the bytes say (the first byte's low bit picks
/// the crashed or the clean image; each following 13 bytes are one
/// damage, at most 8), then salvage, open and use the pool
/// ([`exercise`]): a refused open must not have written to the file, a
/// pool that `check`s sound must serve only values that were written, and
/// nothing may panic.
pub fn pool(data: &[u8]) {
    let Some((&which, ops)) = data.split_first() else { return };
    let w = world();
    let base = &w.bases[usize::from(which & 1)];
    let mut img = base.img.clone();
    for op in ops.chunks_exact(OP).take(8) {
        damage(&mut img, &base.targets, op);
    }
    let path = w.dir.0.join("case.pool");
    std::fs::write(&path, &img).expect("write the damaged pool");
    exercise(&path, &base.history, 7);
}
