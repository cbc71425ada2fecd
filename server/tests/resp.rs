//! The server over raw RESP bytes: exact replies, pipelines, malformed
//! frames, limits, AUTH, protected mode.

mod common;

use common::{Raw, Server, resp};
use daxkv_server::Config;
use std::time::Duration;

#[test]
fn exact_error_texts() {
    let s = Server::start();
    let mut c = Raw::connect(s.addr);
    c.roundtrip(&resp(&[b"foo", b"a", b"b"]), b"-ERR unknown command 'foo', with args beginning with: 'a' 'b' \r\n");
    c.roundtrip(&resp(&[b"GET"]), b"-ERR wrong number of arguments for 'get' command\r\n");
    c.roundtrip(&resp(&[b"MSET", b"a"]), b"-ERR wrong number of arguments for 'mset' command\r\n");
    c.roundtrip(&resp(&[b"MSET", b"a", b"1", b"b"]), b"-ERR wrong number of arguments for 'mset' command\r\n");
    c.roundtrip(&resp(&[b"CLIENT", b"SETNAME"]), b"-ERR wrong number of arguments for 'client|setname' command\r\n");
    c.roundtrip(&resp(&[b"CLIENT", b"bogus"]), b"-ERR unknown subcommand 'bogus'. Try CLIENT HELP.\r\n");
    c.roundtrip(&resp(&[b"CONFIG", b"bogus"]), b"-ERR unknown subcommand 'bogus'. Try CONFIG HELP.\r\n");
    c.roundtrip(&resp(&[b"SET", b"n", b"x"]), b"+OK\r\n");
    c.roundtrip(&resp(&[b"INCR", b"n"]), b"-ERR value is not an integer or out of range\r\n");
    c.roundtrip(&resp(&[b"INCRBY", b"m", b"1.5"]), b"-ERR value is not an integer or out of range\r\n");
    c.roundtrip(&resp(&[b"SET", b"m", b"9223372036854775807"]), b"+OK\r\n");
    c.roundtrip(&resp(&[b"INCR", b"m"]), b"-ERR increment or decrement would overflow\r\n");
    c.roundtrip(&resp(&[b"DECRBY", b"m", b"-9223372036854775808"]), b"-ERR decrement would overflow\r\n");
    c.roundtrip(&resp(&[b"SET", b"a", b"b", b"NX", b"XX"]), b"-ERR syntax error\r\n");
    c.roundtrip(&resp(&[b"SET", b"a", b"b", b"EX", b"0"]), b"-ERR invalid expire time in 'set' command\r\n");
    c.roundtrip(&resp(&[b"SETRANGE", b"a", b"-1", b"x"]), b"-ERR offset is out of range\r\n");
    c.roundtrip(
        &resp(&[b"SETRANGE", b"a", b"536870912", b"x"]),
        b"-ERR string exceeds maximum allowed size (proto-max-bulk-len)\r\n",
    );
    c.roundtrip(&resp(&[b"SELECT", b"0"]), b"+OK\r\n");
    c.roundtrip(&resp(&[b"SELECT", b"1"]), b"-ERR DB index is out of range\r\n");
    c.roundtrip(&resp(&[b"SCAN", b"x"]), b"-ERR invalid cursor\r\n");
    c.roundtrip(&resp(&[b"EXEC"]), b"-ERR EXEC without MULTI\r\n");
    c.roundtrip(&resp(&[b"DISCARD"]), b"-ERR DISCARD without MULTI\r\n");
    c.roundtrip(&resp(&[b"HELLO", b"4"]), b"-NOPROTO unsupported protocol version\r\n");
    c.roundtrip(
        &resp(&[b"AUTH", b"pw"]),
        b"-ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?\r\n",
    );
    // The connection is still usable after all those errors.
    c.roundtrip(&resp(&[b"PING"]), b"+PONG\r\n");
}

#[test]
fn replies_resp2_and_resp3() {
    let s = Server::start();
    let mut c = Raw::connect(s.addr);
    c.roundtrip(&resp(&[b"GET", b"nokey"]), b"$-1\r\n");
    c.roundtrip(&resp(&[b"ECHO", b"hi"]), b"$2\r\nhi\r\n");
    c.roundtrip(&resp(&[b"PING", b"yo"]), b"$2\r\nyo\r\n");
    c.roundtrip(&resp(&[b"MGET", b"x", b"y"]), b"*2\r\n$-1\r\n$-1\r\n");
    c.send(&resp(&[b"HELLO", b"3"]));
    let head = c.read_n(4);
    assert_eq!(&head, b"%7\r\n");
    let rest = c.read_n(b"$6\r\nserver\r\n$5\r\nredis\r\n".len());
    assert_eq!(&rest, b"$6\r\nserver\r\n$5\r\nredis\r\n");
    // Drain the rest of HELLO's map, then see RESP3 nulls.
    c.send(&resp(&[b"PING"]));
    let mut buf = Vec::new();
    while !buf.ends_with(b"+PONG\r\n") {
        buf.extend(c.read_n(1));
    }
    c.roundtrip(&resp(&[b"GET", b"nokey"]), b"_\r\n");
    c.roundtrip(&resp(&[b"CONFIG", b"GET", b"appendonly"]), b"%1\r\n$10\r\nappendonly\r\n$2\r\nno\r\n");
    c.roundtrip(&resp(&[b"RESET"]), b"+RESET\r\n");
    c.roundtrip(&resp(&[b"GET", b"nokey"]), b"$-1\r\n");
    c.roundtrip(&resp(&[b"CONFIG", b"GET", b"save"]), b"*2\r\n$4\r\nsave\r\n$0\r\n\r\n");
}

#[test]
fn inline_commands() {
    let s = Server::start();
    let mut c = Raw::connect(s.addr);
    c.roundtrip(b"PING\r\n", b"+PONG\r\n");
    c.roundtrip(b"SET \"a key\" 'a value'\r\n", b"+OK\r\n");
    c.roundtrip(b"GET \"a key\"\n", b"$7\r\na value\r\n");
    c.roundtrip(b"\r\nEXISTS \"a key\"\r\n", b":1\r\n");
}

#[test]
fn pipeline_of_mixed_commands_in_one_write() {
    let s = Server::start();
    let mut c = Raw::connect(s.addr);
    let mut req = Vec::new();
    let mut want = Vec::new();
    for i in 0..500 {
        let k = format!("k{i}");
        let v = format!("v{i}");
        req.extend(resp(&[b"SET", k.as_bytes(), v.as_bytes()]));
        want.extend_from_slice(b"+OK\r\n");
        // A read right after a queued write sees it.
        req.extend(resp(&[b"GET", k.as_bytes()]));
        want.extend(format!("${}\r\n{v}\r\n", v.len()).into_bytes());
        if i % 50 == 0 {
            req.extend(resp(&[b"INCR", b"counter"]));
            want.extend(format!(":{}\r\n", i / 50 + 1).into_bytes());
            req.extend(resp(&[b"DEL", k.as_bytes()]));
            want.extend_from_slice(b":1\r\n");
            req.extend(resp(&[b"GET", k.as_bytes()]));
            want.extend_from_slice(b"$-1\r\n");
        }
    }
    req.extend(resp(&[b"DBSIZE"]));
    want.extend_from_slice(b":491\r\n");
    c.roundtrip(&req, &want);
    assert_eq!(s.store().len(), 491);
    assert_eq!(s.store().get(b"k499").unwrap().as_deref(), Some(&b"v499"[..]));
}

#[test]
fn request_split_across_writes() {
    let s = Server::start();
    let mut c = Raw::connect(s.addr);
    let req = resp(&[b"SET", b"split", b"value"]);
    for b in &req {
        c.send(std::slice::from_ref(b));
        std::thread::sleep(Duration::from_micros(200));
    }
    c.roundtrip(b"", b"+OK\r\n");
    c.roundtrip(&resp(&[b"GET", b"split"]), b"$5\r\nvalue\r\n");
}

fn protocol_error(s: &Server, req: &[u8], text: &str) {
    let mut c = Raw::connect(s.addr);
    c.send(req);
    let got = c.read_to_close();
    assert_eq!(
        String::from_utf8_lossy(&got),
        format!("-ERR Protocol error: {text}\r\n"),
        "for {:?}",
        String::from_utf8_lossy(req)
    );
}

#[test]
fn malformed_frames_get_an_error_and_a_closed_connection() {
    let s = Server::start();
    protocol_error(&s, b"*1\r\n+PING\r\n", "expected '$', got '+'");
    protocol_error(&s, b"*x\r\n", "invalid multibulk length");
    protocol_error(&s, b"*1\r\n$-5\r\n", "invalid bulk length");
    protocol_error(&s, b"*1\r\n$4\r\nPINGPONG\r\n", "expected '\\r\\n' after bulk string");
    protocol_error(&s, b"SET \"unbalanced\r\n", "unbalanced quotes in request");
    // A NUL in an inline request once made the server loop, allocating
    // until it ran out of memory.
    protocol_error(&s, b"\0\r\n", "NUL byte in inline request (send binary data as a multibulk)");
    protocol_error(&s, b"GET a\0b\r\n", "NUL byte in inline request (send binary data as a multibulk)");
    // Replies before the bad frame are sent first.
    let mut c = Raw::connect(s.addr);
    c.send(b"*1\r\n$4\r\nPING\r\n*1\r\n:1\r\n");
    assert_eq!(c.read_to_close(), b"+PONG\r\n-ERR Protocol error: expected '$', got ':'\r\n");
    // Random garbage never takes the server down.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..200 {
        let mut c = Raw::connect(s.addr);
        let mut junk = Vec::new();
        for _ in 0..64 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            junk.push(b"*$\r\n0123-9x\"' \0\t"[(seed % 16) as usize]);
        }
        junk.extend_from_slice(b"\r\n");
        c.send(&junk);
        drop(c);
    }
    Raw::connect(s.addr).roundtrip(&resp(&[b"PING"]), b"+PONG\r\n");
}

#[test]
fn limits() {
    let mut config = Config::default();
    config.limits.max_bulk_len = 1000;
    config.limits.max_multibulk_len = 8;
    config.limits.max_inline_len = 100;
    config.max_clients = 3;
    let s = Server::with(config);
    protocol_error(&s, b"*1\r\n$1001\r\n", "invalid bulk length");
    protocol_error(&s, b"*9\r\n", "invalid multibulk length");
    protocol_error(&s, &[b"GET ".as_slice(), &[b'a'; 200]].concat(), "too big inline request");
    let mut ok = Raw::connect(s.addr);
    ok.roundtrip(&resp(&[b"SET", b"k", &[b'v'; 1000]]), b"+OK\r\n");
    // Max clients: three connected, the fourth is refused.
    let mut more = vec![Raw::connect(s.addr), Raw::connect(s.addr)];
    for c in &mut more {
        c.roundtrip(&resp(&[b"PING"]), b"+PONG\r\n");
    }
    let mut over = Raw::connect(s.addr);
    assert_eq!(over.read_to_close(), b"-ERR max number of clients reached\r\n");
    drop(more);
    std::thread::sleep(Duration::from_millis(200));
    Raw::connect(s.addr).roundtrip(&resp(&[b"PING"]), b"+PONG\r\n");
}

#[test]
fn idle_timeout_closes_quiet_clients() {
    let s = Server::with(Config { timeout: Some(Duration::from_secs(1)), ..Config::default() });
    let mut c = Raw::connect(s.addr);
    c.roundtrip(&resp(&[b"PING"]), b"+PONG\r\n");
    let t = std::time::Instant::now();
    assert!(c.read_to_close().is_empty());
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn auth_is_enforced() {
    let s = Server::with(Config { requirepass: Some(b"s3cret".to_vec()), ..Config::default() });
    let mut c = Raw::connect(s.addr);
    c.roundtrip(&resp(&[b"GET", b"a"]), b"-NOAUTH Authentication required.\r\n");
    c.roundtrip(&resp(&[b"SET", b"a", b"1"]), b"-NOAUTH Authentication required.\r\n");
    c.roundtrip(&resp(&[b"AUTH", b"wrong"]), b"-WRONGPASS invalid username-password pair or user is disabled.\r\n");
    c.roundtrip(
        &resp(&[b"AUTH", b"other", b"s3cret"]),
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n",
    );
    c.roundtrip(&resp(&[b"AUTH", b"s3cret"]), b"+OK\r\n");
    c.roundtrip(&resp(&[b"SET", b"a", b"1"]), b"+OK\r\n");
    let mut d = Raw::connect(s.addr);
    d.roundtrip(&resp(&[b"AUTH", b"default", b"s3cret"]), b"+OK\r\n");
    d.roundtrip(&resp(&[b"GET", b"a"]), b"$1\r\n1\r\n");
    // Before AUTH, requests are kept small.
    protocol_error(&s, &resp(&[b"AUTH", &[b'x'; 20000]]), "unauthenticated bulk length");
    protocol_error(&s, b"*11\r\n", "unauthenticated multibulk length");
    assert!(s.store().get(b"a").unwrap().is_some());
}

#[test]
fn protected_mode_refuses_non_loopback_peers() {
    let s = Server::with(Config { protected_mode: true, ..Config::default() });
    // 127.0.0.1 is local.
    Raw::connect(s.addr).roundtrip(&resp(&[b"PING"]), b"+PONG\r\n");
    // A peer at another address (127.0.0.2 stands in for the network).
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&"127.0.0.2:0".parse::<std::net::SocketAddr>().unwrap().into()).unwrap();
    sock.connect(&s.addr.into()).unwrap();
    let mut c = Raw(sock.into());
    c.0.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let got = String::from_utf8(c.read_to_close()).unwrap();
    assert!(got.starts_with("-DENIED daxkv is running in protected mode"), "{got}");
    assert!(got.ends_with("\r\n") && got.matches("\r\n").count() == 1);
}

#[test]
fn multi_exec_raw() {
    let s = Server::start();
    let mut c = Raw::connect(s.addr);
    c.roundtrip(&resp(&[b"MULTI"]), b"+OK\r\n");
    c.roundtrip(&resp(&[b"MULTI"]), b"-ERR MULTI calls can not be nested\r\n");
    c.roundtrip(&resp(&[b"SET", b"a", b"x"]), b"+QUEUED\r\n");
    c.roundtrip(&resp(&[b"INCR", b"a"]), b"+QUEUED\r\n");
    c.roundtrip(&resp(&[b"GET", b"a"]), b"+QUEUED\r\n");
    c.roundtrip(&resp(&[b"WATCH", b"a"]), b"-ERR WATCH inside MULTI is not allowed\r\n");
    c.roundtrip(&resp(&[b"EXEC"]), b"*3\r\n+OK\r\n-ERR value is not an integer or out of range\r\n$1\r\nx\r\n");
    // A refused command dooms the transaction.
    c.roundtrip(&resp(&[b"MULTI"]), b"+OK\r\n");
    c.roundtrip(&resp(&[b"SET", b"b", b"1"]), b"+QUEUED\r\n");
    c.roundtrip(&resp(&[b"NOPE"]), b"-ERR unknown command 'NOPE', with args beginning with: \r\n");
    c.roundtrip(&resp(&[b"SHUTDOWN"]), b"-ERR Command not allowed inside a transaction\r\n");
    c.roundtrip(&resp(&[b"EXEC"]), b"-EXECABORT Transaction discarded because of previous errors.\r\n");
    c.roundtrip(&resp(&[b"EXISTS", b"b"]), b":0\r\n");
    c.roundtrip(&resp(&[b"MULTI"]), b"+OK\r\n");
    c.roundtrip(&resp(&[b"SET", b"b", b"1"]), b"+QUEUED\r\n");
    c.roundtrip(&resp(&[b"DISCARD"]), b"+OK\r\n");
    c.roundtrip(&resp(&[b"EXISTS", b"b"]), b":0\r\n");
    // WATCH: a change by another client makes EXEC answer null.
    c.roundtrip(&resp(&[b"WATCH", b"w"]), b"+OK\r\n");
    Raw::connect(s.addr).roundtrip(&resp(&[b"SET", b"w", b"other"]), b"+OK\r\n");
    c.roundtrip(&resp(&[b"MULTI"]), b"+OK\r\n");
    c.roundtrip(&resp(&[b"SET", b"w", b"mine"]), b"+QUEUED\r\n");
    c.roundtrip(&resp(&[b"EXEC"]), b"*-1\r\n");
    c.roundtrip(&resp(&[b"GET", b"w"]), b"$5\r\nother\r\n");
    // Writing the same value back still counts as a change (as in Redis).
    c.roundtrip(&resp(&[b"WATCH", b"w"]), b"+OK\r\n");
    Raw::connect(s.addr).roundtrip(&resp(&[b"SET", b"w", b"other"]), b"+OK\r\n");
    c.roundtrip(&resp(&[b"MULTI"]), b"+OK\r\n");
    c.roundtrip(&resp(&[b"SET", b"w", b"mine"]), b"+QUEUED\r\n");
    c.roundtrip(&resp(&[b"EXEC"]), b"*-1\r\n");
    // Unchanged: EXEC runs.
    c.roundtrip(&resp(&[b"WATCH", b"w"]), b"+OK\r\n");
    c.roundtrip(&resp(&[b"MULTI"]), b"+OK\r\n");
    c.roundtrip(&resp(&[b"SET", b"w", b"mine"]), b"+QUEUED\r\n");
    c.roundtrip(&resp(&[b"EXEC"]), b"*1\r\n+OK\r\n");
    c.roundtrip(&resp(&[b"GET", b"w"]), b"$4\r\nmine\r\n");
}

/// Found by the differential test against redis-server
/// (`differential.rs`); each answer here is the one Redis 7.0 gives.
#[test]
fn multi_exec_corners() {
    let s = Server::start();
    let mut c = Raw::connect(s.addr);
    // UNWATCH queued inside MULTI (it once took the event loop down).
    c.roundtrip(&resp(&[b"MULTI"]), b"+OK\r\n");
    c.roundtrip(&resp(&[b"UNWATCH"]), b"+QUEUED\r\n");
    c.roundtrip(&resp(&[b"EXEC"]), b"*1\r\n+OK\r\n");
    // A refused EXEC ends the transaction and says why.
    c.roundtrip(&resp(&[b"MULTI"]), b"+OK\r\n");
    c.roundtrip(&resp(&[b"SET", b"e", b"1"]), b"+QUEUED\r\n");
    c.roundtrip(
        &resp(&[b"EXEC", b"0"]),
        b"-EXECABORT Transaction discarded because of: wrong number of arguments for 'exec' command\r\n",
    );
    c.roundtrip(&resp(&[b"EXEC"]), b"-ERR EXEC without MULTI\r\n");
    c.roundtrip(&resp(&[b"EXISTS", b"e"]), b":0\r\n");
    // Keyspace commands inside EXEC see the transaction's own writes, and
    // FLUSHDB removes the keys it put.
    c.roundtrip(&resp(&[b"SET", b"old", b"1"]), b"+OK\r\n");
    c.roundtrip(&resp(&[b"MULTI"]), b"+OK\r\n");
    for req in [&[&b"SET"[..], b"new", b"2"][..], &[b"DEL", b"old"], &[b"DBSIZE"], &[b"KEYS", b"*"], &[b"SCAN", b"0"]] {
        c.roundtrip(&resp(req), b"+QUEUED\r\n");
    }
    c.roundtrip(&resp(&[b"SET", b"x", b"3"]), b"+QUEUED\r\n");
    c.roundtrip(&resp(&[b"FLUSHDB"]), b"+QUEUED\r\n");
    c.roundtrip(&resp(&[b"DBSIZE"]), b"+QUEUED\r\n");
    c.roundtrip(
        &resp(&[b"EXEC"]),
        b"*8\r\n+OK\r\n:1\r\n:1\r\n*1\r\n$3\r\nnew\r\n*2\r\n$1\r\n0\r\n*1\r\n$3\r\nnew\r\n+OK\r\n+OK\r\n:0\r\n",
    );
    c.roundtrip(&resp(&[b"DBSIZE"]), b":0\r\n");
    // FLUSHDB with a bad argument inside EXEC is refused there, and
    // flushes nothing.
    c.roundtrip(&resp(&[b"SET", b"keep", b"1"]), b"+OK\r\n");
    c.roundtrip(&resp(&[b"MULTI"]), b"+OK\r\n");
    c.roundtrip(&resp(&[b"FLUSHDB", b"NOW"]), b"+QUEUED\r\n");
    c.roundtrip(&resp(&[b"EXEC"]), b"*1\r\n-ERR syntax error\r\n");
    c.roundtrip(&resp(&[b"DBSIZE"]), b":1\r\n");
    // Deleting a missing key is no change to its watchers.
    c.roundtrip(&resp(&[b"WATCH", b"w"]), b"+OK\r\n");
    Raw::connect(s.addr).roundtrip(&resp(&[b"DEL", b"w"]), b":0\r\n");
    c.roundtrip(&resp(&[b"FLUSHDB"]), b"+OK\r\n");
    c.roundtrip(&resp(&[b"MULTI"]), b"+OK\r\n");
    c.roundtrip(&resp(&[b"SET", b"w", b"1"]), b"+QUEUED\r\n");
    c.roundtrip(&resp(&[b"EXEC"]), b"*1\r\n+OK\r\n");
    // ... but deleting it once it exists is, also by FLUSHDB.
    c.roundtrip(&resp(&[b"WATCH", b"w"]), b"+OK\r\n");
    Raw::connect(s.addr).roundtrip(&resp(&[b"FLUSHDB"]), b"+OK\r\n");
    c.roundtrip(&resp(&[b"MULTI"]), b"+OK\r\n");
    c.roundtrip(&resp(&[b"SET", b"w", b"1"]), b"+QUEUED\r\n");
    c.roundtrip(&resp(&[b"EXEC"]), b"*-1\r\n");
    // Redis formats an unknown command's arguments as C strings.
    c.roundtrip(
        &resp(&[b"NO\0PE", b"a\0b", b"c"]),
        b"-ERR unknown command 'NO', with args beginning with: 'a' 'c' \r\n",
    );
}

/// CLIENT SETINFO, which client libraries send on connect (Redis 7.2's
/// answers; the Redis 7.0 of the differential test does not have it).
#[test]
fn client_setinfo() {
    let s = Server::start();
    let mut c = Raw::connect(s.addr);
    c.roundtrip(&resp(&[b"CLIENT", b"SETINFO", b"LIB-NAME", b"redis-rs"]), b"+OK\r\n");
    c.roundtrip(&resp(&[b"CLIENT", b"SETINFO", b"lib-ver", b"1.0"]), b"+OK\r\n");
    c.roundtrip(
        &resp(&[b"CLIENT", b"SETINFO", b"Lib-Ver", b"1.0 beta"]),
        b"-ERR Lib-Ver cannot contain spaces, newlines or special characters.\r\n",
    );
    c.roundtrip(&resp(&[b"CLIENT", b"SETINFO", b"color", b"red"]), b"-ERR Unrecognized option 'color'\r\n");
    // Redis compares the option as a C string: it ends at a NUL byte.
    c.roundtrip(&resp(&[b"CLIENT", b"SETINFO", b"lib-ver\0x", b"1.0"]), b"+OK\r\n");
    c.roundtrip(
        &resp(&[b"CLIENT", b"SETINFO", b"lib-name"]),
        b"-ERR wrong number of arguments for 'client|setinfo' command\r\n",
    );
    c.send(&resp(&[b"CLIENT", b"INFO"]));
    let mut got = Vec::new();
    while !got.ends_with(b"\n\r\n") {
        let mut b = [0u8; 512];
        let n = std::io::Read::read(&mut c.0, &mut b).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&b[..n]);
    }
    let line = String::from_utf8_lossy(&got);
    assert!(line.contains(" lib-name=redis-rs lib-ver=1.0\n"), "{line}");
}

#[test]
fn quit_replies_then_closes() {
    let s = Server::start();
    let mut c = Raw::connect(s.addr);
    c.send(&[resp(&[b"QUIT"]), resp(&[b"PING"])].concat());
    assert_eq!(c.read_to_close(), b"+OK\r\n");
}

/// RENAME, COPY, TOUCH and the expiry family, with the answers
/// redis-server 7.0.15 gives (checked by hand; `differential.rs` compares
/// random streams of them). Absolute times far ahead make the answers
/// exact; a time already past deletes the key.
#[test]
fn generic_key_commands() {
    let s = Server::start();
    let mut c = Raw::connect(s.addr);
    let mut call = |args: &[&[u8]], want: &[u8]| c.roundtrip(&resp(args), want);
    call(&[b"SET", b"a", b"1"], b"+OK\r\n");
    call(&[b"RENAME", b"a", b"a"], b"+OK\r\n");
    call(&[b"RENAME", b"nx", b"b"], b"-ERR no such key\r\n");
    call(&[b"RENAME", b"a", b"b"], b"+OK\r\n");
    call(&[b"GET", b"a"], b"$-1\r\n");
    call(&[b"GET", b"b"], b"$1\r\n1\r\n");
    call(&[b"RENAMENX", b"b", b"b"], b":0\r\n");
    call(&[b"RENAMENX", b"nx", b"c"], b"-ERR no such key\r\n");
    call(&[b"SET", b"c", b"2"], b"+OK\r\n");
    call(&[b"RENAMENX", b"b", b"c"], b":0\r\n");
    call(&[b"RENAMENX", b"b", b"d"], b":1\r\n");
    call(&[b"COPY", b"d", b"d"], b"-ERR source and destination objects are the same\r\n");
    call(&[b"COPY", b"d", b"e"], b":1\r\n");
    call(&[b"COPY", b"d", b"e"], b":0\r\n");
    call(&[b"COPY", b"d", b"e", b"replace"], b":1\r\n");
    call(&[b"COPY", b"d", b"e", b"DB", b"0"], b":0\r\n");
    call(&[b"COPY", b"d", b"e", b"DB", b"1", b"bogus"], b"-ERR DB index is out of range\r\n");
    call(&[b"COPY", b"d", b"e", b"DB", b"0", b"bogus"], b"-ERR syntax error\r\n");
    call(&[b"COPY", b"d", b"e", b"DB", b"x"], b"-ERR value is not an integer or out of range\r\n");
    call(
        &[b"COPY", b"d", b"e", b"DB", b"2147483648"],
        b"-ERR value is out of range, value must between -2147483648 and 2147483647\r\n",
    );
    call(
        &[b"SELECT", b"-2147483649"],
        b"-ERR value is out of range, value must between -2147483648 and 2147483647\r\n",
    );
    call(&[b"COPY", b"nx", b"e"], b":0\r\n");
    call(&[b"TOUCH", b"d", b"e", b"zz"], b":2\r\n");
    call(&[b"TTL", b"d"], b":-1\r\n");
    call(&[b"TTL", b"zz"], b":-2\r\n");
    call(&[b"PTTL", b"d"], b":-1\r\n");
    call(&[b"EXPIRETIME", b"d"], b":-1\r\n");
    call(&[b"PEXPIRETIME", b"zz"], b":-2\r\n");
    call(&[b"PERSIST", b"d"], b":0\r\n");
    call(&[b"GETEX", b"d"], b"$1\r\n1\r\n");
    call(&[b"GETEX", b"d", b"persist", b"PERSIST"], b"$1\r\n1\r\n");
    call(&[b"GETEX", b"zz", b"EX", b"x"], b"$-1\r\n");
    call(&[b"GETEX", b"d", b"EX", b"x"], b"-ERR value is not an integer or out of range\r\n");
    call(&[b"GETEX", b"d", b"ex", b"0"], b"-ERR invalid expire time in 'getex' command\r\n");
    call(&[b"GETEX", b"d", b"EX", b"10", b"PX", b"10"], b"-ERR syntax error\r\n");
    // 2100-01-01: far ahead, so every answer is exact.
    call(&[b"GETEX", b"d", b"EXAT", b"4102444800"], b"$1\r\n1\r\n");
    call(&[b"EXPIRETIME", b"d"], b":4102444800\r\n");
    call(&[b"PEXPIRETIME", b"d"], b":4102444800000\r\n");
    call(&[b"GETEX", b"d", b"PERSIST"], b"$1\r\n1\r\n");
    call(&[b"TTL", b"d"], b":-1\r\n");
    call(&[b"SETEX", b"d", b"0", b"v"], b"-ERR invalid expire time in 'setex' command\r\n");
    call(&[b"PSETEX", b"d", b"x", b"v"], b"-ERR value is not an integer or out of range\r\n");
    // SET's options are parsed before its time is checked, as in Redis.
    call(&[b"SET", b"d", b"v", b"EX", b"x", b"bogus"], b"-ERR syntax error\r\n");
    call(&[b"SET", b"d", b"v", b"KEEPTTL", b"EX", b"5"], b"-ERR syntax error\r\n");
    call(&[b"SET", b"d", b"v", b"NX", b"EX", b"0"], b"-ERR invalid expire time in 'set' command\r\n");
    call(&[b"SET", b"d", b"v", b"PX", b"9223372036854775807"], b"-ERR invalid expire time in 'set' command\r\n");
    call(&[b"SET", b"d2", b"v", b"get\0x"], b"$-1\r\n");
    // A time already past: set and gone at once (the old value for GET).
    call(&[b"SET", b"d2", b"w", b"EXAT", b"1", b"GET"], b"$1\r\nv\r\n");
    call(&[b"EXISTS", b"d2"], b":0\r\n");
    call(&[b"SET", b"d2", b"w", b"PXAT", b"1"], b"+OK\r\n");
    call(&[b"EXISTS", b"d2"], b":0\r\n");
    call(&[b"EXPIRE", b"d", b"x", b"bogus\r"], b"-ERR Unsupported option bogus\r\n");
    call(
        &[b"EXPIRE", b"d", b"10", b"nx", b"xx"],
        b"-ERR NX and XX, GT or LT options at the same time are not compatible\r\n",
    );
    call(&[b"EXPIRE", b"d", b"9223372036854775807"], b"-ERR invalid expire time in 'expire' command\r\n");
    call(&[b"EXPIRE", b"zz", b"10"], b":0\r\n");
    // Without an expiry: XX and GT refuse (no expiry counts as never), LT
    // and NX set one.
    call(&[b"EXPIREAT", b"d", b"4102444800", b"XX"], b":0\r\n");
    call(&[b"EXPIREAT", b"d", b"4102444800", b"gt"], b":0\r\n");
    call(&[b"EXPIREAT", b"d", b"4102444800", b"LT"], b":1\r\n");
    call(&[b"EXPIREAT", b"d", b"4102444900", b"NX"], b":0\r\n");
    call(&[b"EXPIREAT", b"d", b"4102444900", b"LT"], b":0\r\n");
    call(&[b"EXPIREAT", b"d", b"4102444900", b"GT"], b":1\r\n");
    call(&[b"PEXPIREAT", b"d", b"4102444850000", b"XX"], b":1\r\n");
    call(&[b"EXPIRETIME", b"d"], b":4102444850\r\n");
    // Writes that change a value keep its time; those that replace it do not.
    call(&[b"APPEND", b"d", b"2"], b":2\r\n");
    call(&[b"SETRANGE", b"d", b"0", b"3"], b":2\r\n");
    call(&[b"INCR", b"d"], b":33\r\n");
    call(&[b"SET", b"d", b"40", b"KEEPTTL"], b"+OK\r\n");
    call(&[b"PEXPIRETIME", b"d"], b":4102444850000\r\n");
    call(&[b"RENAME", b"d", b"d3"], b"+OK\r\n");
    call(&[b"COPY", b"d3", b"d"], b":1\r\n");
    call(&[b"PEXPIRETIME", b"d"], b":4102444850000\r\n");
    call(&[b"PEXPIRETIME", b"d3"], b":4102444850000\r\n");
    call(&[b"GETSET", b"d3", b"1"], b"$2\r\n40\r\n");
    call(&[b"TTL", b"d3"], b":-1\r\n");
    call(&[b"PERSIST", b"d"], b":1\r\n");
    call(&[b"PERSIST", b"d"], b":0\r\n");
    call(&[b"SET", b"d", b"1", b"PXAT", b"4102444800123"], b"+OK\r\n");
    call(&[b"PEXPIRETIME", b"d"], b":4102444800123\r\n");
    call(&[b"EXPIRETIME", b"d"], b":4102444800\r\n");
    call(&[b"SET", b"d", b"1"], b"+OK\r\n");
    call(&[b"TTL", b"d"], b":-1\r\n");
    // Relative times (the time left is checked in `client.rs`, with
    // room for a slow machine).
    call(&[b"SETEX", b"s", b"100", b"v"], b"+OK\r\n");
    call(&[b"PSETEX", b"s", b"100000", b"v"], b"+OK\r\n");
    call(&[b"SET", b"s", b"v", b"EX", b"200"], b"+OK\r\n");
    call(&[b"EXPIRE", b"s", b"300"], b":1\r\n");
    call(&[b"PEXPIRE", b"s", b"400000"], b":1\r\n");
    // PEXPIREAT's largest time is allowed, and rounded in seconds.
    call(&[b"PEXPIREAT", b"s", b"9223372036854775807"], b":1\r\n");
    call(&[b"PEXPIRETIME", b"s"], b":9223372036854775807\r\n");
    call(&[b"EXPIRETIME", b"s"], b":9223372036854776\r\n");
    call(&[b"INFO", b"keyspace"], b"$44\r\n# Keyspace\r\ndb0:keys=5,expires=1,avg_ttl=0\r\n\r\n");
    // A time already past deletes the key.
    call(&[b"GET", b"d"], b"$1\r\n1\r\n");
    call(&[b"GETEX", b"d", b"EXAT", b"1"], b"$1\r\n1\r\n");
    call(&[b"EXISTS", b"d"], b":0\r\n");
    call(&[b"SET", b"d", b"v"], b"+OK\r\n");
    call(&[b"PEXPIREAT", b"d", b"-9223372036854775808"], b":1\r\n");
    call(&[b"SET", b"d", b"v"], b"+OK\r\n");
    call(&[b"EXPIRE", b"d", b"0"], b":1\r\n");
    call(&[b"EXISTS", b"d"], b":0\r\n");
}

/// RENAME and COPY are writes to WATCH: a watcher of either key fails, a
/// watcher of an unrelated key does not; inside MULTI they run in the
/// transaction.
#[test]
fn rename_and_copy_under_watch_and_multi() {
    let s = Server::start();
    let mut a = Raw::connect(s.addr);
    let mut b = Raw::connect(s.addr);
    a.roundtrip(&resp(&[b"MSET", b"src", b"v", b"other", b"o"]), b"+OK\r\n");
    for (watched, cmd, aborted) in [
        (&b"src"[..], &[&b"RENAME"[..], b"src", b"dst"][..], true),
        (b"dst", &[b"RENAME", b"dst", b"src"], true),
        (b"copy", &[b"COPY", b"src", b"copy"], true),
        (b"other", &[b"COPY", b"src", b"copy", b"REPLACE"], false),
    ] {
        a.roundtrip(&resp(&[b"WATCH", watched]), b"+OK\r\n");
        b.roundtrip(&resp(cmd), if cmd[0] == b"RENAME" { b"+OK\r\n" } else { b":1\r\n" });
        a.roundtrip(&resp(&[b"MULTI"]), b"+OK\r\n");
        a.roundtrip(&resp(&[b"PING"]), b"+QUEUED\r\n");
        a.roundtrip(&resp(&[b"EXEC"]), if aborted { b"*-1\r\n" } else { b"*1\r\n+PONG\r\n" });
    }
    a.roundtrip(&resp(&[b"MULTI"]), b"+OK\r\n");
    a.roundtrip(&resp(&[b"RENAME", b"src", b"moved"]), b"+QUEUED\r\n");
    a.roundtrip(&resp(&[b"COPY", b"moved", b"twin"]), b"+QUEUED\r\n");
    a.roundtrip(&resp(&[b"TOUCH", b"src", b"moved", b"twin"]), b"+QUEUED\r\n");
    a.roundtrip(&resp(&[b"EXEC"]), b"*3\r\n+OK\r\n:1\r\n:2\r\n");
    a.roundtrip(&resp(&[b"MGET", b"src", b"moved", b"twin"]), b"*3\r\n$-1\r\n$1\r\nv\r\n$1\r\nv\r\n");
}

/// INCRBYFLOAT adds in long double and prints as Redis does (answers from
/// redis-server 7.0.15): the stored text is the reply.
#[test]
fn incrbyfloat_like_redis() {
    let s = Server::start();
    let mut c = Raw::connect(s.addr);
    let mut call = |args: &[&[u8]], want: &[u8]| c.roundtrip(&resp(args), want);
    call(&[b"SET", b"f", b"10.5"], b"+OK\r\n");
    call(&[b"INCRBYFLOAT", b"f", b"0.1"], b"$4\r\n10.6\r\n");
    // 10.6 is not exact in 64 bits of mantissa: 17 decimals show it.
    call(&[b"INCRBYFLOAT", b"f", b"-5.0e3"], b"$23\r\n-4989.39999999999999991\r\n");
    call(&[b"GET", b"f"], b"$23\r\n-4989.39999999999999991\r\n");
    call(&[b"INCRBYFLOAT", b"new", b"0x10"], b"$2\r\n16\r\n");
    call(&[b"INCRBYFLOAT", b"f", b"abc"], b"-ERR value is not a valid float\r\n");
    call(&[b"INCRBYFLOAT", b"f", b"inf"], b"-ERR increment would produce NaN or Infinity\r\n");
    call(&[b"SET", b"s", b"text"], b"+OK\r\n");
    call(&[b"INCRBYFLOAT", b"s", b"1"], b"-ERR value is not a valid float\r\n");
    call(&[b"GET", b"f"], b"$23\r\n-4989.39999999999999991\r\n");
}
