//! `daxkv`: the command-line tool and server.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use daxkv::{Options, PersistOptions, Persistence, PoolError, Region, RegionOptions, Store};
use daxkv_server::{Config, Shutdown, run};
use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "daxkv",
    version,
    about = "daxkv: a persistent key-value store for persistent memory",
    after_help = "Exit status: 0 on success, 1 for a key `get` did not find or a pool `check` or `salvage` found damaged, \
                  2 on an error (the pool could not be opened, is locked, bad arguments, ...)."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// Where and how to open a pool.
#[derive(clap::Args, Clone)]
struct PoolArgs {
    /// Size of the pool when it is created (bytes, or with K, M, G, T;
    /// default 1G). `serve` also grows an existing smaller pool to it.
    #[arg(long, value_parser = parse_size)]
    size: Option<u64>,
    /// auto, pmem, eadr, msync or volatile (default: DAXKV_PERSISTENCE or auto).
    #[arg(long)]
    persistence: Option<Persistence>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve a pool over the Redis protocol (RESP2/RESP3).
    Serve {
        /// Pool file or DAX device; created if missing.
        #[arg(long, default_value = "daxkv.pool")]
        pool: PathBuf,
        #[command(flatten)]
        pool_args: PoolArgs,
        /// Address to listen on (repeat for several).
        #[arg(long, default_value = "127.0.0.1")]
        bind: Vec<IpAddr>,
        /// TCP port (0: any free port, printed at start).
        #[arg(long, default_value_t = 6379)]
        port: u16,
        /// Event loops (default: one per core).
        #[arg(long)]
        threads: Option<usize>,
        /// Password that clients must give with AUTH.
        #[arg(long)]
        requirepass: Option<String>,
        /// When bound beyond loopback without a password, refuse clients
        /// that are not on loopback (yes/no).
        #[arg(long, default_value = "yes", value_parser = parse_yes_no)]
        protected_mode: bool,
        /// Most clients at once.
        #[arg(long, default_value_t = 10000)]
        max_clients: usize,
        /// Largest bulk string in a request (bytes, or with K, M, G).
        #[arg(long, value_parser = parse_size, default_value = "64M")]
        max_bulk_len: u64,
        /// Most arguments in one request.
        #[arg(long, default_value_t = 1024 * 1024)]
        max_multibulk_len: usize,
        /// Largest inline request (bytes).
        #[arg(long, value_parser = parse_size, default_value = "64K")]
        max_inline_len: u64,
        /// Most unread reply bytes per client before it is disconnected.
        #[arg(long, value_parser = parse_size, default_value = "512M")]
        max_output_buffer: u64,
        /// Close clients idle for this many seconds (0: never).
        #[arg(long, default_value_t = 0)]
        timeout: u64,
        /// Commit an event loop's pending writes once this many are queued,
        /// even in the middle of a round (group commit size cap).
        #[arg(long, default_value_t = daxkv_server::config::DEFAULT_BATCH_OPS)]
        batch_ops: usize,
        /// Check the whole pool before serving it and refuse a damaged one
        /// (reads every leaf and record: about 0.1-0.2 s per million keys).
        #[arg(long)]
        verify: bool,
    },
    /// Create a new pool.
    Create {
        /// Pool file or DAX device.
        path: PathBuf,
        #[command(flatten)]
        pool_args: PoolArgs,
    },
    /// Show a pool's figures.
    Info {
        /// Pool file.
        path: PathBuf,
    },
    /// Check a pool's consistency; exit 1 if it is damaged (2: it could
    /// not be checked).
    Check {
        /// Pool file.
        path: PathBuf,
    },
    /// Grow a pool in place to SIZE bytes; every key stays. The pool must
    /// not be in use. A crash during the grow leaves the pool at its old
    /// size or its new one, never damaged; growing again finishes the job.
    Grow {
        /// Pool file.
        path: PathBuf,
        /// The new size (bytes, or with K, M, G, T).
        #[arg(long, value_parser = parse_size)]
        size: u64,
        /// auto, pmem, eadr, msync or volatile (default: DAXKV_PERSISTENCE or auto).
        #[arg(long)]
        persistence: Option<Persistence>,
    },
    /// Print a key's value (exit 1 if absent, 2 on an error).
    Get {
        /// Pool file.
        path: PathBuf,
        /// The key.
        key: String,
    },
    /// Set a key.
    Set {
        /// Pool file.
        path: PathBuf,
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Delete keys; prints how many existed.
    Del {
        /// Pool file.
        path: PathBuf,
        /// The keys.
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// List keys (with a prefix) and their values, one `key<TAB>value` a
    /// line, non-printable bytes escaped as \xHH.
    Scan {
        /// Pool file.
        path: PathBuf,
        /// Only keys starting with this.
        #[arg(default_value = "")]
        prefix: String,
        /// Stop after this many.
        #[arg(long)]
        limit: Option<usize>,
        /// Keys only.
        #[arg(long)]
        keys_only: bool,
    },
    /// Write every pair to FILE (`-`: stdout) in the portable dump format.
    Dump {
        /// Pool file.
        path: PathBuf,
        /// Output file.
        file: PathBuf,
    },
    /// Write every intact pair of a damaged pool to FILE (`-`: stdout) in
    /// the dump format, without writing to the pool; reports what it left
    /// out and exits 1 if anything (0: the pool was sound).
    Salvage {
        /// Pool file.
        path: PathBuf,
        /// Output file.
        file: PathBuf,
    },
    /// Load a dump (FILE, `-`: stdin) into a pool (created if missing).
    Load {
        /// Pool file.
        path: PathBuf,
        /// Dump file.
        file: PathBuf,
        #[command(flatten)]
        pool_args: PoolArgs,
    },
    /// Open (creating if asked) a pool file and report which persistence
    /// backend daxkv picks for it, and why.
    Probe {
        /// Pool file or DAX device.
        path: PathBuf,
        /// Create the file with this many bytes if it does not exist.
        #[arg(long)]
        create: Option<u64>,
        /// auto, pmem, eadr, msync or volatile (default: DAXKV_PERSISTENCE or auto).
        #[arg(long)]
        persistence: Option<Persistence>,
    },
}

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                'B' => 1,
                _ => return Err(format!("unknown size suffix in {s:?}")),
            };
            (&s[..i], m)
        }
        _ => (s, 1),
    };
    let n: u64 = num.parse().map_err(|_| format!("not a size: {s:?}"))?;
    n.checked_mul(mult).ok_or_else(|| format!("size too large: {s:?}"))
}

fn parse_yes_no(s: &str) -> Result<bool, String> {
    match s {
        "yes" | "true" | "on" => Ok(true),
        "no" | "false" | "off" => Ok(false),
        _ => Err(format!("expected yes or no, not {s:?}")),
    }
}

/// A new pool's size when `--size` is not given.
const DEFAULT_SIZE: u64 = 1 << 30;

fn options(args: &PoolArgs, create: bool) -> Options {
    let mut o = Options::new().pool_size(args.size.unwrap_or(DEFAULT_SIZE)).create_if_missing(create);
    if let Some(p) = args.persistence {
        o = o.persistence(p);
    }
    o
}

fn open(path: &Path) -> Result<Store, String> {
    Store::open(path, &Options::new()).map_err(|e| pool_error(path, &e))
}

/// A pool error as one line that names the pool once (most errors name
/// it already), with the way out when the pool is damaged.
fn pool_error(path: &Path, e: &PoolError) -> String {
    let (m, p) = (e.to_string(), path.display().to_string());
    let m = if m.starts_with(&p) { m } else { format!("{p}: {m}") };
    if damaged(e) {
        format!("{m}\n(`daxkv salvage {p} FILE` writes every intact pair to a dump that `daxkv load` reads)")
    } else {
        m
    }
}

/// Whether open refused the pool for damage past its superblocks (which
/// `salvage` can read round).
fn damaged(e: &PoolError) -> bool {
    matches!(e, PoolError::Corrupt { .. } | PoolError::Damaged { .. } | PoolError::Heap(_) | PoolError::Log(_))
}

/// Refuse an output file that is the pool itself (creating it would
/// truncate the pool before a byte of it is read).
fn not_the_pool(file: &Path, pool: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(file), std::fs::metadata(pool)) {
        (Ok(f), Ok(p)) if f.dev() == p.dev() && f.ino() == p.ino() => {
            Err(format!("{}: the output file is the pool itself", file.display()))
        }
        _ => Ok(()),
    }
}

/// Non-printable bytes as \xHH, for one-line output.
fn escape(b: &[u8]) -> String {
    let mut s = String::new();
    for &c in b {
        if c.is_ascii_graphic() && c != b'\\' || c == b' ' {
            s.push(c as char);
        } else {
            s.push_str(&format!("\\x{c:02x}"));
        }
    }
    s
}

fn main() -> ExitCode {
    let started = Instant::now();
    let cli = Cli::parse();
    match exec(cli.cmd, started) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("daxkv: {e}");
            ExitCode::from(2)
        }
    }
}

/// `started`: when the process reached `main` (serve reports how long it
/// took to be ready from there).
fn exec(cmd: Cmd, started: Instant) -> Result<ExitCode, String> {
    match cmd {
        Cmd::Serve {
            pool,
            pool_args,
            bind,
            port,
            threads,
            requirepass,
            protected_mode,
            max_clients,
            max_bulk_len,
            max_multibulk_len,
            max_inline_len,
            max_output_buffer,
            timeout,
            batch_ops,
            verify,
        } => {
            let t0 = Instant::now();
            let opts = options(&pool_args, true).verify(verify);
            let mut store = Store::open(&pool, &opts).map_err(|e| pool_error(&pool, &e))?;
            // An explicit --size above the pool's grows it in place.
            let have = store.stats().pool_size;
            match pool_args.size {
                Some(size) if size > have => {
                    store.close().map_err(|e| format!("{}: {e}", pool.display()))?;
                    // A grow refused (too small a step, no room on the file
                    // system...) leaves the pool as it was: serve it anyway.
                    match Store::grow(&pool, size, &opts) {
                        Ok(g) => println!("daxkv: pool grown from {} to {} bytes", g.old_size, g.new_size),
                        Err(e) => println!("daxkv: --size {size} not applied: {}", pool_error(&pool, &e)),
                    }
                    store = Store::open(&pool, &opts).map_err(|e| pool_error(&pool, &e))?;
                }
                Some(size) if size < have => {
                    println!("daxkv: --size {size} ignored: the pool is {have} bytes, and a pool cannot shrink");
                }
                _ => {}
            }
            let st = store.stats();
            println!(
                "daxkv: pool {} ({} keys, {}, opened in {:.1} ms)",
                pool.display(),
                st.keys,
                match (st.opened_clean, st.recoveries) {
                    (true, _) => "clean",
                    (false, 0) => "created",
                    (false, _) => "recovered",
                },
                t0.elapsed().as_secs_f64() * 1e3
            );
            println!("daxkv: {}", store.persist_info());
            let mut listeners = Vec::new();
            let mut addrs = Vec::new();
            for ip in &bind {
                let l = TcpListener::bind(SocketAddr::new(*ip, port)).map_err(|e| format!("bind {ip}:{port}: {e}"))?;
                addrs.push(l.local_addr().map_err(|e| e.to_string())?);
                listeners.push(l);
            }
            let beyond_loopback = bind.iter().any(|ip| !ip.is_loopback());
            let mut config = Config {
                requirepass: requirepass.map(String::into_bytes),
                protected_mode: protected_mode && beyond_loopback,
                max_clients,
                max_output_buffer: usize::try_from(max_output_buffer).unwrap_or(usize::MAX),
                timeout: (timeout > 0).then(|| Duration::from_secs(timeout)),
                bind: bind.iter().map(ToString::to_string).collect::<Vec<_>>().join(" "),
                port: addrs[0].port(),
                batch_ops: batch_ops.max(1),
                ..Config::default()
            };
            if let Some(t) = threads {
                config.threads = t.max(1);
            }
            config.limits.max_bulk_len = usize::try_from(max_bulk_len).unwrap_or(usize::MAX);
            config.limits.max_multibulk_len = max_multibulk_len;
            config.limits.max_inline_len = usize::try_from(max_inline_len).unwrap_or(usize::MAX);
            if beyond_loopback && config.requirepass.is_none() {
                println!(
                    "daxkv: warning: bound beyond loopback without --requirepass{}",
                    if config.protected_mode { ": protected mode refuses non-loopback clients" } else { "" }
                );
            }
            let shutdown = Shutdown::new();
            let sig = shutdown.clone();
            let mut signals =
                signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT])
                    .map_err(|e| format!("signals: {e}"))?;
            std::thread::spawn(move || {
                if let Some(s) = signals.forever().next() {
                    eprintln!("daxkv: signal {s}: shutting down");
                    sig.trigger();
                }
            });
            let list = addrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
            println!(
                "daxkv: ready on {list} ({} event loop{}, {:.1} ms after start)",
                config.threads,
                if config.threads == 1 { "" } else { "s" },
                started.elapsed().as_secs_f64() * 1e3
            );
            let _ = std::io::stdout().flush();
            let store = Arc::new(store);
            run(listeners, store.clone(), config, shutdown).map_err(|e| format!("server: {e}"))?;
            match Arc::try_unwrap(store) {
                Ok(s) => s.close().map_err(|e| format!("close: {e}"))?,
                Err(_) => return Err("store still in use at exit; not closed cleanly".into()),
            }
            // stdout may be gone by now (a supervisor that stopped reading).
            let _ = writeln!(std::io::stdout(), "daxkv: pool closed cleanly");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Create { path, pool_args } => {
            let s = Store::create(&path, &options(&pool_args, true)).map_err(|e| pool_error(&path, &e))?;
            println!("{}: created, {} bytes", path.display(), s.stats().pool_size);
            println!("{}", s.persist_info());
            s.close().map_err(|e| e.to_string())?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Info { path } => {
            let s = open(&path)?;
            let st = s.stats();
            println!("pool:          {}", path.display());
            let backend = s.persist_info().to_string();
            println!("persistence:   {}", backend.strip_prefix("persistence ").unwrap_or(&backend));
            println!("keys:          {}", st.keys);
            println!("with expiry:   {} (expired ones not yet purged included)", st.keys_with_expiry);
            println!("bytes:         {} (keys + values)", st.bytes);
            println!("pool size:     {}", st.pool_size);
            println!(
                "heap:          {} bytes: {} live, {} free",
                st.heap_bytes, st.heap_live_bytes, st.heap_free_bytes
            );
            println!("leaves:        {}", st.leaves);
            println!("opened:        {}", if st.opened_clean { "clean" } else { "after recovery" });
            println!("recoveries:    {}", st.recoveries);
            s.close().map_err(|e| e.to_string())?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Grow { path, size, persistence } => {
            let mut o = Options::new();
            if let Some(p) = persistence {
                o = o.persistence(p);
            }
            let g = Store::grow(&path, size, &o).map_err(|e| pool_error(&path, &e))?;
            if g.new_size == g.old_size && g.new_heap_bytes == g.old_heap_bytes {
                println!("{}: already {} bytes; nothing to do", path.display(), g.new_size);
            } else {
                println!(
                    "{}: grown from {} to {} bytes; room for keys and values {} -> {} bytes",
                    path.display(),
                    g.old_size,
                    g.new_size,
                    g.old_heap_bytes,
                    g.new_heap_bytes
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Check { path } => {
            let s = match Store::open(&path, &Options::new()) {
                Ok(s) => s,
                Err(e) if damaged(&e) => {
                    println!("problem: {}", pool_error(&path, &e));
                    println!("DAMAGED: the pool cannot be opened");
                    return Ok(ExitCode::from(1));
                }
                Err(e) => return Err(pool_error(&path, &e)),
            };
            let r = s.check().map_err(|e| e.to_string())?;
            let leaves = if r.leaves == 1 { "leaf" } else { "leaves" };
            println!("{}: {} keys in {} {leaves}", path.display(), r.keys, r.leaves);
            for p in &r.problems {
                println!("problem: {p}");
            }
            let ok = r.is_ok();
            s.close().map_err(|e| e.to_string())?;
            if ok {
                println!("ok");
                Ok(ExitCode::SUCCESS)
            } else {
                let n = r.problems.len();
                println!("DAMAGED: {n} {}", if n == 1 { "problem" } else { "problems" });
                Ok(ExitCode::from(1))
            }
        }
        Cmd::Get { path, key } => {
            let s = open(&path)?;
            let v = s.get(key.as_bytes()).map_err(|e| e.to_string())?;
            s.close().map_err(|e| e.to_string())?;
            match v {
                Some(v) => {
                    let mut o = std::io::stdout().lock();
                    o.write_all(&v).and_then(|()| o.write_all(b"\n")).map_err(|e| e.to_string())?;
                    Ok(ExitCode::SUCCESS)
                }
                None => Ok(ExitCode::from(1)),
            }
        }
        Cmd::Set { path, key, value } => {
            let s = open(&path)?;
            s.put(key.as_bytes(), value.as_bytes()).map_err(|e| e.to_string())?;
            s.close().map_err(|e| e.to_string())?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Del { path, keys } => {
            let s = open(&path)?;
            let mut n = 0;
            for k in &keys {
                n += u64::from(s.delete(k.as_bytes()).map_err(|e| e.to_string())?);
            }
            s.close().map_err(|e| e.to_string())?;
            println!("{n}");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Scan { path, prefix, limit, keys_only } => {
            let s = open(&path)?;
            let mut o = std::io::BufWriter::new(std::io::stdout().lock());
            for kv in s.prefix(prefix.as_bytes()).take(limit.unwrap_or(usize::MAX)) {
                let (k, v) = kv.map_err(|e| e.to_string())?;
                let line = if keys_only { escape(&k) } else { format!("{}\t{}", escape(&k), escape(&v)) };
                writeln!(o, "{line}").map_err(|e| e.to_string())?;
            }
            drop(o);
            s.close().map_err(|e| e.to_string())?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Dump { path, file } => {
            not_the_pool(&file, &path)?;
            let s = open(&path)?;
            let n = if file.as_os_str() == "-" {
                daxkv_server::dump::dump(&s, &mut std::io::BufWriter::new(std::io::stdout().lock()))
            } else {
                let f = std::fs::File::create(&file).map_err(|e| format!("{}: {e}", file.display()))?;
                let mut w = std::io::BufWriter::new(f);
                let n = daxkv_server::dump::dump(&s, &mut w);
                n.and_then(|n| w.into_inner().map_err(|e| e.into_error())?.sync_all().map(|()| n))
            }
            .map_err(|e| format!("dump: {e}"))?;
            s.close().map_err(|e| e.to_string())?;
            eprintln!("daxkv: dumped {n} pairs");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Salvage { path, file } => {
            not_the_pool(&file, &path)?;
            let write = |w: &mut dyn Write| -> Result<(daxkv::SalvageReport, u64), String> {
                let mut out = daxkv_server::dump::Writer::new(w).map_err(|e| format!("salvage: {e}"))?;
                let rep = daxkv::salvage(&path, |k, v, at| out.push(k, v, at)).map_err(|e| match e {
                    daxkv::SalvageError::Pool(e) => pool_error(&path, &e),
                    e => e.to_string(),
                })?;
                let n = out.finish().map_err(|e| format!("salvage: {e}"))?;
                Ok((rep, n))
            };
            let (rep, n) = if file.as_os_str() == "-" {
                write(&mut std::io::BufWriter::new(std::io::stdout().lock()))?
            } else {
                let f = std::fs::File::create(&file).map_err(|e| format!("{}: {e}", file.display()))?;
                let mut w = std::io::BufWriter::new(f);
                let out = write(&mut w)?;
                w.into_inner()
                    .map_err(|e| e.into_error())
                    .and_then(|f| f.sync_all())
                    .map_err(|e| format!("salvage: {e}"))?;
                out
            };
            for n in &rep.notes {
                eprintln!("note: {n}");
            }
            for p in &rep.problems {
                eprintln!("problem: {p}");
            }
            let leaves = if rep.leaves == 1 { "leaf" } else { "leaves" };
            eprintln!("daxkv: salvaged {n} pairs from {} {leaves}", rep.leaves);
            if rep.unfinished > 0 {
                eprintln!("daxkv: {} inserts cut short by a crash (never acknowledged) left out", rep.unfinished);
            }
            if rep.expired > 0 {
                eprintln!("daxkv: {} expired keys left out", rep.expired);
            }
            if rep.is_complete() {
                Ok(ExitCode::SUCCESS)
            } else {
                let k = rep.problems.len();
                eprintln!(
                    "daxkv: DAMAGED: {k} {}; what they name is not in the dump",
                    if k == 1 { "problem" } else { "problems" }
                );
                Ok(ExitCode::from(1))
            }
        }
        Cmd::Load { path, file, pool_args } => {
            let s = Store::open(&path, &options(&pool_args, true)).map_err(|e| pool_error(&path, &e))?;
            let n = if file.as_os_str() == "-" {
                daxkv_server::dump::load(&s, &mut std::io::BufReader::new(std::io::stdin().lock()))
            } else {
                let f = std::fs::File::open(&file).map_err(|e| format!("{}: {e}", file.display()))?;
                daxkv_server::dump::load(&s, &mut std::io::BufReader::new(f))
            };
            let close = s.close();
            let n = n.map_err(|e| format!("load: {e}"))?;
            close.map_err(|e| e.to_string())?;
            eprintln!("daxkv: loaded {n} pairs");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Probe { path, create, persistence } => {
            let mut persist = PersistOptions::from_env().map_err(|e| e.to_string())?;
            if let Some(p) = persistence {
                persist.persistence = p;
            }
            let opts = RegionOptions { persist, create_size: create, min_len: 4096 };
            let r = Region::open(&path, &opts).map_err(|e| e.to_string())?;
            println!("{}: {} bytes", path.display(), r.len());
            println!("{}", r.persist_info());
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("123"), Ok(123));
        assert!(parse_size("1X").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn escapes() {
        assert_eq!(escape(b"a b\\\n\xff"), "a b\\x5c\\x0a\\xff");
    }
}
