//! The string commands, written once against [`Kv`] so that they run the
//! same in a pipeline's batch, in a one-command transaction and inside
//! MULTI/EXEC. Argument errors are replies; a store error is returned (it
//! aborts the transaction it happens in).
//!
//! Every value is a string, so `WRONGTYPE` never arises.

use super::generic;
use super::table::Cmd;
use crate::float::FloatError;
use crate::frame::parse_i64;
use crate::kv::{Kv, check_write};
use crate::reply::Out;
use crate::shared::local::lookup;
use daxkv::{Error, MAX_VALUE};

const NOT_INT: &str = "ERR value is not an integer or out of range";
const TOO_BIG: &str = "ERR string exceeds maximum allowed size (proto-max-bulk-len)";

/// The reply text for a store error.
pub fn error_reply(e: &Error) -> String {
    match e {
        Error::PoolFull(_) => format!("OOM command not allowed when the pool is full ({e})"),
        _ => format!("ERR {e}"),
    }
}

/// Check a write before making it; answer the error if it is refused.
pub(super) fn writable(out: &mut Out, key: &[u8], value: Option<&[u8]>) -> bool {
    match check_write(key, value) {
        Ok(()) => true,
        Err(e) => {
            out.error(&error_reply(&e));
            false
        }
    }
}

/// Whether SET with these arguments is a blind write (no option that needs
/// to read the key), which a pipeline can batch: `SET k v`, and `SET k v
/// EX|PX n` (a relative time is in the future once checked).
pub fn set_is_plain(argv: &[&[u8]]) -> bool {
    argv.len() == 3 || argv.len() == 5 && (argv[3].eq_ignore_ascii_case(b"ex") || argv[3].eq_ignore_ascii_case(b"px"))
}

fn parse_int(out: &mut Out, a: &[u8]) -> Option<i64> {
    let v = parse_i64(a);
    if v.is_none() {
        out.error(NOT_INT);
    }
    v
}

/// Run a string command (or one of [`super::generic`]'s).
pub fn exec(cmd: Cmd, argv: &[&[u8]], kv: &mut impl Kv, out: &mut Out) -> Result<(), Error> {
    match cmd {
        Cmd::Get => {
            let found = kv.with_value(argv[1], |v| {
                out.opt_bulk(v);
                v.is_some()
            })?;
            lookup(found);
        }
        Cmd::Set => {
            let Some(o) = generic::string_opts(out, &argv[3..], true) else { return Ok(()) };
            let mut at = None;
            if let Some((arg, unit)) = o.time {
                let Some(t) = generic::positive_expiry(out, arg, unit, "set") else { return Ok(()) };
                at = Some(t);
            }
            // A time already past (EXAT or PXAT) leaves the key absent.
            let expired = at.is_some_and(|t| t <= generic::now_ms());
            let at = at.map(|t| t as u64);
            let (key, val) = (argv[1], argv[2]);
            if !writable(out, key, Some(val)) {
                return Ok(());
            }
            if !(o.nx || o.xx || o.get || o.keepttl || expired) {
                kv.put_with_expiry(key, val, at)?;
                out.ok();
                return Ok(());
            }
            let old = kv.get(key)?;
            let go = !(o.nx && old.is_some() || o.xx && old.is_none());
            if go && expired {
                kv.delete(key)?;
            } else if go && o.keepttl {
                kv.put_keeping_expiry(key, val)?;
            } else if go {
                kv.put_with_expiry(key, val, at)?;
            }
            if o.get {
                out.opt_bulk(old.as_deref());
            } else if go {
                out.ok();
            } else {
                out.null();
            }
        }
        Cmd::Setnx => {
            if !writable(out, argv[1], Some(argv[2])) {
                return Ok(());
            }
            if kv.get(argv[1])?.is_some() {
                out.int(0);
            } else {
                kv.put(argv[1], argv[2])?;
                out.int(1);
            }
        }
        Cmd::Getset => {
            if !writable(out, argv[1], Some(argv[2])) {
                return Ok(());
            }
            let old = kv.get(argv[1])?;
            lookup(old.is_some());
            kv.put(argv[1], argv[2])?;
            out.opt_bulk(old.as_deref());
        }
        Cmd::Getdel => {
            let old = kv.get(argv[1])?;
            lookup(old.is_some());
            if old.is_some() {
                kv.delete(argv[1])?;
            }
            out.opt_bulk(old.as_deref());
        }
        Cmd::Mget => {
            out.array(argv.len() - 1);
            for k in &argv[1..] {
                let found = kv.with_value(k, |v| {
                    out.opt_bulk(v);
                    v.is_some()
                })?;
                lookup(found);
            }
        }
        Cmd::Mset | Cmd::Msetnx => {
            if argv.len().is_multiple_of(2) {
                let name = if cmd == Cmd::Mset { "mset" } else { "msetnx" };
                out.error(&format!("ERR wrong number of arguments for '{name}' command"));
                return Ok(());
            }
            for p in argv[1..].chunks(2) {
                if !writable(out, p[0], Some(p[1])) {
                    return Ok(());
                }
            }
            if cmd == Cmd::Msetnx {
                for p in argv[1..].chunks(2) {
                    if kv.get(p[0])?.is_some() {
                        out.int(0);
                        return Ok(());
                    }
                }
            }
            for p in argv[1..].chunks(2) {
                kv.put(p[0], p[1])?;
            }
            if cmd == Cmd::Mset { out.ok() } else { out.int(1) }
        }
        Cmd::Del | Cmd::Unlink => {
            let mut n = 0;
            for k in &argv[1..] {
                n += i64::from(kv.delete(k)?);
            }
            out.int(n);
        }
        // TOUCH only counts: no key has an access time to update.
        Cmd::Exists | Cmd::Touch => {
            let mut n = 0;
            for k in &argv[1..] {
                let found = kv.with_value(k, |v| v.is_some())?;
                lookup(found);
                n += i64::from(found);
            }
            out.int(n);
        }
        Cmd::Incr | Cmd::Decr | Cmd::Incrby | Cmd::Decrby => {
            let by = match cmd {
                Cmd::Incr => 1,
                Cmd::Decr => -1,
                _ => {
                    let Some(n) = parse_int(out, argv[2]) else { return Ok(()) };
                    if cmd == Cmd::Decrby {
                        let Some(n) = n.checked_neg() else {
                            out.error("ERR decrement would overflow");
                            return Ok(());
                        };
                        n
                    } else {
                        n
                    }
                }
            };
            if !writable(out, argv[1], Some(b"")) {
                return Ok(());
            }
            let cur = match kv.get(argv[1])? {
                None => 0,
                Some(v) => match parse_i64(&v) {
                    Some(n) => n,
                    None => {
                        out.error(NOT_INT);
                        return Ok(());
                    }
                },
            };
            let Some(new) = cur.checked_add(by) else {
                out.error("ERR increment or decrement would overflow");
                return Ok(());
            };
            kv.put_keeping_expiry(argv[1], new.to_string().as_bytes())?;
            out.int(new);
        }
        Cmd::Incrbyfloat => {
            if !writable(out, argv[1], Some(b"")) {
                return Ok(());
            }
            let cur = kv.get(argv[1])?;
            match crate::float::incr_by_float(cur.as_deref(), argv[2]) {
                Ok(new) => {
                    kv.put_keeping_expiry(argv[1], &new)?;
                    out.bulk(&new);
                }
                Err(FloatError::NotAFloat) => out.error("ERR value is not a valid float"),
                Err(FloatError::NanOrInfinity) => out.error("ERR increment would produce NaN or Infinity"),
            }
        }
        Cmd::Append => {
            if !writable(out, argv[1], Some(b"")) {
                return Ok(());
            }
            let mut v = kv.get(argv[1])?.unwrap_or_default();
            if v.len() + argv[2].len() > MAX_VALUE {
                out.error(TOO_BIG);
                return Ok(());
            }
            v.extend_from_slice(argv[2]);
            kv.put_keeping_expiry(argv[1], &v)?;
            out.int(v.len() as i64);
        }
        Cmd::Strlen => {
            let len = kv.with_value(argv[1], |v| v.map(<[u8]>::len))?;
            lookup(len.is_some());
            out.int(len.unwrap_or(0) as i64);
        }
        Cmd::Getrange | Cmd::Substr => {
            let Some(start) = parse_int(out, argv[2]) else { return Ok(()) };
            let Some(end) = parse_int(out, argv[3]) else { return Ok(()) };
            let found = kv.with_value(argv[1], |v| {
                out.bulk(getrange(v.unwrap_or_default(), start, end));
                v.is_some()
            })?;
            lookup(found);
        }
        Cmd::Setrange => {
            let Some(off) = parse_int(out, argv[2]) else { return Ok(()) };
            if off < 0 {
                out.error("ERR offset is out of range");
                return Ok(());
            }
            let val = argv[3];
            let cur = kv.get(argv[1])?;
            if val.is_empty() {
                out.int(cur.map_or(0, |v| v.len() as i64));
                return Ok(());
            }
            let off = off as u64;
            if off + val.len() as u64 > MAX_VALUE as u64 {
                out.error(TOO_BIG);
                return Ok(());
            }
            if !writable(out, argv[1], Some(b"")) {
                return Ok(());
            }
            let off = off as usize;
            let mut v = cur.unwrap_or_default();
            if v.len() < off + val.len() {
                v.resize(off + val.len(), 0);
            }
            v[off..off + val.len()].copy_from_slice(val);
            kv.put_keeping_expiry(argv[1], &v)?;
            out.int(v.len() as i64);
        }
        Cmd::Type => {
            let found = kv.with_value(argv[1], |v| v.is_some())?;
            out.simple(if found { "string" } else { "none" });
        }
        _ => generic::exec(cmd, argv, kv, out)?,
    }
    Ok(())
}

/// Redis's GETRANGE arithmetic.
fn getrange(v: &[u8], mut start: i64, mut end: i64) -> &[u8] {
    let len = v.len() as i64;
    if start < 0 && end < 0 && start > end {
        return b"";
    }
    if start < 0 {
        start += len;
    }
    if end < 0 {
        end += len;
    }
    start = start.max(0);
    end = end.max(0);
    if end >= len {
        end = len - 1;
    }
    if len == 0 || start > end {
        return b"";
    }
    &v[start as usize..=end as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn getrange_like_redis() {
        let v = b"This is a string";
        assert_eq!(getrange(v, 0, 3), b"This");
        assert_eq!(getrange(v, -3, -1), b"ing");
        assert_eq!(getrange(v, 0, -1), v);
        assert_eq!(getrange(v, 10, 100), b"string");
        assert_eq!(getrange(v, 5, 3), b"");
        assert_eq!(getrange(v, -1, -5), b"");
        assert_eq!(getrange(b"", 0, -1), b"");
        assert_eq!(getrange(v, -100, 2), b"Thi");
    }
}
