//! Commands over the whole keyspace: DBSIZE, KEYS, SCAN, FLUSHDB/FLUSHALL.
//!
//! They read the store directly (its iterators walk keys in order); inside
//! MULTI they see the store with the transaction's own writes applied, as
//! Redis's would.
//! A SCAN cursor is a number standing for the last key returned (kept in
//! [`crate::shared::Cursors`]), so SCAN returns every key present for the
//! whole scan exactly once, in key order.

use super::strings::error_reply;
use super::table::Cmd;
use crate::frame::parse_i64;
use crate::glob;
use crate::kv::{Kv, TxKv};
use crate::reply::Out;
use crate::shared::{Shared, WatchTable};
use daxkv::{Error, Store, Tx};
use std::cmp::Ordering;
use std::iter::Peekable;
use std::ops::Bound;

/// Run a keyspace command; `tx`: the transaction of the EXEC it is part
/// of, whose writes it sees (and FLUSHDB/FLUSHALL joins).
pub fn exec(cmd: Cmd, argv: &[&[u8]], shared: &Shared, tx: Option<&mut Tx<'_>>, out: &mut Out) {
    let store = &shared.store;
    let res = match cmd {
        Cmd::Dbsize => dbsize(store, tx.as_deref()).map(|n| out.int(n)),
        Cmd::Keys => keys(store, tx.as_deref(), argv[1], out),
        Cmd::Scan => scan(shared, tx.as_deref(), argv, out),
        Cmd::Flushdb | Cmd::Flushall => {
            if !flush_args_ok(argv) {
                out.error("ERR syntax error");
                return;
            }
            match tx {
                Some(tx) => flush_in(store, tx, &shared.watch),
                None => flush(store, &shared.watch),
            }
            .map(|()| out.ok())
        }
        _ => unreachable!("{cmd:?} is not a keyspace command"),
    };
    if let Err(e) = res {
        out.error(&error_reply(&e));
    }
}

/// The number of keys, counting `tx`'s own puts and deletes.
fn dbsize(store: &Store, tx: Option<&Tx<'_>>) -> Result<i64, Error> {
    let mut n = store.len() as i64;
    for (k, v) in tx.into_iter().flat_map(|t| t.writes_in((Bound::Unbounded, Bound::Unbounded))) {
        n += i64::from(v.is_some()) - i64::from(store.contains(k)?);
    }
    Ok(n)
}

/// Keys of the store from `from` on, in order, with `tx`'s writes applied.
fn keys_from<'a>(
    store: &'a Store,
    tx: Option<&'a Tx<'_>>,
    from: Bound<&'a [u8]>,
) -> impl Iterator<Item = Result<Vec<u8>, Error>> + 'a {
    let stored = store.range::<&[u8]>((from, Bound::Unbounded)).map(|kv| kv.map(|(k, _)| k));
    let own = tx.into_iter().flat_map(move |t| t.writes_in((from, Bound::Unbounded)));
    Merge { stored: stored.peekable(), own: own.peekable() }
}

/// Stored keys merged with a transaction's writes, both in key order: a
/// put adds its key (once), a delete hides it.
struct Merge<S: Iterator, W: Iterator> {
    stored: Peekable<S>,
    own: Peekable<W>,
}

impl<'w, S, W> Iterator for Merge<S, W>
where
    S: Iterator<Item = Result<Vec<u8>, Error>>,
    W: Iterator<Item = (&'w [u8], Option<&'w [u8]>)>,
{
    type Item = Result<Vec<u8>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let order = match (self.stored.peek(), self.own.peek()) {
                (None, None) => return None,
                (Some(Err(_)), _) | (Some(Ok(_)), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some(Ok(k)), Some((w, _))) => k.as_slice().cmp(w),
            };
            if order == Ordering::Less {
                return self.stored.next();
            }
            if order == Ordering::Equal {
                self.stored.next();
            }
            if let Some((k, Some(_))) = self.own.next() {
                return Some(Ok(k.to_vec()));
            }
        }
    }
}

fn keys(store: &Store, tx: Option<&Tx<'_>>, pattern: &[u8], out: &mut Out) -> Result<(), Error> {
    let prefix = glob::literal_prefix(pattern);
    let mut found = Vec::new();
    for k in keys_from(store, tx, Bound::Included(prefix)) {
        let k = k?;
        if !k.starts_with(prefix) {
            break;
        }
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

fn scan(shared: &Shared, tx: Option<&Tx<'_>>, argv: &[&[u8]], out: &mut Out) -> Result<(), Error> {
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
    let from = match &after {
        None => Bound::Unbounded,
        Some(k) => Bound::Excluded(k.as_slice()),
    };
    let mut last = None;
    let mut found = Vec::new();
    let mut more = false;
    for (seen, k) in keys_from(&shared.store, tx, from).enumerate() {
        let k = k?;
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

/// FLUSHDB / FLUSHALL take nothing, SYNC or ASYNC.
fn flush_args_ok(argv: &[&[u8]]) -> bool {
    match argv {
        [_] => true,
        [_, mode] => matches!(mode.to_ascii_uppercase().as_slice(), b"SYNC" | b"ASYNC"),
        _ => false,
    }
}

/// FLUSHDB inside EXEC: delete every stored key, and every key the
/// transaction put, as part of `tx` (a key in neither is not touched: its
/// watchers see nothing).
fn flush_in(store: &Store, tx: &mut Tx<'_>, watch: &WatchTable) -> Result<(), Error> {
    let own: Vec<Vec<u8>> = tx.writes_in((Bound::Unbounded, Bound::Unbounded)).map(|(k, _)| k.to_vec()).collect();
    let mut kv = TxKv { tx, watch };
    for k in store.iter() {
        kv.delete(&k?.0)?;
    }
    for k in own {
        kv.delete(&k)?;
    }
    Ok(())
}

/// Delete every key in one atomic step ([`Store::clear_with`]). Only the
/// watchers of keys that existed see a change (as in Redis), and they see
/// it before any key is gone.
pub fn flush(store: &Store, watch: &WatchTable) -> Result<(), Error> {
    store.clear_with(|k| watch.touch(k)).map(|_| ())
}
