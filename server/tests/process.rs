//! The `daxkv` binary: `serve` with SIGTERM/SIGINT, a scripted `redis-cli`
//! session, the scripting subcommands, dump/load, and a quick kill torture
//! (SIGKILL under pipelined load, restart, every acknowledged SET there).

mod common;

use common::pool_path;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_daxkv");

struct Proc {
    child: Child,
    addr: SocketAddr,
    lines: Vec<String>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        // A failed test must not leave its server running.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `daxkv serve` on a free port; wait for its ready line.
fn serve(pool: &Path, extra: &[&str]) -> Proc {
    serve_sized(pool, "256M", extra)
}

/// `serve` with `--size size`.
fn serve_sized(pool: &Path, size: &str, extra: &[&str]) -> Proc {
    let child = Command::new(BIN)
        .args(["serve", "--pool", pool.to_str().unwrap(), "--size", size, "--port", "0", "--threads", "2"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // From here on, Drop kills the server if anything fails.
    let mut p = Proc { child, addr: "0.0.0.0:0".parse().unwrap(), lines: Vec::new() };
    let mut out = BufReader::new(p.child.stdout.take().unwrap());
    loop {
        let mut l = String::new();
        assert!(out.read_line(&mut l).unwrap_or(0) > 0, "server exited early: {:?}", p.lines);
        p.lines.push(l.trim_end().to_string());
        if let Some(rest) = l.trim_end().strip_prefix("daxkv: ready on ") {
            p.addr = rest.split(' ').next().unwrap().trim_end_matches(',').parse().unwrap();
            // Keep reading stdout so that the server never blocks on it.
            std::thread::spawn(move || {
                let mut sink = String::new();
                let _ = out.read_to_string(&mut sink);
                print!("{sink}");
            });
            return p;
        }
    }
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill").args([&format!("-{sig}"), &child.id().to_string()]).status().unwrap().success();
    assert!(ok);
}

fn wait(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let t = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(t.elapsed() < limit, "server did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn cli(args: &[&str]) -> (bool, String) {
    let o = Command::new(BIN).args(args).output().unwrap();
    (o.status.success(), String::from_utf8_lossy(&o.stdout).into_owned())
}

/// The exit status of `daxkv args`.
fn status(args: &[&str]) -> i32 {
    Command::new(BIN).args(args).output().unwrap().status.code().expect("exited")
}

struct Cleanup(Vec<PathBuf>);
impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Open the pool and report whether this open needed recovery.
fn opened_clean(pool: &Path) -> bool {
    let (ok, out) = cli(&["info", pool.to_str().unwrap()]);
    assert!(ok, "{out}");
    out.lines().any(|l| l.starts_with("opened:") && l.ends_with("clean"))
}

#[test]
fn sigterm_and_sigint_close_the_pool_cleanly() {
    let pool = pool_path("sig");
    let _c = Cleanup(vec![pool.clone()]);
    for (sig, how) in [("TERM", "created"), ("INT", "clean")] {
        let mut p = serve(&pool, &[]);
        assert!(p.lines.iter().any(|l| l.contains("persistence")), "backend not printed: {:?}", p.lines);
        assert!(p.lines[0].contains(&format!("keys, {how}, opened in")), "{:?}", p.lines);
        let mut c = redis::Client::open(format!("redis://{}/", p.addr)).unwrap().get_connection().unwrap();
        let _: () = redis::cmd("SET").arg(format!("key-{sig}")).arg(sig).query(&mut c).unwrap();
        signal(&p.child, sig);
        let st = wait(&mut p.child, Duration::from_secs(20));
        assert!(st.success(), "exit {st:?}");
        assert!(opened_clean(&pool), "pool needed recovery after SIG{sig}");
    }
    let (ok, out) = cli(&["get", pool.to_str().unwrap(), "key-TERM"]);
    assert!(ok && out == "TERM\n");
}

#[test]
fn redis_cli_scripted_session() {
    let pool = pool_path("cli");
    let _c = Cleanup(vec![pool.clone()]);
    let mut p = serve(&pool, &[]);
    let script = "PING\nSET greeting \"hello world\"\nGET greeting\nINCR visits\nINCRBY visits 9\nMSET a 1 b 2\nMGET a b nokey\nEXISTS a b nokey\nDEL a\nKEYS *\nAPPEND greeting !\nSTRLEN greeting\nGETRANGE greeting 0 4\nTYPE greeting\nDBSIZE\nNOSUCHCMD x\nGET\nMULTI\nINCR visits\nGET visits\nEXEC\nCONFIG GET appendonly\nSET session abc EXAT 4102444800\nEXPIRETIME session\nPERSIST session\nTTL session\n";
    let mut child = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &p.addr.port().to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("redis-cli must be installed (Debian's redis-tools; .ci/install installs it)");
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let got = String::from_utf8(out.stdout).unwrap();
    let want = "PONG\nOK\nhello world\n1\n10\nOK\n1\n2\n\n2\n1\nb\ngreeting\nvisits\n12\n12\nhello\nstring\n3\nERR unknown command 'NOSUCHCMD', with args beginning with: 'x' \n\nERR wrong number of arguments for 'get' command\n\nOK\nQUEUED\nQUEUED\n11\n11\nappendonly\nno\nOK\n4102444800\n1\n-1\n";
    assert_eq!(got, want, "redis-cli output:\n{got}");
    // SHUTDOWN through redis-cli stops the server and closes the pool.
    let st = Command::new("redis-cli").args(["-p", &p.addr.port().to_string(), "SHUTDOWN"]).output().unwrap();
    let _ = st;
    let st = wait(&mut p.child, Duration::from_secs(20));
    assert!(st.success());
    assert!(opened_clean(&pool));
}

#[test]
fn scripting_subcommands_and_dump_load() {
    let pool = pool_path("script");
    let copy = pool_path("copy");
    let dump = PathBuf::from(format!("{}.dump", pool.display()));
    let _c = Cleanup(vec![pool.clone(), copy.clone(), dump.clone()]);
    let ps = pool.to_str().unwrap();
    assert!(cli(&["create", ps, "--size", "64M"]).0);
    assert!(!cli(&["create", ps, "--size", "64M"]).0, "create over an existing pool must fail");
    assert!(cli(&["set", ps, "b", "2"]).0);
    assert!(cli(&["set", ps, "a", "1"]).0);
    assert!(cli(&["set", ps, "c d", "x\ty"]).0);
    assert_eq!(cli(&["get", ps, "a"]), (true, "1\n".into()));
    // Scripts tell an absent key (1) from an error (2).
    assert_eq!(status(&["get", ps, "zz"]), 1);
    assert_eq!(status(&["get", &format!("{ps}.nonexistent"), "a"]), 2);
    assert_eq!(status(&["get", ps]), 2, "a usage error");
    assert_eq!(cli(&["scan", ps]), (true, "a\t1\nb\t2\nc d\tx\\x09y\n".into()));
    assert_eq!(cli(&["scan", ps, "b", "--keys-only"]), (true, "b\n".into()));
    assert_eq!(cli(&["del", ps, "b", "zz"]), (true, "1\n".into()));
    let (ok, out) = cli(&["check", ps]);
    assert!(ok && out.contains("2 keys") && out.ends_with("ok\n"), "{out}");
    let (ok, out) = cli(&["info", ps]);
    assert!(ok && out.contains("keys:          2"), "{out}");
    assert!(cli(&["dump", ps, dump.to_str().unwrap()]).0);
    assert!(cli(&["load", copy.to_str().unwrap(), dump.to_str().unwrap(), "--size", "64M"]).0);
    assert_eq!(cli(&["scan", copy.to_str().unwrap()]), cli(&["scan", ps]));
    // A damaged or truncated dump is refused.
    let mut bytes = std::fs::read(&dump).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0xff;
    std::fs::write(&dump, &bytes).unwrap();
    assert!(!cli(&["load", copy.to_str().unwrap(), dump.to_str().unwrap()]).0);
    std::fs::write(&dump, &bytes[..n - 10]).unwrap();
    assert!(!cli(&["load", copy.to_str().unwrap(), dump.to_str().unwrap()]).0);
    std::fs::write(&dump, b"not a dump at all").unwrap();
    assert!(!cli(&["load", copy.to_str().unwrap(), dump.to_str().unwrap()]).0);
}

/// `daxkv grow`: a full pool grows in place and takes more keys; a shrink
/// or too small a growth is refused with a message and exit status 2.
#[test]
fn grow_a_full_pool_in_place() {
    let pool = pool_path("grow");
    let _c = Cleanup(vec![pool.clone()]);
    let ps = pool.to_str().unwrap();
    assert!(cli(&["create", ps, "--size", "2M"]).0);
    let big = "v".repeat(100_000);
    let mut n = 0;
    while cli(&["set", ps, &format!("k{n}"), &big]).0 {
        n += 1;
    }
    assert!(n > 5, "{n} keys fit");
    let (ok, out) = cli(&["grow", ps, "--size", "8M"]);
    assert!(ok && out.contains("grown from 2097152 to 8388608 bytes"), "{out}");
    assert_eq!(std::fs::metadata(&pool).unwrap().len(), 8 << 20);
    for i in 0..n {
        assert_eq!(cli(&["get", ps, &format!("k{i}")]), (true, format!("{big}\n")), "key {i}");
    }
    let mut more = 0;
    while cli(&["set", ps, &format!("more{more}"), &big]).0 {
        more += 1;
    }
    assert!(more > 3 * n, "{more} more keys after growing 4x, {n} before");
    let (ok, out) = cli(&["check", ps]);
    assert!(ok && out.contains(&format!("{} keys", n + more)), "{out}");
    let (ok, out) = cli(&["info", ps]);
    assert!(ok && out.contains("pool size:     8388608"), "{out}");
    let (ok, out) = cli(&["grow", ps, "--size", "8M"]);
    assert!(ok && out.contains("nothing to do"), "{out}");
    let o = Command::new(BIN).args(["grow", ps, "--size", "4M"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot shrink"), "{o:?}");
    // `serve --size` grows an existing smaller pool, and ignores a smaller
    // size, saying so.
    // A step too small to grow by is reported, and the pool served as it is.
    for (size, line, bytes) in [
        ("12M", "daxkv: pool grown from 8388608 to 12582912 bytes", "12582912"),
        ("4M", "daxkv: --size 4194304 ignored: the pool is 12582912 bytes, and a pool cannot shrink", "12582912"),
        ("12292K", "daxkv: --size 12587008 not applied: ", "12582912"),
    ] {
        let mut p = serve_sized(&pool, size, &[]);
        assert!(p.lines.iter().any(|l| l.starts_with(line) && (l == line || l.contains("at least"))), "{:?}", p.lines);
        let mut c = redis::Client::open(format!("redis://{}/", p.addr)).unwrap().get_connection().unwrap();
        let v: String = redis::cmd("GET").arg("k0").query(&mut c).unwrap();
        assert_eq!(v, big);
        signal(&p.child, "TERM");
        assert!(wait(&mut p.child, Duration::from_secs(20)).success());
        let (ok, out) = cli(&["info", ps]);
        assert!(ok && out.contains(&format!("pool size:     {bytes}")), "{out}");
    }
}

/// A grow whose larger file cannot be mapped (here: an address-space
/// limit) fails with exit status 2 and leaves the file at its old length,
/// so the pool still opens. (An ordinary file on disk: reserving 4 GiB
/// there costs no memory.)
#[test]
fn a_grow_that_cannot_be_mapped_leaves_the_file_as_it_was() {
    let pool = std::env::temp_dir().join(format!("daxkv-grow-unmappable-{}.pool", std::process::id()));
    let _c = Cleanup(vec![pool.clone()]);
    let ps = pool.to_str().unwrap();
    assert!(cli(&["create", ps, "--size", "4M"]).0);
    assert!(cli(&["set", ps, "a", "1"]).0);
    let o = Command::new("bash")
        .args(["-c", &format!("ulimit -v 1048576; exec {BIN} grow {ps} --size 4G")])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("mmap"), "{o:?}");
    assert_eq!(std::fs::metadata(&pool).unwrap().len(), 4 << 20);
    assert_eq!(cli(&["get", ps, "a"]), (true, "1\n".into()));
}

/// Expiries go through `dump`, `salvage` and `load`: a key's time comes
/// back with it, and a key that has expired is left out.
#[test]
fn dump_salvage_and_load_keep_expiries() {
    let pool = pool_path("expiring");
    let copy = pool_path("expiring-copy");
    let dump = PathBuf::from(format!("{}.dump", pool.display()));
    let _c = Cleanup(vec![pool.clone(), copy.clone(), dump.clone()]);
    let (ps, cs, ds) = (pool.to_str().unwrap(), copy.to_str().unwrap(), dump.to_str().unwrap());
    let later = 4_102_444_800_000u64;
    let opts = daxkv::Options::new().pool_size(8 << 20).create_if_missing(true);
    let s = daxkv::Store::open(&pool, &opts).unwrap();
    s.put(b"plain", b"p").unwrap();
    s.put_with_expiry(b"later", b"l", Some(later)).unwrap();
    s.put_with_expiry(b"past", b"x", Some(1)).unwrap();
    s.close().unwrap();
    let (ok, out) = cli(&["info", ps]);
    assert!(ok && out.contains("keys:          3") && out.contains("with expiry:   2"), "{out}");
    for cmd in ["dump", "salvage"] {
        assert_eq!(status(&[cmd, ps, ds]), 0, "{cmd}");
        assert!(cli(&["load", cs, ds, "--size", "8M"]).0, "load after {cmd}");
        let c = daxkv::Store::open(&copy, &daxkv::Options::new()).unwrap();
        assert_eq!(c.len(), 2, "after {cmd}");
        assert_eq!(c.expiry(b"plain").unwrap(), Some(None));
        assert_eq!(c.expiry(b"later").unwrap(), Some(Some(later)));
        assert_eq!(c.get(b"later").unwrap().as_deref(), Some(&b"l"[..]));
        assert_eq!(c.expiry(b"past").unwrap(), None);
        drop(c);
        std::fs::remove_file(&copy).unwrap();
    }
}

/// A pool left by a crash with one slot damaged: open refuses it, `check`
/// calls it damaged (exit 1) and `get` points to `salvage`, which copies
/// out every other pair (exit 1: something was left out) without writing
/// to the pool; `load` makes a sound pool of them, values intact.
#[test]
fn salvage_copies_out_a_pool_that_open_refuses() {
    let pool = pool_path("damaged");
    let copy = pool_path("salvaged");
    let dump = PathBuf::from(format!("{}.dump", pool.display()));
    let _c = Cleanup(vec![pool.clone(), copy.clone(), dump.clone()]);
    let (ps, cs, ds) = (pool.to_str().unwrap(), copy.to_str().unwrap(), dump.to_str().unwrap());
    let opts = daxkv::Options::new().pool_size(8 << 20).create_if_missing(true);
    let s = daxkv::Store::open(&pool, &opts).unwrap();
    for i in 0..300u32 {
        s.put(format!("key{i:03}").as_bytes(), format!("value {i}").as_bytes()).unwrap();
    }
    s.abandon();
    // Writing the output over the pool itself is refused before anything
    // is truncated.
    let before = std::fs::read(&pool).unwrap();
    for cmd in ["salvage", "dump"] {
        assert_eq!(status(&[cmd, ps, ps]), 2, "{cmd} onto the pool");
        assert!(std::fs::read(&pool).unwrap() == before, "{cmd} onto the pool changed it");
    }
    // Sound, salvage hands over everything and exits 0.
    assert_eq!(status(&["salvage", ps, ds]), 0);
    assert!(cli(&["load", cs, ds, "--size", "8M"]).0);
    assert_eq!(cli(&["scan", cs]).1.lines().count(), 300);
    std::fs::remove_file(&copy).unwrap();
    // A slot of the first leaf pointing far outside the pool.
    let mut b = std::fs::read(&pool).unwrap();
    let head = u64::from_le_bytes(b[72..80].try_into().unwrap()) as usize;
    let bits = u64::from_le_bytes(b[head..head + 8].try_into().unwrap());
    let i = bits.trailing_zeros() as usize;
    b[head + 80 + 8 * i..head + 88 + 8 * i].copy_from_slice(&(1u64 << 40).to_le_bytes());
    std::fs::write(&pool, &b).unwrap();

    let (ok, out) = cli(&["check", ps]);
    assert_eq!(status(&["check", ps]), 1, "{out}");
    assert!(!ok && out.contains("out of bounds") && out.contains("DAMAGED"), "{out}");
    let o = Command::new(BIN).args(["get", ps, "key001"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("daxkv salvage"), "{o:?}");
    // Recovery replayed the log and cleared its free space before its
    // walk met the damage (committed data unchanged); salvage must not
    // write at all.
    let b = std::fs::read(&pool).unwrap();
    let o = Command::new(BIN).args(["salvage", ps, ds]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("problem: leaf") && err.contains("salvaged 299 pairs"), "{err}");
    assert!(std::fs::read(&pool).unwrap() == b, "salvage wrote to the pool");
    assert!(cli(&["load", cs, ds, "--size", "8M"]).0);
    let (ok, out) = cli(&["check", cs]);
    assert!(ok && out.contains("299 keys"), "{out}");
    let listed = cli(&["scan", cs]).1;
    for l in listed.lines() {
        let (k, v) = l.split_once('\t').unwrap();
        assert_eq!(v, format!("value {}", k[3..].parse::<u32>().unwrap()));
    }
}

fn resp(args: &[&[u8]]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        v.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        v.extend_from_slice(a);
        v.extend_from_slice(b"\r\n");
    }
    v
}

/// One writer: pipelines of 16 SETs; a reply `+OK` acknowledges its SET.
/// Writer 2 gives every SET a time to live (a day and more).
/// Returns, per key, the (generation, sequence) of its last acknowledged
/// value when the server dies.
fn writer(addr: SocketAddr, id: usize, gen_: u64) -> HashMap<Vec<u8>, (u64, u64)> {
    let mut acked = HashMap::new();
    let Ok(mut s) = TcpStream::connect(addr) else { return acked };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut n = 0u64;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        let mut req = Vec::new();
        let mut batch = Vec::new();
        for _ in 0..16 {
            let k = format!("w{id}-k{}", n % 3000).into_bytes();
            let v = format!("{gen_}:{n}:{}", "x".repeat((n % 200) as usize)).into_bytes();
            if id == 2 {
                req.extend(resp(&[b"SET", &k, &v, b"EX", b"100000"]));
            } else {
                req.extend(resp(&[b"SET", &k, &v]));
            }
            batch.push((k, n));
            n += 1;
        }
        if s.write_all(&req).is_err() {
            return acked;
        }
        for (k, n) in batch {
            let mut r = [0u8; 5];
            if s.read_exact(&mut r).is_err() {
                return acked;
            }
            assert_eq!(&r, b"+OK\r\n");
            acked.insert(k, (gen_, n));
        }
    }
    acked
}

/// (generation, sequence) of a stored value.
fn version(v: &[u8]) -> (u64, u64) {
    let s = String::from_utf8_lossy(v);
    let mut it = s.split(':');
    let g = it.next().unwrap().parse().unwrap();
    let n = it.next().unwrap().parse().unwrap();
    (g, n)
}

#[test]
fn kill_torture_every_acknowledged_set_survives() {
    let pool = pool_path("kill");
    let _c = Cleanup(vec![pool.clone()]);
    let mut model: HashMap<Vec<u8>, (u64, u64)> = HashMap::new();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut total_acked = 0;
    for round in 0..20u64 {
        let mut p = serve(&pool, &[]);
        let how = if round == 0 { "created" } else { "recovered" };
        assert!(p.lines[0].contains(&format!("keys, {how}, opened in")), "round {round}: {:?}", p.lines);
        // Every acknowledged SET is there: its value, or a later one of the
        // same writer (written, not yet acknowledged when the kill came).
        let mut c = TcpStream::connect(p.addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut r = BufReader::new(c.try_clone().unwrap());
        let keys: Vec<&Vec<u8>> = model.keys().collect();
        for chunk in keys.chunks(256) {
            let req: Vec<u8> = chunk.iter().flat_map(|k| resp(&[b"GET", k])).collect();
            c.write_all(&req).unwrap();
            for k in chunk {
                let mut head = String::new();
                r.read_line(&mut head).unwrap();
                let len: usize =
                    head.trim_end().strip_prefix('$').unwrap().parse().unwrap_or_else(|_| {
                        panic!("round {round}: acknowledged key {} lost", String::from_utf8_lossy(k))
                    });
                let mut body = vec![0u8; len + 2];
                r.read_exact(&mut body).unwrap();
                let got = version(&body[..len]);
                assert!(
                    got >= model[*k],
                    "round {round}: key {} went back from {:?} to {got:?}",
                    String::from_utf8_lossy(k),
                    model[*k]
                );
            }
        }
        // Every value writer 2 ever wrote had a time to live: whichever
        // survived, it kept it.
        let expiring: Vec<&Vec<u8>> = model.keys().filter(|k| k.starts_with(b"w2-")).collect();
        for chunk in expiring.chunks(256) {
            let req: Vec<u8> = chunk.iter().flat_map(|k| resp(&[b"TTL", k])).collect();
            c.write_all(&req).unwrap();
            for k in chunk {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                let ttl: i64 = line.trim_end().strip_prefix(':').unwrap().parse().unwrap();
                assert!((1..=100_000).contains(&ttl), "round {round}: {} has TTL {ttl}", String::from_utf8_lossy(k));
            }
        }
        drop((c, r));
        let addr = p.addr;
        let writers: Vec<_> = (0..3).map(|w| std::thread::spawn(move || writer(addr, w, round))).collect();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(50 + seed % 150));
        p.child.kill().unwrap();
        p.child.wait().unwrap();
        for w in writers {
            let acked = w.join().unwrap();
            total_acked += acked.len();
            model.extend(acked);
        }
    }
    assert!(total_acked > 1000, "too little load: {total_acked} acknowledged");
    assert!(model.keys().any(|k| k.starts_with(b"w2-")), "no expiring SET was acknowledged");
    let (ok, out) = cli(&["check", pool.to_str().unwrap()]);
    assert!(ok, "{out}");
}

/// `daxkv serve --verify` serves a sound pool, and refuses to start on a
/// damaged one (a record whose value byte was flipped after a clean close),
/// saying what the check found, without writing to it.
#[test]
fn serve_verify_refuses_a_damaged_pool() {
    let pool = pool_path("verify");
    let _c = Cleanup(vec![pool.clone()]);
    let ps = pool.to_str().unwrap();
    assert!(cli(&["create", ps, "--size", "64M"]).0);
    assert!(cli(&["set", ps, "some-key", "some value"]).0);
    {
        let mut p = serve(&pool, &["--verify"]);
        let mut c = redis::Client::open(format!("redis://{}/", p.addr)).unwrap().get_connection().unwrap();
        let v: String = redis::cmd("GET").arg("some-key").query(&mut c).unwrap();
        assert_eq!(v, "some value");
        signal(&p.child, "TERM");
        assert!(wait(&mut p.child, Duration::from_secs(20)).success());
    }
    assert!(opened_clean(&pool));
    // The value's last byte, found by its bytes in the file.
    let mut b = std::fs::read(&pool).unwrap();
    let at = b.windows(10).position(|w| w == b"some value").expect("the record is in the file") + 9;
    b[at] ^= 0x20;
    std::fs::write(&pool, &b).unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--pool", ps, "--port", "0", "--verify"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while child.try_wait().unwrap().is_none() && t.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "served a damaged pool: {err}");
    assert!(err.contains("check found") && err.contains("fails its checksum"), "{err}");
    assert_eq!(std::fs::read(&pool).unwrap(), b, "the refused start wrote to the pool");
    // `daxkv check` reports the damage with status 1 (2 is for errors).
    let o = Command::new(BIN).args(["check", ps]).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("fails its checksum") && out.contains("DAMAGED: 1 problem\n"), "{out}");
}
