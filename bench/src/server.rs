//! `daxkv-bench server`: `daxkv serve` (pool on /dev/shm, `pmem` forced)
//! against `redis-server` with `appendonly yes` + `appendfsync always` (its
//! AOF on /dev/shm too), both on loopback, both driven by `redis-benchmark`
//! in the same run, reported side by side.

use crate::report::Row;
use crate::row;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Options of `daxkv-bench server`.
#[derive(clap::Args, Debug, Clone)]
pub struct ServerArgs {
    /// Requests per redis-benchmark run.
    #[arg(long, default_value_t = 1_000_000)]
    pub requests: u64,
    /// Key space (`redis-benchmark -r`).
    #[arg(long, default_value_t = 1_000_000)]
    pub keyspace: u64,
    /// Value size in bytes (`-d`).
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,
    /// Parallel clients (`-c`).
    #[arg(long, default_value_t = 50)]
    pub clients: usize,
    /// Pipeline depths to run (`-P`), e.g. `1,16`.
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    pub pipeline: Vec<usize>,
    /// redis-benchmark tests (`-t`).
    #[arg(long, default_value = "set,get")]
    pub tests: String,
    /// Servers to run: daxkv, redis or both.
    #[arg(long, value_delimiter = ',', default_value = "daxkv,redis")]
    pub engine: Vec<String>,
    /// The daxkv binary (default: `daxkv` beside this program, else on PATH;
    /// build it with `cargo build --release -p daxkv-server`).
    #[arg(long)]
    pub daxkv_bin: Option<PathBuf>,
    /// daxkv persistence backend for the pool.
    #[arg(long, default_value = "pmem")]
    pub persistence: String,
    /// daxkv pool size.
    #[arg(long, default_value = "2G")]
    pub pool_size: String,
    /// Port for daxkv serve.
    #[arg(long, default_value_t = 6411)]
    pub daxkv_port: u16,
    /// Port for redis-server.
    #[arg(long, default_value_t = 6412)]
    pub redis_port: u16,
    /// Directory for the pool and the AOF.
    #[arg(long, default_value = "/dev/shm")]
    pub dir: PathBuf,
    /// Give up on one redis-benchmark run after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

/// A server process we started; stopped with SIGTERM (clean close) when
/// dropped, killed if it does not exit.
struct Proc {
    name: &'static str,
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("{} did not stop on SIGTERM in 10 s: killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn daxkv_bin(a: &ServerArgs) -> PathBuf {
    if let Some(p) = &a.daxkv_bin {
        return p.clone();
    }
    if let Ok(me) = std::env::current_exe()
        && let Some(dir) = me.parent()
    {
        let p = dir.join("daxkv");
        if p.exists() {
            return p;
        }
    }
    PathBuf::from("daxkv")
}

/// PING over RESP until PONG, up to 30 s.
fn wait_ready(port: u16, p: &mut Proc) -> Result<(), String> {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(30) {
        if let Ok(Some(st)) = p.child.try_wait() {
            return Err(format!("{} exited at start: {st}", p.name));
        }
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 16];
            if s.write_all(b"*1\r\n$4\r\nPING\r\n").is_ok()
                && let Ok(n) = s.read(&mut buf)
                && buf[..n].starts_with(b"+PONG")
            {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("{} did not answer PING on port {port} in 30 s", p.name))
}

fn spawn(name: &'static str, cmd: &mut Command, log: &Path) -> Result<Proc, String> {
    let f = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let f2 = f.try_clone().map_err(|e| e.to_string())?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(f))
        .stderr(Stdio::from(f2))
        .spawn()
        .map_err(|e| format!("cannot start {name} ({:?}): {e}", cmd.get_program()))?;
    Ok(Proc { name, child })
}

/// CPU time (user + system, all threads) a process has used so far, in
/// seconds, from /proc/PID/stat; `None` if it cannot be read.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(cpu_ticks(&stat)? as f64 / clock_ticks_per_second())
}

/// utime + stime from a /proc/PID/stat line. The fields after the command
/// name (which may hold spaces and parentheses, and ends at the last ')'):
/// state is field 3, utime 14, stime 15.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// The unit of /proc's CPU times (`getconf CLK_TCK`; 100 on Linux).
fn clock_ticks_per_second() -> f64 {
    static HZ: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *HZ.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<f64>().ok())
            .filter(|&hz| hz > 0.0)
            .unwrap_or(100.0)
    })
}

/// redis-benchmark's CSV lines: (test, [(field, value)]).
type Csv = Vec<(String, Vec<(String, f64)>)>;

/// One redis-benchmark run of `tests`; returns its CSV lines.
fn redis_benchmark(a: &ServerArgs, tests: &str, port: u16, pipeline: usize) -> Result<Csv, String> {
    let mut child = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", tests, "--csv"])
        .args(["-n", &a.requests.to_string(), "-r", &a.keyspace.to_string()])
        .args(["-d", &a.value_size.to_string(), "-c", &a.clients.to_string(), "-P", &pipeline.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run redis-benchmark (apt-get install redis-tools): {e}"))?;
    let mut out = String::new();
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let t = Instant::now();
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if t.elapsed() > Duration::from_secs(a.timeout) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("redis-benchmark on port {port} took more than {} s: stopped", a.timeout));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = reader.join().map_err(|_| "reader thread".to_string())?;
    parse_csv(&out)
}

fn parse_csv(out: &str) -> Result<Csv, String> {
    let unq = |s: &str| s.trim().trim_matches('"').to_string();
    let mut lines = out.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<String> = lines.next().ok_or("redis-benchmark printed nothing")?.split(',').map(unq).collect();
    if header.first().map(String::as_str) != Some("test") {
        return Err(format!("unexpected redis-benchmark CSV header: {header:?}"));
    }
    let mut res = Vec::new();
    for l in lines {
        let f: Vec<String> = l.split(',').map(unq).collect();
        let vals = header.iter().zip(&f).skip(1).filter_map(|(h, v)| Some((h.clone(), v.parse().ok()?))).collect();
        res.push((f[0].to_lowercase(), vals));
    }
    Ok(res)
}

/// Run both servers and redis-benchmark against each.
pub fn run(a: &ServerArgs) -> (Vec<Row>, Vec<(String, bool)>) {
    let dir = a.dir.join(format!("daxkv-bench-server-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench dir");
    let mut rows = Vec::new();
    let mut checks = Vec::new();
    let mut servers: Vec<(&'static str, String, u16, Proc)> = Vec::new();
    let want = |e: &str| a.engine.iter().any(|x| x == e || x == "all" || x == "both");
    let started = (|| -> Result<(), String> {
        if want("daxkv") {
            let bin = daxkv_bin(a);
            let mut c = Command::new(&bin);
            c.arg("serve").arg("--pool").arg(dir.join("bench.pool"));
            c.args(["--size", &a.pool_size, "--persistence", &a.persistence, "--port", &a.daxkv_port.to_string()]);
            c.args(["--bind", "127.0.0.1"]);
            let mut p = spawn("daxkv serve", &mut c, &dir.join("daxkv.log")).map_err(|e| {
                format!("{e}; build it with `cargo build --release -p daxkv-server` or pass --daxkv-bin")
            })?;
            wait_ready(a.daxkv_port, &mut p)?;
            eprintln!(
                "daxkv serve: {} on 127.0.0.1:{}, pool {} ({})",
                bin.display(),
                a.daxkv_port,
                dir.join("bench.pool").display(),
                a.persistence
            );
            servers.push(("daxkv", a.persistence.clone(), a.daxkv_port, p));
        }
        if want("redis") {
            let mut c = Command::new("redis-server");
            c.args(["--port", &a.redis_port.to_string(), "--bind", "127.0.0.1", "--save", ""]);
            c.args(["--appendonly", "yes", "--appendfsync", "always", "--daemonize", "no"]);
            c.arg("--dir").arg(&dir);
            let mut p = spawn("redis-server", &mut c, &dir.join("redis.log"))
                .map_err(|e| format!("{e} (apt-get install redis-server)"))?;
            wait_ready(a.redis_port, &mut p)?;
            eprintln!(
                "redis-server: 127.0.0.1:{}, appendonly yes, appendfsync always, AOF in {}",
                a.redis_port,
                dir.display()
            );
            servers.push(("redis", "aof-always".into(), a.redis_port, p));
        }
        Ok(())
    })();
    if let Err(e) = started {
        eprintln!("daxkv-bench server: {e}");
        drop(servers);
        let _ = std::fs::remove_dir_all(&dir);
        std::process::exit(1);
    }
    let mut figures = std::collections::HashMap::new();
    let mut cpu = std::collections::HashMap::new();
    // One test per redis-benchmark run, so that each server's CPU time can
    // be charged to it.
    for &p in &a.pipeline {
        for test in a.tests.split(',') {
            for (name, backend, port, proc) in &servers {
                let pb = ProgressBar::new_spinner();
                pb.set_style(ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("template"));
                pb.set_message(format!("redis-benchmark -t {test} -P {p} against {name}"));
                pb.enable_steady_tick(Duration::from_millis(200));
                let before = cpu_seconds(proc.child.id());
                let res = redis_benchmark(a, test, *port, p);
                let used = before.zip(cpu_seconds(proc.child.id())).map(|(b, e)| e - b);
                pb.finish_and_clear();
                match res {
                    Ok(lines) => {
                        for (test, vals) in lines {
                            let get = |k: &str| vals.iter().find(|(h, _)| h == k).map(|(_, v)| *v);
                            let ms = |k: &str| get(k).map(|v| (v * 1e6).round() as u64);
                            let rps = get("rps").unwrap_or(f64::NAN);
                            figures.insert((name.to_string(), test.clone(), p), rps);
                            let mut r = row! {"bench": "server", "case": test, "engine": *name, "backend": backend.clone(),
                            "clients": a.clients, "pipeline": p, "value_size": a.value_size, "keys": a.keyspace,
                            "ops_per_sec": rps};
                            // The server's own CPU time per request: what it
                            // costs, apart from how fast the client drives it.
                            if let Some(u) = used {
                                let us = u * 1e6 / a.requests as f64;
                                cpu.insert((name.to_string(), test.clone(), p), us);
                                r.insert("server_cpu_us_per_request".into(), serde_json::json!(us));
                            }
                            for (k, f) in [
                                ("p50_ns", "p50_latency_ms"),
                                ("p99_ns", "p99_latency_ms"),
                                ("max_ns", "max_latency_ms"),
                            ] {
                                if let Some(v) = ms(f) {
                                    r.insert(k.into(), serde_json::json!(v));
                                }
                            }
                            rows.push(r);
                        }
                    }
                    Err(e) => eprintln!("daxkv-bench server: {name}, -t {test} -P {p}: {e}"),
                }
            }
        }
    }
    drop(servers);
    let _ = std::fs::remove_dir_all(&dir);
    for &p in &a.pipeline {
        for test in a.tests.split(',') {
            let f = |n: &str| figures.get(&(n.to_string(), test.to_lowercase(), p)).copied();
            if let (Some(d), Some(r)) = (f("daxkv"), f("redis")) {
                let mut row = row! {"bench": "server", "case": test.to_lowercase(), "engine": "daxkv", "peer": "redis",
                "pipeline": p, "ratio": d / r};
                let c = |n: &str| cpu.get(&(n.to_string(), test.to_lowercase(), p)).copied();
                if let (Some(dc), Some(rc)) = (c("daxkv"), c("redis")) {
                    row.insert("server_cpu_ratio".into(), serde_json::json!(dc / rc));
                }
                rows.push(row);
                if test.eq_ignore_ascii_case("set") {
                    checks.push((
                        format!(
                            "SET -P {p}: daxkv / redis (appendfsync always) = {:.2}x (DESIGN: daxkv beats it, >= 1x)",
                            d / r
                        ),
                        d >= r,
                    ));
                }
            }
        }
    }
    (rows, checks)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_cpu_time_from_proc_stat() {
        let line = "4242 (daxkv (x) serve) S 1 4242 4242 0 -1 4194560 900 0 0 0 731 265 0 0 20 0 3 0 1234 5678 90";
        assert_eq!(super::cpu_ticks(line), Some(731 + 265));
        assert_eq!(super::cpu_ticks("4242 (short) S 1 2"), None);
        assert!(super::cpu_seconds(std::process::id()).is_some());
    }

    #[test]
    fn parses_redis_benchmark_csv() {
        let out = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"\n\"SET\",\"12345.68\",\"3.9\",\"0.5\",\"3.8\",\"5.0\",\"6.1\",\"12.3\"\n\"GET\",\"20000.00\",\"2.0\",\"0.1\",\"1.9\",\"2.5\",\"3.0\",\"4.0\"\n";
        let r = super::parse_csv(out).expect("parse");
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].0, "set");
        assert_eq!(r[0].1[0], ("rps".to_string(), 12345.68));
        assert_eq!(r[1].1.iter().find(|x| x.0 == "p99_latency_ms").map(|x| x.1), Some(3.0));
    }
}
