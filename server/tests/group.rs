//! Group commit across connections: the blind writes of every connection an
//! event loop serves in one round go to the store as one commit, replies
//! leave only after it, reads see the pending writes, and a failed commit
//! turns exactly the replies that depended on it into errors.

mod common;

use common::{Raw, Server, pool_path, resp};
use daxkv::{Options, Store};
use daxkv_server::Config;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;

/// One reply, simplified: `Ok(text or value)` or `Err(error line)`.
fn reply(r: &mut BufReader<TcpStream>) -> Result<Option<Vec<u8>>, String> {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let line = line.trim_end();
    match line.as_bytes().first() {
        Some(b'+') | Some(b':') => Ok(Some(line.as_bytes()[1..].to_vec())),
        Some(b'-') => Err(line[1..].to_string()),
        Some(b'$') if line == "$-1" => Ok(None),
        Some(b'$') => {
            let n: usize = line[1..].parse().unwrap();
            let mut b = vec![0; n + 2];
            r.read_exact(&mut b).unwrap();
            b.truncate(n);
            Ok(Some(b))
        }
        _ => panic!("unexpected reply line {line:?}"),
    }
}

fn stat(c: &mut Raw, name: &str) -> u64 {
    c.send(&resp(&[b"INFO", b"stats"]));
    let mut r = BufReader::new(c.0.try_clone().unwrap());
    let text = String::from_utf8(reply(&mut r).unwrap().unwrap()).unwrap();
    text.lines().find_map(|l| l.strip_prefix(&format!("{name}:"))).unwrap().trim().parse().unwrap()
}

#[test]
fn a_2000_set_pipeline_on_an_empty_store_lands_in_few_batches() {
    let s = Server::with(Config { batch_ops: 4096, ..Config::default() });
    let mut c = Raw::connect(s.addr);
    let mut req = Vec::new();
    for i in 0..2000 {
        req.extend_from_slice(&resp(&[b"SET", format!("k{i:05}").as_bytes(), b"x"]));
    }
    c.send(&req);
    let mut r = BufReader::new(c.0.try_clone().unwrap());
    for _ in 0..2000 {
        assert_eq!(reply(&mut r), Ok(Some(b"OK".to_vec())));
    }
    assert_eq!(s.store().len(), 2000);
    let batches = stat(&mut c, "daxkv_write_batches");
    assert!(batches <= 10, "2000 pipelined SETs took {batches} commits");
    assert_eq!(stat(&mut c, "daxkv_batched_writes"), 2000);
    assert!(s.store().check().unwrap().is_ok());
}

#[test]
fn connections_share_commits_and_read_their_own_writes() {
    let s = Server::with(Config { threads: 1, ..Config::default() });
    let n = 300;
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let addr = s.addr;
            std::thread::spawn(move || {
                let mut c = Raw::connect(addr);
                let mut r = BufReader::new(c.0.try_clone().unwrap());
                for round in 0..n / 10 {
                    let mut req = Vec::new();
                    for i in 0..10 {
                        let k = format!("c{t}-{}", round * 10 + i);
                        req.extend_from_slice(&resp(&[b"SET", k.as_bytes(), k.as_bytes()]));
                        req.extend_from_slice(&resp(&[b"GET", k.as_bytes()]));
                    }
                    req.extend_from_slice(&resp(&[b"INCR", format!("n{t}").as_bytes()]));
                    c.send(&req);
                    for i in 0..10 {
                        let k = format!("c{t}-{}", round * 10 + i);
                        assert_eq!(reply(&mut r), Ok(Some(b"OK".to_vec())));
                        assert_eq!(reply(&mut r), Ok(Some(k.into_bytes())));
                    }
                    assert_eq!(reply(&mut r), Ok(Some((round + 1).to_string().into_bytes())));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(s.store().len(), 8 * n as u64 + 8);
    let mut c = Raw::connect(s.addr);
    assert_eq!(stat(&mut c, "daxkv_batched_writes"), 8 * n as u64);
    assert_eq!(stat(&mut c, "keyspace_hits"), 8 * n as u64);
    c.send(&resp(&[b"GET", b"nope"]));
    let mut r = BufReader::new(c.0.try_clone().unwrap());
    assert_eq!(reply(&mut r), Ok(None));
    assert_eq!(stat(&mut c, "keyspace_misses"), 1);
}

/// Fill a small pool through pipelines from several clients until commits
/// fail: every SET answered OK is in the store, every SET answered with an
/// error is not, and a GET of a key whose write was pending in a failed
/// commit answers the error rather than the value that never became durable.
#[test]
fn a_failed_commit_answers_errors_to_exactly_its_commands() {
    let path = pool_path("full");
    Store::create(&path, &Options::new().pool_size(4 << 20)).unwrap().close().unwrap();
    let s = Server::on(path, Config { threads: 1, batch_ops: 4096, ..Config::default() });
    let value = vec![b'v'; 2000];
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (addr, value) = (s.addr, value.clone());
            std::thread::spawn(move || {
                let mut c = Raw::connect(addr);
                let mut r = BufReader::new(c.0.try_clone().unwrap());
                let (mut ok, mut failed) = (Vec::new(), Vec::new());
                for round in 0..200 {
                    let keys: Vec<String> = (0..20).map(|i| format!("f{t}-{round}-{i}")).collect();
                    let mut req = Vec::new();
                    for k in &keys {
                        req.extend_from_slice(&resp(&[b"SET", k.as_bytes(), &value]));
                        req.extend_from_slice(&resp(&[b"GET", k.as_bytes()]));
                    }
                    c.send(&req);
                    for k in keys {
                        let set = reply(&mut r);
                        let get = reply(&mut r);
                        match set {
                            Ok(v) => {
                                assert_eq!(v, Some(b"OK".to_vec()));
                                assert_eq!(get, Ok(Some(value.clone())), "{k}");
                                ok.push(k);
                            }
                            Err(e) => {
                                assert!(e.starts_with("OOM"), "{e}");
                                assert!(get.is_err(), "GET {k} after a failed SET answered {get:?}");
                                failed.push(k);
                            }
                        }
                    }
                    if failed.len() > 100 {
                        break;
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    let (mut ok, mut failed) = (Vec::new(), Vec::new());
    for t in threads {
        let (o, f) = t.join().unwrap();
        ok.extend(o);
        failed.extend(f);
    }
    assert!(!ok.is_empty() && !failed.is_empty(), "{} ok, {} failed", ok.len(), failed.len());
    for k in &ok {
        assert_eq!(s.store().get(k.as_bytes()).unwrap(), Some(value.clone()), "{k}");
    }
    for k in &failed {
        assert_eq!(s.store().get(k.as_bytes()).unwrap(), None, "{k}");
    }
    assert!(s.store().check().unwrap().is_ok());
}
