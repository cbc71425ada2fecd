//! The server through a real client (the `redis` crate): every command,
//! pipelines, transactions and WATCH, binary data, large values, AUTH,
//! RESP3, restarts.

mod common;

use common::{Server, pool_path};
use daxkv::{Options, Store};
use daxkv_server::Config;
use redis::{Commands, Connection, RedisResult, Value, cmd};
use std::collections::BTreeMap;

fn q<T: redis::FromRedisValue>(c: &mut Connection, args: &[&[u8]]) -> RedisResult<T> {
    let mut command = cmd(std::str::from_utf8(args[0]).unwrap());
    for a in &args[1..] {
        command.arg(*a);
    }
    command.query(c)
}

fn err(c: &mut Connection, args: &[&[u8]]) -> String {
    let e = q::<Value>(c, args).expect_err("an error reply");
    let code = e.code().unwrap_or("").to_string();
    let detail = e.detail().unwrap_or("").to_string();
    format!("{code} {detail}").trim().to_string()
}

#[test]
fn string_commands() {
    let s = Server::start();
    let mut c = s.client();
    let _: () = c.set("a", "1").unwrap();
    assert_eq!(c.get::<_, String>("a").unwrap(), "1");
    assert_eq!(q::<Option<String>>(&mut c, &[b"SET", b"a", b"2", b"NX"]).unwrap(), None);
    assert_eq!(q::<String>(&mut c, &[b"SET", b"b", b"2", b"NX"]).unwrap(), "OK");
    assert_eq!(q::<Option<String>>(&mut c, &[b"SET", b"nx", b"2", b"XX"]).unwrap(), None);
    assert_eq!(q::<String>(&mut c, &[b"SET", b"a", b"3", b"XX"]).unwrap(), "OK");
    assert_eq!(q::<Option<String>>(&mut c, &[b"SET", b"a", b"4", b"GET"]).unwrap().as_deref(), Some("3"));
    assert_eq!(q::<Option<String>>(&mut c, &[b"SET", b"new", b"4", b"GET"]).unwrap(), None);
    assert_eq!(q::<Option<String>>(&mut c, &[b"SET", b"a", b"5", b"NX", b"GET"]).unwrap().as_deref(), Some("4"));
    assert_eq!(c.get::<_, String>("a").unwrap(), "4");
    assert_eq!(q::<String>(&mut c, &[b"SET", b"a", b"4", b"EX", b"1000"]).unwrap(), "OK");
    assert!((990..=1000).contains(&c.ttl::<_, i64>("a").unwrap()));
    assert_eq!(q::<i64>(&mut c, &[b"SETNX", b"a", b"x"]).unwrap(), 0);
    assert_eq!(q::<i64>(&mut c, &[b"SETNX", b"c", b"x"]).unwrap(), 1);
    assert_eq!(q::<Option<String>>(&mut c, &[b"GETSET", b"c", b"y"]).unwrap().as_deref(), Some("x"));
    assert_eq!(q::<Option<String>>(&mut c, &[b"GETSET", b"d", b"y"]).unwrap(), None);
    assert_eq!(q::<Option<String>>(&mut c, &[b"GETDEL", b"d"]).unwrap().as_deref(), Some("y"));
    assert_eq!(q::<Option<String>>(&mut c, &[b"GETDEL", b"d"]).unwrap(), None);
    let _: () = c.mset(&[("m1", "a"), ("m2", "b")]).unwrap();
    assert_eq!(
        c.mget::<_, Vec<Option<String>>>(&["m1", "zz", "m2"]).unwrap(),
        vec![Some("a".into()), None, Some("b".into())]
    );
    assert_eq!(q::<i64>(&mut c, &[b"MSETNX", b"m1", b"x", b"m3", b"y"]).unwrap(), 0);
    assert_eq!(c.exists::<_, i64>("m3").unwrap(), 0);
    assert_eq!(q::<i64>(&mut c, &[b"MSETNX", b"m3", b"x", b"m4", b"y"]).unwrap(), 1);
    assert_eq!(q::<i64>(&mut c, &[b"EXISTS", b"m3", b"m4", b"m3", b"none"]).unwrap(), 3);
    assert_eq!(q::<i64>(&mut c, &[b"DEL", b"m3", b"m4", b"none"]).unwrap(), 2);
    assert_eq!(q::<i64>(&mut c, &[b"UNLINK", b"m1", b"m2"]).unwrap(), 2);
    assert_eq!(q::<i64>(&mut c, &[b"INCR", b"n"]).unwrap(), 1);
    assert_eq!(q::<i64>(&mut c, &[b"INCRBY", b"n", b"41"]).unwrap(), 42);
    assert_eq!(q::<i64>(&mut c, &[b"DECR", b"n"]).unwrap(), 41);
    assert_eq!(q::<i64>(&mut c, &[b"DECRBY", b"n", b"50"]).unwrap(), -9);
    assert_eq!(err(&mut c, &[b"INCR", b"c"]), "ERR value is not an integer or out of range");
    assert_eq!(q::<i64>(&mut c, &[b"APPEND", b"ap", b"Hello"]).unwrap(), 5);
    assert_eq!(q::<i64>(&mut c, &[b"APPEND", b"ap", b" World"]).unwrap(), 11);
    assert_eq!(q::<i64>(&mut c, &[b"STRLEN", b"ap"]).unwrap(), 11);
    assert_eq!(q::<i64>(&mut c, &[b"STRLEN", b"none"]).unwrap(), 0);
    assert_eq!(q::<String>(&mut c, &[b"GETRANGE", b"ap", b"0", b"4"]).unwrap(), "Hello");
    assert_eq!(q::<String>(&mut c, &[b"GETRANGE", b"ap", b"-5", b"-1"]).unwrap(), "World");
    assert_eq!(q::<String>(&mut c, &[b"GETRANGE", b"none", b"0", b"-1"]).unwrap(), "");
    assert_eq!(q::<i64>(&mut c, &[b"SETRANGE", b"ap", b"6", b"Redis"]).unwrap(), 11);
    assert_eq!(c.get::<_, String>("ap").unwrap(), "Hello Redis");
    assert_eq!(q::<i64>(&mut c, &[b"SETRANGE", b"pad", b"3", b"x"]).unwrap(), 4);
    assert_eq!(c.get::<_, Vec<u8>>("pad").unwrap(), b"\0\0\0x");
    assert_eq!(q::<i64>(&mut c, &[b"SETRANGE", b"empty", b"3", b""]).unwrap(), 0);
    assert_eq!(c.exists::<_, i64>("empty").unwrap(), 0);
    assert_eq!(q::<String>(&mut c, &[b"TYPE", b"ap"]).unwrap(), "string");
    assert_eq!(q::<String>(&mut c, &[b"TYPE", b"none"]).unwrap(), "none");
    // The empty key cannot be stored: reads miss, writes say why.
    assert_eq!(q::<Option<String>>(&mut c, &[b"GET", b""]).unwrap(), None);
    assert_eq!(err(&mut c, &[b"SET", b"", b"x"]), "ERR empty key");
    let long = vec![b'k'; daxkv::MAX_KEY + 1];
    assert!(err(&mut c, &[b"SET", &long, b"x"]).starts_with("ERR key of 16385 bytes"));
}

#[test]
fn keyspace_commands() {
    let s = Server::start();
    let mut c = s.client();
    for i in 0..100 {
        let _: () = c.set(format!("user:{i:03}"), i).unwrap();
        let _: () = c.set(format!("item:{i:03}"), i).unwrap();
    }
    assert_eq!(q::<i64>(&mut c, &[b"DBSIZE"]).unwrap(), 200);
    let mut keys: Vec<String> = c.keys("user:*").unwrap();
    keys.sort();
    assert_eq!(keys.len(), 100);
    assert_eq!(keys[0], "user:000");
    assert_eq!(c.keys::<_, Vec<String>>("user:0[0-1]?").unwrap().len(), 20);
    assert_eq!(c.keys::<_, Vec<String>>("*:05?").unwrap().len(), 20);
    // SCAN with COUNT and MATCH visits every key once.
    let mut cursor = "0".to_string();
    let mut seen = Vec::new();
    let mut rounds = 0;
    loop {
        let (next, batch): (String, Vec<String>) =
            q(&mut c, &[b"SCAN", cursor.as_bytes(), b"MATCH", b"item:*", b"COUNT", b"7"]).unwrap();
        assert!(batch.len() <= 7);
        seen.extend(batch);
        rounds += 1;
        if next == "0" {
            break;
        }
        cursor = next;
    }
    assert!(rounds >= 200 / 7);
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 100);
    assert!(seen.iter().all(|k| k.starts_with("item:")));
    // The client's own scan iterator too.
    let all: Vec<String> = c.scan().unwrap().collect::<RedisResult<_>>().unwrap();
    assert_eq!(all.len(), 200);
    assert_eq!(q::<String>(&mut c, &[b"FLUSHDB"]).unwrap(), "OK");
    assert_eq!(q::<i64>(&mut c, &[b"DBSIZE"]).unwrap(), 0);
    let _: () = c.set("x", 1).unwrap();
    assert_eq!(q::<String>(&mut c, &[b"FLUSHALL", b"ASYNC"]).unwrap(), "OK");
    assert_eq!(s.store().len(), 0);
}

/// RENAME, COPY, TOUCH and the expiry family through the client's own
/// typed calls, checked against the store underneath.
#[test]
fn rename_copy_and_expiry_commands() {
    let s = Server::start();
    let mut c = s.client();
    let _: () = c.set("src", "v1").unwrap();
    let _: () = c.rename("src", "dst").unwrap();
    assert_eq!(s.store().get(b"src").unwrap(), None);
    assert_eq!(s.store().get(b"dst").unwrap().as_deref(), Some(&b"v1"[..]));
    assert!(c.rename::<_, _, ()>("src", "dst").is_err(), "renaming a missing key");
    let _: () = c.set("taken", "t").unwrap();
    assert_eq!(c.rename_nx::<_, _, i64>("dst", "taken").unwrap(), 0);
    assert_eq!(c.rename_nx::<_, _, i64>("dst", "free").unwrap(), 1);
    assert_eq!(q::<i64>(&mut c, &[b"COPY", b"free", b"twin"]).unwrap(), 1);
    assert_eq!(q::<i64>(&mut c, &[b"COPY", b"free", b"taken"]).unwrap(), 0);
    assert_eq!(q::<i64>(&mut c, &[b"COPY", b"free", b"taken", b"REPLACE"]).unwrap(), 1);
    assert_eq!(s.store().get(b"taken").unwrap().as_deref(), Some(&b"v1"[..]));
    assert_eq!(q::<i64>(&mut c, &[b"TOUCH", b"free", b"twin", b"none"]).unwrap(), 2);
    assert_eq!(c.ttl::<_, i64>("free").unwrap(), -1);
    assert_eq!(c.pttl::<_, i64>("none").unwrap(), -2);
    assert_eq!(c.persist::<_, i64>("free").unwrap(), 0);
    assert_eq!(c.expire::<_, i64>("free", 60).unwrap(), 1);
    assert!((50..=60).contains(&c.ttl::<_, i64>("free").unwrap()));
    assert_eq!(c.get::<_, String>("free").unwrap(), "v1", "an expiry keeps the value");
    let at = s.store().expiry(b"free").unwrap().flatten().expect("the store keeps the expiry");
    assert!(at.abs_diff(now_ms() + 60_000) < 10_000, "{at}");
    assert_eq!(c.persist::<_, i64>("free").unwrap(), 1);
    assert_eq!(s.store().expiry(b"free").unwrap(), Some(None));
    // The time left, in the unit asked for (a slow machine may lose a
    // few seconds between two commands).
    let _: () = c.set_ex("cache", "c", 100).unwrap();
    assert!((90..=100).contains(&c.ttl::<_, i64>("cache").unwrap()));
    assert!((90_000..=100_000).contains(&c.pttl::<_, i64>("cache").unwrap()));
    assert_eq!(q::<i64>(&mut c, &[b"PEXPIRE", b"cache", b"400000"]).unwrap(), 1);
    assert!((390..=400).contains(&c.ttl::<_, i64>("cache").unwrap()));
    let at: i64 = q(&mut c, &[b"PEXPIRETIME", b"cache"]).unwrap();
    assert!((at - now_ms() as i64 - 400_000).abs() < 10_000, "{at}");
    assert_eq!(c.expire::<_, i64>("none", 60).unwrap(), 0);
    assert_eq!(c.expire_at::<_, i64>("twin", 1).unwrap(), 1, "a time already past deletes");
    assert_eq!(s.store().get(b"twin").unwrap(), None);
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A key set with a short time to live is gone for every command once it
/// passes, and the background purge removes it from DBSIZE and the pool.
#[test]
fn keys_expire_and_are_purged() {
    let s = Server::start();
    let mut c = s.client();
    for i in 0..50 {
        let _: () = c.pset_ex(format!("short{i}"), "v", 200).unwrap();
    }
    let _: () = c.set_ex("long", "v", 1000).unwrap();
    let _: () = c.set("plain", "v").unwrap();
    assert_eq!(q::<i64>(&mut c, &[b"DBSIZE"]).unwrap(), 52);
    let info: String = q(&mut c, &[b"INFO", b"keyspace"]).unwrap();
    assert!(info.contains("db0:keys=52,expires=51,"), "{info}");
    std::thread::sleep(std::time::Duration::from_millis(400));
    assert_eq!(c.get::<_, Option<String>>("short7").unwrap(), None);
    assert_eq!(c.exists::<_, i64>("short8").unwrap(), 0);
    assert_eq!(c.ttl::<_, i64>("short9").unwrap(), -2);
    let keys: Vec<String> = c.keys("*").unwrap();
    assert_eq!(keys.len(), 2, "{keys:?}");
    // The purge runs every 100 ms: wait for it (a deadline, not a timing).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while q::<i64>(&mut c, &[b"DBSIZE"]).unwrap() != 2 {
        assert!(std::time::Instant::now() < deadline, "expired keys were not purged");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(s.store().len(), 2);
    assert_eq!(s.store().stats().keys_with_expiry, 1);
    let info: String = q(&mut c, &[b"INFO", b"stats"]).unwrap();
    assert!(info.contains("expired_keys:50\r\n"), "{info}");
    assert!(s.store().check().unwrap().is_ok());
}

#[test]
fn server_and_connection_commands() {
    let s = Server::start();
    let mut c = s.client();
    assert_eq!(q::<String>(&mut c, &[b"PING"]).unwrap(), "PONG");
    assert_eq!(q::<String>(&mut c, &[b"PING", b"hi"]).unwrap(), "hi");
    assert_eq!(q::<String>(&mut c, &[b"ECHO", b"x y"]).unwrap(), "x y");
    assert_eq!(q::<String>(&mut c, &[b"SELECT", b"0"]).unwrap(), "OK");
    assert_eq!(err(&mut c, &[b"SELECT", b"3"]), "ERR DB index is out of range");
    let id: i64 = q(&mut c, &[b"CLIENT", b"ID"]).unwrap();
    assert!(id > 0);
    assert_eq!(q::<Option<String>>(&mut c, &[b"CLIENT", b"GETNAME"]).unwrap(), None);
    assert_eq!(q::<String>(&mut c, &[b"CLIENT", b"SETNAME", b"worker-1"]).unwrap(), "OK");
    assert_eq!(q::<Option<String>>(&mut c, &[b"CLIENT", b"GETNAME"]).unwrap().as_deref(), Some("worker-1"));
    assert!(err(&mut c, &[b"CLIENT", b"SETNAME", b"has space"]).starts_with("ERR Client names cannot contain spaces"));
    let hello: BTreeMap<String, Value> = q(&mut c, &[b"HELLO", b"2"]).unwrap();
    assert_eq!(hello.get("proto"), Some(&Value::Int(2)));
    assert_eq!(hello.get("id"), Some(&Value::Int(id)));
    let count: i64 = q(&mut c, &[b"COMMAND", b"COUNT"]).unwrap();
    let all: Vec<Value> = q(&mut c, &[b"COMMAND"]).unwrap();
    assert_eq!(all.len() as i64, count);
    let info: Vec<Value> = q(&mut c, &[b"COMMAND", b"INFO", b"get", b"nosuch"]).unwrap();
    assert_eq!(info.len(), 2);
    assert_eq!(info[1], Value::Nil);
    let cfg: BTreeMap<String, String> = q(&mut c, &[b"CONFIG", b"GET", b"*max*"]).unwrap();
    assert!(cfg.contains_key("maxclients") && cfg.contains_key("proto-max-bulk-len"), "{cfg:?}");
    let cfg: BTreeMap<String, String> = q(&mut c, &[b"CONFIG", b"GET", b"save", b"appendonly"]).unwrap();
    assert_eq!(cfg.get("appendonly").map(String::as_str), Some("no"));
    let _: () = c.set("k", "v").unwrap();
    let info: String = q(&mut c, &[b"INFO"]).unwrap();
    for section in ["# Server", "# Clients", "# Memory", "# Persistence", "# Stats", "# Keyspace", "db0:keys=1"] {
        assert!(info.contains(section), "{section} missing from INFO:\n{info}");
    }
    assert!(info.contains("daxkv_backend:"));
    let only: String = q(&mut c, &[b"INFO", b"keyspace"]).unwrap();
    assert!(only.starts_with("# Keyspace") && !only.contains("# Server"));
    assert_eq!(q::<String>(&mut c, &[b"QUIT"]).unwrap(), "OK");
}

#[test]
fn pipelines() {
    let s = Server::with(Config { batch_ops: 4096, ..Config::default() });
    let mut c = s.client();
    let mut p = redis::pipe();
    for i in 0..2000 {
        p.set(format!("p{i}"), format!("v{i}")).ignore();
        if i % 100 == 0 {
            p.get(format!("p{i}"));
            p.incr("pc", 1);
        }
    }
    let got: Vec<Value> = p.query(&mut c).unwrap();
    assert_eq!(got.len(), 40);
    for (j, pair) in got.chunks(2).enumerate() {
        assert_eq!(pair[0], Value::BulkString(format!("v{}", j * 100).into_bytes()));
        assert_eq!(pair[1], Value::Int(j as i64 + 1));
    }
    assert_eq!(s.store().len(), 2001);
    let info: String = q(&mut c, &[b"INFO", b"stats"]).unwrap();
    let batches: u64 =
        info.lines().find_map(|l| l.strip_prefix("daxkv_write_batches:")).unwrap().trim().parse().unwrap();
    let ops: u64 = info.lines().find_map(|l| l.strip_prefix("daxkv_batched_writes:")).unwrap().trim().parse().unwrap();
    assert_eq!(ops, 2000);
    assert!(batches < 100, "2000 pipelined SETs took {batches} batches");
}

#[test]
fn transactions_and_watch() {
    let s = Server::start();
    let mut c = s.client();
    let mut other = s.client();
    let (a, b): (i64, i64) = redis::pipe().atomic().incr("t1", 5).incr("t2", 7).query(&mut c).unwrap();
    assert_eq!((a, b), (5, 7));
    // A WATCH conflict: another client changes the key; EXEC answers nil.
    let _: () = redis::cmd("WATCH").arg("acct").query(&mut c).unwrap();
    let _: () = other.set("acct", 100).unwrap();
    let r: Option<(String,)> = redis::pipe().atomic().set("acct", 1).query(&mut c).unwrap();
    assert_eq!(r, None);
    assert_eq!(c.get::<_, i64>("acct").unwrap(), 100);
    // UNWATCH forgets.
    let _: () = redis::cmd("WATCH").arg("acct").query(&mut c).unwrap();
    let _: () = other.set("acct", 101).unwrap();
    let _: () = redis::cmd("UNWATCH").query(&mut c).unwrap();
    let r: Option<(String,)> = redis::pipe().atomic().set("acct", 2).query(&mut c).unwrap();
    assert_eq!(r, Some(("OK".into(),)));
    // Optimistic increments from four clients never lose one.
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let mut c = s.client();
            std::thread::spawn(move || {
                for _ in 0..50 {
                    let _: () = redis::transaction(&mut c, &["counter"], |c, pipe| {
                        let v: Option<i64> = c.get("counter")?;
                        pipe.set("counter", v.unwrap_or(0) + 1).ignore().query(c)
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(c.get::<_, i64>("counter").unwrap(), 200);
    // DISCARD.
    let _: () = redis::cmd("MULTI").query(&mut c).unwrap();
    let _: () = redis::cmd("SET").arg("never").arg(1).query(&mut c).unwrap();
    let _: () = redis::cmd("DISCARD").query(&mut c).unwrap();
    assert_eq!(c.exists::<_, i64>("never").unwrap(), 0);
}

/// INCR and APPEND from four clients, served by two event loops, each
/// run as one store transaction: none is lost. Other keys are rewritten
/// meanwhile, so that freed records are reused while increments run.
#[test]
fn concurrent_incr_and_append_lose_nothing() {
    let s = Server::with(Config { threads: 2, ..Config::default() });
    let clients: Vec<_> = (0..4)
        .map(|t| {
            let mut c = s.client();
            std::thread::spawn(move || {
                for i in 0..500 {
                    let _: i64 = c.incr("hits", 1).unwrap();
                    let _: i64 = c.append("log", b"x").unwrap();
                    let _: () = c.set(format!("other-{t}-{}", i % 8), vec![i as u8; 40]).unwrap();
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let mut c = s.client();
    assert_eq!(c.get::<_, i64>("hits").unwrap(), 2000);
    assert_eq!(c.strlen::<_, i64>("log").unwrap(), 2000);
}

#[test]
fn binary_safe_keys_and_values_and_a_10_mib_value() {
    let s = Server::start();
    let mut c = s.client();
    let key: Vec<u8> = (0..=255u8).chain(b"\r\n\0*$".iter().copied()).collect();
    let val: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 256) as u8).collect();
    let _: () = c.set(&key, &val).unwrap();
    assert_eq!(c.get::<_, Vec<u8>>(&key).unwrap(), val);
    let keys: Vec<Vec<u8>> = c.keys("*").unwrap();
    assert_eq!(keys, vec![key.clone()]);
    let big: Vec<u8> = (0..10 << 20).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let _: () = c.set("big", &big).unwrap();
    assert_eq!(c.get::<_, Vec<u8>>("big").unwrap(), big);
    assert_eq!(q::<i64>(&mut c, &[b"STRLEN", b"big"]).unwrap(), 10 << 20);
    assert_eq!(s.store().get(b"big").unwrap().unwrap(), big);
}

#[test]
fn auth_with_a_client() {
    let s = Server::with(Config { requirepass: Some(b"pw".to_vec()), ..Config::default() });
    let mut c = redis::Client::open(format!("redis://{}/", s.addr)).unwrap().get_connection().unwrap();
    assert_eq!(err(&mut c, &[b"GET", b"a"]), "NOAUTH Authentication required.");
    let mut c = redis::Client::open(format!("redis://:pw@{}/", s.addr)).unwrap().get_connection().unwrap();
    let _: () = c.set("a", 1).unwrap();
    assert!(redis::Client::open(format!("redis://:bad@{}/", s.addr)).unwrap().get_connection().is_err());
}

#[test]
fn resp3_client() {
    let s = Server::start();
    let mut c = redis::Client::open(format!("redis://{}/?protocol=resp3", s.addr)).unwrap().get_connection().unwrap();
    let _: () = c.set("r3", "v").unwrap();
    assert_eq!(c.get::<_, Option<String>>("r3").unwrap().as_deref(), Some("v"));
    assert_eq!(c.get::<_, Option<String>>("nope").unwrap(), None);
    let raw: Value = q(&mut c, &[b"GET", b"nope"]).unwrap();
    assert_eq!(raw, Value::Nil);
    let cfg: Value = q(&mut c, &[b"CONFIG", b"GET", b"save"]).unwrap();
    assert!(matches!(cfg, Value::Map(_)), "{cfg:?}");
}

#[test]
fn restart_finds_every_acknowledged_key_and_shutdown_is_clean() {
    let path = pool_path("restart");
    let s = Server::on(path.clone(), Config::default());
    let mut c = s.client();
    let mut model = BTreeMap::new();
    for round in 0..20 {
        let mut p = redis::pipe();
        for i in 0..100 {
            let (k, v) = (format!("k{}", (round * 37 + i) % 1500), format!("v{round}-{i}"));
            p.set(&k, &v).ignore();
            model.insert(k, v);
        }
        let _: () = p.query(&mut c).unwrap();
    }
    let _: () = c.del("k0").unwrap();
    model.remove("k0");
    // SHUTDOWN stops the server; the pool is then closed cleanly.
    let _ = q::<Value>(&mut c, &[b"SHUTDOWN"]);
    let path = s.wait();
    let store = Store::open(&path, &Options::new()).unwrap();
    assert!(store.stats().opened_clean, "no recovery after SHUTDOWN");
    let got: BTreeMap<String, String> = store
        .iter()
        .map(|kv| kv.unwrap())
        .map(|(k, v)| (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap()))
        .collect();
    assert_eq!(got, model);
    drop(store);
    let s = Server::on(path.clone(), Config::default());
    let mut c = s.client();
    assert_eq!(q::<i64>(&mut c, &[b"DBSIZE"]).unwrap(), model.len() as i64);
    drop(s);
    assert!(!path.exists());
}
