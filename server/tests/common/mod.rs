//! A server on 127.0.0.1:0 over a pool in /dev/shm, stopped and removed on
//! drop; and raw-socket helpers.
#![allow(dead_code)]

use daxkv::{Options, Store};
use daxkv_server::{Config, Shutdown, run};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

static N: AtomicU64 = AtomicU64::new(0);

/// A unique pool path in /dev/shm.
pub fn pool_path(tag: &str) -> PathBuf {
    PathBuf::from(format!(
        "/dev/shm/daxkv-server-test-{}-{}-{}.pool",
        std::process::id(),
        tag,
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

pub struct Server {
    pub addr: SocketAddr,
    pub path: PathBuf,
    pub shutdown: Shutdown,
    handle: Option<JoinHandle<()>>,
    store: Option<Arc<Store>>,
    keep: bool,
}

impl Server {
    pub fn start() -> Server {
        Server::with(Config::default())
    }

    pub fn with(config: Config) -> Server {
        Server::on(pool_path("s"), config)
    }

    pub fn on(path: PathBuf, config: Config) -> Server {
        let opts = Options::new().pool_size(256 << 20).create_if_missing(true);
        let store = Arc::new(Store::open(&path, &opts).expect("open pool"));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = Shutdown::new();
        let (s, st) = (shutdown.clone(), store.clone());
        let handle = std::thread::spawn(move || run(vec![listener], st, config, s).unwrap());
        Server { addr, path, shutdown, handle: Some(handle), store: Some(store), keep: false }
    }

    pub fn store(&self) -> &Store {
        self.store.as_ref().unwrap()
    }

    pub fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    pub fn client(&self) -> redis::Connection {
        redis::Client::open(self.url()).unwrap().get_connection().unwrap()
    }

    /// Stop serving and close the pool cleanly; the file stays.
    pub fn stop(mut self) -> PathBuf {
        self.keep = true;
        self.halt();
        self.path.clone()
    }

    /// Wait until the server stopped by itself (SHUTDOWN); close the pool.
    pub fn wait(mut self) -> PathBuf {
        self.keep = true;
        if let Some(h) = self.handle.take() {
            h.join().unwrap();
        }
        self.halt();
        self.path.clone()
    }

    fn halt(&mut self) {
        self.shutdown.trigger();
        if let Some(h) = self.handle.take() {
            h.join().unwrap();
        }
        if let Some(s) = self.store.take() {
            match Arc::try_unwrap(s) {
                Ok(s) => s.close().unwrap(),
                Err(_) => panic!("store still shared"),
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.halt();
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A raw connection that reads with a timeout.
pub struct Raw(pub TcpStream);

impl Raw {
    pub fn connect(addr: SocketAddr) -> Raw {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        Raw(s)
    }

    pub fn send(&mut self, b: &[u8]) {
        self.0.write_all(b).unwrap();
    }

    /// Read exactly `n` bytes.
    pub fn read_n(&mut self, n: usize) -> Vec<u8> {
        let mut b = vec![0; n];
        self.0.read_exact(&mut b).unwrap();
        b
    }

    /// Send `req` and read exactly as many bytes as `want`, comparing.
    pub fn roundtrip(&mut self, req: &[u8], want: &[u8]) {
        self.send(req);
        let got = self.read_n(want.len());
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(want),
            "reply to {:?}",
            String::from_utf8_lossy(req)
        );
    }

    /// Read until the peer closes; everything it sent.
    pub fn read_to_close(&mut self) -> Vec<u8> {
        let mut v = Vec::new();
        let _ = self.0.read_to_end(&mut v);
        v
    }
}

/// A command as RESP.
pub fn resp(args: &[&[u8]]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        v.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        v.extend_from_slice(a);
        v.extend_from_slice(b"\r\n");
    }
    v
}
