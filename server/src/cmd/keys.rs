//! Commands over the whole keyspace: DBSIZE, KEYS, SCAN, FLUSHDB/FLUSHALL.
//!
//! They read the store directly (its iterators walk keys in order); inside
//! MULTI they see the store as committed, not the transaction's own writes.
//! A SCAN cursor is a number standing for the last key returned (kept in
//! [`crate::shared::Cursors`]), so SCAN returns every key present for the
//! whole scan exactly once, in key order.

use super::strings::error_reply;
use super::table::Cmd;
use crate::frame::parse_i64;
use crate::glob;
use crate::reply::Out;
use crate::shared::Shared;
use daxkv::{Error, Store};
use std::ops::Bound;

/// Keys deleted per commit by FLUSHDB.
const FLUSH_CHUNK: usize = 1024;

/// Run a keyspace command.
pub fn exec(cmd: Cmd, argv: &[&[u8]], shared: &Shared, out: &mut Out) {
    let store = &shared.store;
    let res = match cmd {
        Cmd::Dbsize => {
            out.int(store.len() as i64);
            Ok(())
        }
        Cmd::Keys => keys(store, argv[1], out),
        Cmd::Scan => scan(shared, argv, out),
        Cmd::Flushdb | Cmd::Flushall => {
            if argv.len() > 2
                || argv.len() == 2 && !matches!(argv[1].to_ascii_uppercase().as_slice(), b"SYNC" | b"ASYNC")
            {
                out.error("ERR syntax error");
                return;
            }
            shared.watch.touch_all();
            flush(store).map(|()| out.ok())
        }
        _ => unreachable!("{cmd:?} is not a keyspace command"),
    };
    if let Err(e) = res {
        out.error(&error_reply(&e));
    }
}

fn keys(store: &Store, pattern: &[u8], out: &mut Out) -> Result<(), Error> {
    let mut found = Vec::new();
    for kv in store.prefix(glob::literal_prefix(pattern)) {
        let (k, _) = kv?;
        if glob::matches(pattern, &k) {
            found.push(k);
        }
    }
    out.array(found.len());
    for k in &found {
        out.bulk(k);
    }
    Ok(())
}

fn scan(shared: &Shared, argv: &[&[u8]], out: &mut Out) -> Result<(), Error> {
    let after = match parse_u64(argv[1]) {
        Some(0) => None,
        Some(id) => match shared.cursors.get(id) {
            Some(k) => Some(k),
            None => {
                out.error("ERR invalid cursor");
                return Ok(());
            }
        },
        None => {
            out.error("ERR invalid cursor");
            return Ok(());
        }
    };
    let mut count = 10usize;
    let mut pattern: Option<&[u8]> = None;
    let mut type_ok = true;
    let mut i = 2;
    while i < argv.len() {
        let opt = argv[i].to_ascii_uppercase();
        if i + 1 >= argv.len() {
            out.error("ERR syntax error");
            return Ok(());
        }
        match opt.as_slice() {
            b"COUNT" => match parse_i64(argv[i + 1]) {
                None => {
                    out.error("ERR value is not an integer or out of range");
                    return Ok(());
                }
                Some(n) if n < 1 => {
                    out.error("ERR syntax error");
                    return Ok(());
                }
                Some(n) => count = n.min(1 << 20) as usize,
            },
            b"MATCH" => pattern = Some(argv[i + 1]),
            b"TYPE" => type_ok = argv[i + 1].eq_ignore_ascii_case(b"string"),
            _ => {
                out.error("ERR syntax error");
                return Ok(());
            }
        }
        i += 2;
    }
    let store = &shared.store;
    let iter = match &after {
        None => store.range::<Vec<u8>>(..),
        Some(k) => store.range((Bound::Excluded(k.clone()), Bound::Unbounded)),
    };
    let mut last = None;
    let mut found = Vec::new();
    let mut more = false;
    for (seen, kv) in iter.enumerate() {
        let (k, _) = kv?;
        if seen == count {
            more = true;
            break;
        }
        if type_ok && pattern.is_none_or(|p| glob::matches(p, &k)) {
            found.push(k.clone());
        }
        last = Some(k);
    }
    let cursor = match (more, last) {
        (true, Some(k)) => shared.cursors.save(k),
        _ => 0,
    };
    out.array(2);
    out.bulk(cursor.to_string().as_bytes());
    out.array(found.len());
    for k in &found {
        out.bulk(k);
    }
    Ok(())
}

fn parse_u64(a: &[u8]) -> Option<u64> {
    if a.is_empty() || a.len() > 20 || !a.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(a).ok()?.parse().ok()
}

/// Delete every key, a chunk per commit.
pub fn flush(store: &Store) -> Result<(), Error> {
    loop {
        let mut ops = Vec::with_capacity(FLUSH_CHUNK);
        for kv in store.iter().take(FLUSH_CHUNK) {
            ops.push((kv?.0, None));
        }
        if ops.is_empty() {
            return Ok(());
        }
        store.write_batch(&ops)?;
    }
}
