//! Opening pools: locking against a second process, and clear typed errors
//! for paths that cannot be pools.

use daxkv_alloc::{Backend, OpenError, PersistOptions, Persistence, Region, RegionOptions};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const TOOL: &str = env!("CARGO_BIN_EXE_pool-tool");

fn scratch(name: &str) -> PathBuf {
    let d = Path::new("/dev/shm").join(format!("daxkv-open-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn opts(create: Option<u64>) -> RegionOptions {
    RegionOptions { persist: PersistOptions::default(), create_size: create, min_len: 4096 }
}

#[test]
fn second_process_gets_locked() {
    let d = scratch("lock");
    let pool = d.join("p.pool");
    let mut holder = Command::new(TOOL)
        .args(["hold", pool.to_str().unwrap(), "1048576"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "held");

    // From this process...
    let e = Region::open(&pool, &opts(None)).unwrap_err();
    assert!(matches!(e, OpenError::Locked { .. }), "{e:?}");
    // ... and from a third process.
    let out = Command::new(TOOL).args(["open", pool.to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("locked"), "{out:?}");

    drop(holder.stdin.take()); // let the holder exit
    assert!(holder.wait().unwrap().success());
    // The lock died with its process.
    let r = Region::open(&pool, &opts(None)).unwrap();
    assert_eq!(r.len(), 1 << 20);
    drop(r);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_directory_is_not_a_pool() {
    let d = scratch("dir");
    let e = Region::open(&d, &opts(Some(1 << 20))).unwrap_err();
    assert!(matches!(e, OpenError::IsDirectory { .. }), "{e:?}");
    assert!(e.to_string().contains("is a directory"));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn missing_file_without_create() {
    let d = scratch("missing");
    let e = Region::open(&d.join("nope"), &opts(None)).unwrap_err();
    assert!(matches!(e, OpenError::NotFound { .. }), "{e:?}");
    // Asked to create it in a directory that does not exist: said so.
    let e = Region::open(&d.join("no-dir").join("p.pool"), &opts(Some(1 << 20))).unwrap_err();
    assert!(matches!(e, OpenError::NoDirectory { .. }), "{e:?}");
    assert!(e.to_string().ends_with("cannot create the pool: no such directory"), "{e}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn too_small_file() {
    let d = scratch("small");
    let p = d.join("small.pool");
    std::fs::write(&p, [0u8; 100]).unwrap();
    let e = Region::open(&p, &opts(None)).unwrap_err();
    match e {
        OpenError::TooSmall { found, needed, .. } => assert_eq!((found, needed), (100, 4096)),
        e => panic!("{e:?}"),
    }
    // An empty file without create is too small as well, and stays empty.
    std::fs::write(&p, []).unwrap();
    assert!(matches!(Region::open(&p, &opts(None)), Err(OpenError::TooSmall { .. })));
    assert_eq!(std::fs::metadata(&p).unwrap().len(), 0);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn unreadable_file_for_an_unprivileged_user() {
    let d = scratch("perm");
    let p = d.join("private.pool");
    std::fs::write(&p, vec![0u8; 8192]).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    // Run the opener as nobody (root would bypass the permission bits).
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", TOOL, "open", p.to_str().unwrap()])
        .output()
        .expect("setpriv (util-linux) is installed by .ci/run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("permission-denied"), "{out:?}");
    assert!(stdout.contains("permission denied"));
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn auto_picks_volatile_on_tmpfs_and_says_why() {
    let d = scratch("auto");
    let r = Region::open(&d.join("a.pool"), &opts(Some(1 << 20))).unwrap();
    let info = r.persist_info();
    assert_eq!(info.backend, Backend::Volatile, "{info}");
    assert!(info.reason.contains("tmpfs"), "{info}");
    assert!(!info.map_sync, "tmpfs has no MAP_SYNC");
    drop(r);
    let forced = RegionOptions { persist: PersistOptions::default().with_backend(Backend::Pmem), ..opts(None) };
    let r = Region::open(&d.join("a.pool"), &forced).unwrap();
    assert_eq!(r.persist_info().backend, Backend::Pmem);
    assert!(r.persist_info().reason.contains("forced"));
    drop(r);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn auto_picks_msync_on_an_ordinary_file_system() {
    // The target directory lives in the checkout, on a disk file system.
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("daxkv-open-{}-disk", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let r = Region::open(&d.join("m.pool"), &opts(Some(1 << 20))).unwrap();
    assert_eq!(r.persist_info().backend, Backend::Msync, "{}", r.persist_info());
    assert!(r.persist_info().reason.contains("MAP_SYNC refused"));
    r.write(0, b"hello");
    r.persist(0, 5).unwrap();
    drop(r);
    let bytes = std::fs::read(d.join("m.pool")).unwrap();
    assert_eq!(bytes.len(), 1 << 20);
    assert_eq!(&bytes[..5], b"hello");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn backend_names_parse() {
    assert!("pmem".parse::<Persistence>().is_ok());
    assert!("PMEM".parse::<Persistence>().is_ok());
    let e = "fast".parse::<Persistence>().unwrap_err();
    assert!(e.contains("unknown persistence backend"));
}

fn open_with_env(pool: &Path, env: &[(&str, &str)]) -> String {
    let out = Command::new(TOOL).args(["open", pool.to_str().unwrap()]).envs(env.iter().copied()).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn environment_overrides() {
    let d = scratch("env");
    let pool = d.join("e.pool");
    drop(Region::open(&pool, &opts(Some(1 << 20))).unwrap());
    let s = open_with_env(&pool, &[]);
    assert!(s.starts_with("ok persistence volatile"), "{s}");
    let s = open_with_env(&pool, &[("DAXKV_PERSISTENCE", "pmem")]);
    assert!(s.starts_with("ok persistence pmem (forced by DAXKV_PERSISTENCE)"), "{s}");
    let flushes = daxkv_alloc::available_flushes();
    let s = open_with_env(&pool, &[("DAXKV_PERSISTENCE", "pmem"), ("DAXKV_NO_CLWB", "1")]);
    let expect =
        if flushes.contains(&daxkv_alloc::FlushInstr::Clflushopt) { "flush clflushopt" } else { "flush clflush" };
    assert!(s.contains(expect), "{s}");
    let s =
        open_with_env(&pool, &[("DAXKV_PERSISTENCE", "pmem"), ("DAXKV_NO_CLWB", "1"), ("DAXKV_NO_CLFLUSHOPT", "1")]);
    assert!(s.contains("flush clflush,"), "{s}");
    let s = open_with_env(&pool, &[("DAXKV_PERSISTENCE", "eadr"), ("DAXKV_NO_MOVNT", "1")]);
    assert!(s.contains("flush none, copy plain"), "{s}");
    let s = open_with_env(&pool, &[("DAXKV_PERSISTENCE", "pmem"), ("DAXKV_MOVNT_THRESHOLD", "1024")]);
    assert!(s.contains("at >= 1024 B"), "{s}");
    let s = open_with_env(&pool, &[("DAXKV_MOVNT_THRESHOLD", "lots")]);
    assert!(s.starts_with("env environment variable DAXKV_MOVNT_THRESHOLD=lots"), "{s}");
    let s = open_with_env(&pool, &[("DAXKV_PERSISTENCE", "fast")]);
    assert!(s.starts_with("env environment variable DAXKV_PERSISTENCE=fast"), "{s}");
    std::fs::remove_dir_all(&d).unwrap();
}
