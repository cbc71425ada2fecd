//! Bytes a client sends to the server, run as a connection runs them.

use crate::Scratch;
use daxkv_server::Config;
use daxkv_server::cmd::{Ctx, Flow, Group, execute};
use daxkv_server::conn::prefetch_ahead;
use daxkv_server::frame::{Limits, parse};
use daxkv_server::reply::Out;
use daxkv_server::session::Session;
use daxkv_server::shared::{Shared, Shutdown};
use std::sync::OnceLock;

/// The server's configuration for an input, from its first byte: bit 0
/// asks for a password (the client starts unauthenticated), bit 1 for
/// small limits (so that inputs reach them), bit 2 for one-operation
/// commits (bit 3 is read by [`requests`]).
fn config(flags: u8) -> Config {
    let mut c = Config { threads: 1, ..Config::default() };
    if flags & 1 != 0 {
        c.requirepass = Some(b"pw".to_vec());
    }
    if flags & 2 != 0 {
        c.limits = Limits { max_bulk_len: 64, max_multibulk_len: 8, max_inline_len: 64, unauthenticated: false };
    }
    if flags & 4 != 0 {
        c.batch_ops = 1;
    }
    c
}

/// Run the bytes after the first (see [`config`]) as requests against an
/// empty store, the way a connection does: the look-ahead prefetch,
/// parsing, execution, the loop's commit. With bit 3 of the first byte
/// two clients take turns, a request each (so that one's writes meet the
/// other's WATCH and MULTI). The server must not panic or loop, must give
/// every request exactly one reply a real client (the `redis` crate)
/// parses, and must leave the store sound (`check`).
pub fn requests(data: &[u8]) {
    let Some((&flags, input)) = data.split_first() else { return };
    static WORLD: OnceLock<Scratch> = OnceLock::new();
    let w = WORLD.get_or_init(|| Scratch::new("fuzz-requests"));
    w.store.clear().expect("empty the store");
    let shared = Shared::new(w.store.clone(), config(flags), Shutdown::new());
    let clients = if flags & 8 != 0 { 2 } else { 1 };
    let authed = shared.config.requirepass.is_none();
    let mut sessions: Vec<Session> = (1..=clients).map(|id| Session::new(id, None, authed)).collect();
    let mut outs: Vec<Out> = (0..clients).map(|_| Out::new()).collect();
    let mut replies = vec![0usize; clients as usize];
    let mut group = Group::default();
    let (mut at, mut prefetched, mut turn) = (0, 0, 0);
    while at < input.len() {
        let c = turn % sessions.len();
        let mut ctx = Ctx { shared: &shared, session: &mut sessions[c], out: &mut outs[c], group: &mut group, conn: c };
        if at >= prefetched && ctx.session.authed {
            prefetched = prefetch_ahead(&shared, input, at);
            assert!(prefetched >= at, "the look-ahead went backwards");
        }
        let limits = Limits { unauthenticated: !ctx.session.authed, ..shared.config.limits };
        let buf = &input[at..];
        match parse(buf, &limits) {
            Ok(None) => break,
            Err(e) => {
                ctx.out.error(&format!("ERR {e}"));
                replies[c] += 1;
                break;
            }
            Ok(Some(req)) => {
                assert!(req.consumed > 0 && req.consumed <= buf.len(), "a request of {} bytes", req.consumed);
                at += req.consumed;
                if req.args.is_empty() {
                    continue;
                }
                turn += 1;
                let argv = req.argv(buf);
                match execute(&mut ctx, &argv) {
                    Flow::Continue => replies[c] += 1,
                    Flow::Close => {
                        replies[c] += 1;
                        break;
                    }
                    // SHUTDOWN closes the connection without a reply.
                    Flow::Shutdown => break,
                }
            }
        }
    }
    group.commit(&shared);
    for (out, &n) in outs.iter().zip(&replies) {
        check_replies(&out.buf, n);
    }
    let report = w.store.check().expect("check the store");
    assert!(report.is_ok(), "the store is damaged: {:?}", report.problems);
    w.store.purge_expired(b"", usize::MAX).expect("purge expired keys");
}

/// `buf` holds exactly `n` replies, each one a client (the `redis`
/// crate) parses.
fn check_replies(buf: &[u8], n: usize) {
    let mut rest = buf;
    for i in 0..n {
        let Some(len) = reply_len(rest) else {
            panic!("reply {i} of {n} is not whole: {:?}", String::from_utf8_lossy(rest));
        };
        // A status or error line may echo a client's bytes that are not
        // UTF-8 (Redis's own replies do), which the crate refuses to read.
        let reply = &rest[..len];
        let lossy;
        let readable = if matches!(reply[0], b'+' | b'-') {
            lossy = String::from_utf8_lossy(reply);
            lossy.as_bytes()
        } else {
            reply
        };
        if let Err(e) = redis::parse_redis_value(readable) {
            panic!("reply {i} of {n} does not parse ({e}): {:?}", String::from_utf8_lossy(reply));
        }
        rest = &rest[len..];
    }
    assert!(rest.is_empty(), "{n} replies, then {:?}", String::from_utf8_lossy(rest));
}

/// The length of the RESP2 or RESP3 reply at the start of `b`, if it is
/// whole: its type, a line, and for aggregates their elements.
fn reply_len(b: &[u8]) -> Option<usize> {
    let eol = b.windows(2).position(|w| w == b"\r\n")?;
    let head = eol + 2;
    // (Only lengths and counts are read: a line reply may hold any bytes.)
    let count = || std::str::from_utf8(&b[1..eol]).ok()?.parse::<i64>().ok();
    let items = |n: i64, mut at: usize| -> Option<usize> {
        for _ in 0..n.max(0) {
            at += reply_len(&b[at..])?;
        }
        Some(at)
    };
    match *b.first()? {
        b'+' | b'-' | b':' | b'_' | b',' | b'#' | b'(' => Some(head),
        b'$' | b'!' | b'=' => match count()? {
            -1 => Some(head),
            n if n >= 0 && b.get(head + n as usize..head + n as usize + 2)? == b"\r\n" => Some(head + n as usize + 2),
            _ => None,
        },
        b'*' | b'~' | b'>' => items(count()?, head),
        b'%' => items(2 * count()?, head),
        // An attribute comes before the reply it describes.
        b'|' => {
            let at = items(2 * count()?, head)?;
            Some(at + reply_len(&b[at..])?)
        }
        _ => None,
    }
}
