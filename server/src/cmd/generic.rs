//! The commands Redis has for keys of every type: RENAME, RENAMENX, COPY
//! and the expiry family (TOUCH counts like EXISTS, in `strings`). Written
//! against [`Kv`] like the string commands, so they run the same in a
//! pipeline, in a one-command transaction and inside MULTI/EXEC.
//!
//! Expiries are kept by the store, in each key's record (milliseconds since
//! the Unix epoch); a key whose time has passed is absent to every command,
//! and the server's purge removes it in the background (see `server`). An
//! expiry time already past deletes the key, as in Redis. Arguments are
//! checked in Redis's order, with its error messages.

use super::strings::writable;
use super::table::{Cmd, c_str};
use crate::frame::parse_i64;
use crate::kv::Kv;
use crate::reply::Out;
use crate::shared::local::lookup;
use daxkv::Error;

const NOT_INT: &str = "ERR value is not an integer or out of range";

fn expire_time_error(out: &mut Out, name: &str) {
    out.error(&format!("ERR invalid expire time in '{name}' command"));
}

/// Milliseconds since the Unix epoch, as Redis's clock reads them.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// How an expiry argument counts.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct Unit {
    seconds: bool,
    /// Relative to now (EX, PX, SETEX, EXPIRE) or absolute (EXAT, PXAT,
    /// EXPIREAT).
    relative: bool,
}

/// `n` in `unit` as an absolute time in ms, or `None` if converting it
/// overflows (Redis's "invalid expire time").
fn absolute_ms(n: i64, unit: Unit) -> Option<i64> {
    let ms = if unit.seconds { n.checked_mul(1000)? } else { n };
    if unit.relative { ms.checked_add(now_ms()) } else { Some(ms) }
}

/// A SET-style expiry (SET, SETEX, PSETEX, GETEX) as an absolute time in
/// ms, checked as Redis checks it: an integer, positive, and not
/// overflowing once converted. `None`: the error has been answered.
pub(super) fn positive_expiry(out: &mut Out, arg: &[u8], unit: Unit, name: &str) -> Option<i64> {
    let Some(n) = parse_i64(arg) else {
        out.error(NOT_INT);
        return None;
    };
    let at = if n > 0 { absolute_ms(n, unit) } else { None };
    if at.is_none() {
        expire_time_error(out, name);
    }
    at
}

/// The options SET and GETEX share, parsed the way Redis parses both (one
/// pass, options compared as C strings, a syntax error for anything out of
/// place); the time is only checked afterwards ([`positive_expiry`]).
#[derive(Default)]
pub(super) struct StringOpts<'a> {
    pub nx: bool,
    pub xx: bool,
    pub get: bool,
    pub keepttl: bool,
    persist: bool,
    /// EX/PX/EXAT/PXAT's argument and unit (the same option may repeat,
    /// the last counts; two different ones may not).
    pub time: Option<(&'a [u8], Unit)>,
}

/// Parse `args` as SET's options (`set`) or GETEX's; `None`: the syntax
/// error has been answered.
pub(super) fn string_opts<'a>(out: &mut Out, args: &[&'a [u8]], set: bool) -> Option<StringOpts<'a>> {
    let mut o = StringOpts::default();
    let mut i = 0;
    while i < args.len() {
        let a = c_str(args[i]).to_ascii_lowercase();
        let unit = match a.as_slice() {
            b"ex" => Some(Unit { seconds: true, relative: true }),
            b"px" => Some(Unit { seconds: false, relative: true }),
            b"exat" => Some(Unit { seconds: true, relative: false }),
            b"pxat" => Some(Unit { seconds: false, relative: false }),
            _ => None,
        };
        match (a.as_slice(), unit) {
            (_, Some(u)) if o.time.is_none_or(|(_, t)| t == u) && !o.keepttl && !o.persist && i + 1 < args.len() => {
                o.time = Some((args[i + 1], u));
                i += 1;
            }
            (b"nx", _) if set && !o.xx => o.nx = true,
            (b"xx", _) if set && !o.nx => o.xx = true,
            (b"get", _) if set => o.get = true,
            (b"keepttl", _) if set && o.time.is_none() => o.keepttl = true,
            (b"persist", _) if !set && o.time.is_none() => o.persist = true,
            _ => {
                out.error("ERR syntax error");
                return None;
            }
        }
        i += 1;
    }
    Some(o)
}

/// EXPIRE's options.
#[derive(Default)]
struct ExpireFlags {
    nx: bool,
    xx: bool,
    gt: bool,
    lt: bool,
}

fn parse_expire_flags(out: &mut Out, args: &[&[u8]]) -> Option<ExpireFlags> {
    let mut f = ExpireFlags::default();
    for a in args {
        match c_str(a).to_ascii_lowercase().as_slice() {
            b"nx" => f.nx = true,
            b"xx" => f.xx = true,
            b"gt" => f.gt = true,
            b"lt" => f.lt = true,
            _ => {
                let mut e = b"ERR Unsupported option ".to_vec();
                e.extend_from_slice(c_str(a));
                out.error_bytes(&e);
                return None;
            }
        }
    }
    if f.nx && (f.xx || f.gt || f.lt) {
        out.error("ERR NX and XX, GT or LT options at the same time are not compatible");
        return None;
    }
    if f.gt && f.lt {
        out.error("ERR GT and LT options at the same time are not compatible");
        return None;
    }
    Some(f)
}

/// Whether the database number `arg` (SELECT, COPY ... DB) is 0, the only
/// one daxkv has; if not, answers Redis's error for it.
pub fn db_zero(out: &mut Out, arg: &[u8]) -> bool {
    match parse_i64(arg) {
        None => out.error(NOT_INT),
        Some(0) => return true,
        Some(n) if i32::try_from(n).is_err() => {
            out.error("ERR value is out of range, value must between -2147483648 and 2147483647")
        }
        Some(_) => out.error("ERR DB index is out of range"),
    }
    false
}

/// Run one of this module's commands (the string commands hand over every
/// command that is not theirs).
pub fn exec(cmd: Cmd, argv: &[&[u8]], kv: &mut impl Kv, out: &mut Out) -> Result<(), Error> {
    match cmd {
        Cmd::Rename | Cmd::Renamenx => {
            let (from, to) = (argv[1], argv[2]);
            let Some(v) = kv.get(from)? else {
                out.error("ERR no such key");
                return Ok(());
            };
            // The time to live goes with the value.
            let at = kv.expiry(from)?.flatten();
            let nx = cmd == Cmd::Renamenx;
            if from == to {
                if nx {
                    out.int(0)
                } else {
                    out.ok()
                }
                return Ok(());
            }
            if nx && kv.with_value(to, |v| v.is_some())? {
                out.int(0);
                return Ok(());
            }
            if !writable(out, to, Some(&v)) {
                return Ok(());
            }
            kv.put_with_expiry(to, &v, at)?;
            kv.delete(from)?;
            if nx { out.int(1) } else { out.ok() }
        }
        Cmd::Copy => {
            // Each option is checked as it is read (a bad DB is refused
            // before a later syntax error is seen), as in Redis.
            let mut replace = false;
            let mut i = 3;
            while i < argv.len() {
                let a = c_str(argv[i]).to_ascii_lowercase();
                if a == b"replace" {
                    replace = true;
                } else if a == b"db" && i + 1 < argv.len() {
                    i += 1;
                    if !db_zero(out, argv[i]) {
                        return Ok(());
                    }
                } else {
                    out.error("ERR syntax error");
                    return Ok(());
                }
                i += 1;
            }
            let (from, to) = (argv[1], argv[2]);
            if from == to {
                out.error("ERR source and destination objects are the same");
                return Ok(());
            }
            let Some(v) = kv.get(from)? else {
                out.int(0);
                return Ok(());
            };
            if !replace && kv.with_value(to, |v| v.is_some())? {
                out.int(0);
                return Ok(());
            }
            if !writable(out, to, Some(&v)) {
                return Ok(());
            }
            // COPY copies the time to live as well.
            let at = kv.expiry(from)?.flatten();
            kv.put_with_expiry(to, &v, at)?;
            out.int(1);
        }
        Cmd::Ttl | Cmd::Pttl | Cmd::Expiretime | Cmd::Pexpiretime => {
            let at = kv.expiry(argv[1])?;
            lookup(at.is_some());
            out.int(match at {
                None => -2,
                Some(None) => -1,
                Some(Some(at)) => {
                    let at = at as i64;
                    let n = match cmd {
                        Cmd::Ttl | Cmd::Pttl => (at - now_ms()).max(0),
                        _ => at,
                    };
                    // Seconds are rounded half up, as Redis rounds them
                    // (without overflow at PEXPIREAT's largest time).
                    if matches!(cmd, Cmd::Pttl | Cmd::Pexpiretime) { n } else { n / 1000 + i64::from(n % 1000 >= 500) }
                }
            });
        }
        Cmd::Persist => {
            let had = match kv.expiry(argv[1])? {
                Some(Some(_)) => kv.get(argv[1])?,
                _ => None,
            };
            if let Some(v) = &had {
                kv.put_with_expiry(argv[1], v, None)?;
            }
            out.int(i64::from(had.is_some()));
        }
        Cmd::Getex => getex(argv, kv, out)?,
        Cmd::Setex | Cmd::Psetex => {
            let (name, seconds) = if cmd == Cmd::Setex { ("setex", true) } else { ("psetex", false) };
            let Some(at) = positive_expiry(out, argv[2], Unit { seconds, relative: true }, name) else {
                return Ok(());
            };
            if writable(out, argv[1], Some(argv[3])) {
                kv.put_with_expiry(argv[1], argv[3], Some(at as u64))?;
                out.ok();
            }
        }
        Cmd::Expire | Cmd::Pexpire | Cmd::Expireat | Cmd::Pexpireat => expire(cmd, argv, kv, out)?,
        _ => unreachable!("{cmd:?} is neither a string nor a generic command"),
    }
    Ok(())
}

/// GETEX key [EX s | PX ms | EXAT t | PXAT t | PERSIST], in Redis's order:
/// options, then the key (absent: nil, whatever the time says), then the
/// time.
fn getex(argv: &[&[u8]], kv: &mut impl Kv, out: &mut Out) -> Result<(), Error> {
    let Some(o) = string_opts(out, &argv[2..], false) else { return Ok(()) };
    let Some(v) = kv.get(argv[1])? else {
        lookup(false);
        out.null();
        return Ok(());
    };
    lookup(true);
    let Some((arg, unit)) = o.time else {
        if o.persist && kv.expiry(argv[1])?.flatten().is_some() {
            kv.put_with_expiry(argv[1], &v, None)?;
        }
        out.bulk(&v);
        return Ok(());
    };
    let Some(at) = positive_expiry(out, arg, unit, "getex") else { return Ok(()) };
    if at <= now_ms() {
        // A time already past: the value, and the key is gone.
        kv.delete(argv[1])?;
    } else {
        kv.put_with_expiry(argv[1], &v, Some(at as u64))?;
    }
    out.bulk(&v);
    Ok(())
}

/// EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT key time [NX|XX|GT|LT]: checked
/// in Redis's order (options, number, overflow, key, condition). A key
/// without an expiry counts as expiring never (GT never holds, LT always
/// does); a time already past deletes the key.
fn expire(cmd: Cmd, argv: &[&[u8]], kv: &mut impl Kv, out: &mut Out) -> Result<(), Error> {
    let (name, unit) = match cmd {
        Cmd::Expire => ("expire", Unit { seconds: true, relative: true }),
        Cmd::Pexpire => ("pexpire", Unit { seconds: false, relative: true }),
        Cmd::Expireat => ("expireat", Unit { seconds: true, relative: false }),
        _ => ("pexpireat", Unit { seconds: false, relative: false }),
    };
    let Some(flags) = parse_expire_flags(out, &argv[3..]) else { return Ok(()) };
    let Some(n) = parse_i64(argv[2]) else {
        out.error(NOT_INT);
        return Ok(());
    };
    // Negative times are allowed (already past); only overflow is not.
    let Some(at) = absolute_ms(n, unit) else {
        expire_time_error(out, name);
        return Ok(());
    };
    let Some(cur) = kv.expiry(argv[1])? else {
        out.int(0);
        return Ok(());
    };
    let cur = cur.map(|c| c as i64);
    let refused = flags.nx && cur.is_some()
        || flags.xx && cur.is_none()
        || flags.gt && cur.is_none_or(|c| at <= c)
        || flags.lt && cur.is_some_and(|c| at >= c);
    if refused {
        out.int(0);
        return Ok(());
    }
    if at <= now_ms() {
        kv.delete(argv[1])?;
    } else if let Some(v) = kv.get(argv[1])? {
        kv.put_with_expiry(argv[1], &v, Some(at as u64))?;
    }
    out.int(1);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_arguments_like_redis() {
        let mut out = Out::new();
        let rel = Unit { seconds: true, relative: true };
        assert!(positive_expiry(&mut out, b"x", rel, "setex").is_none());
        assert!(positive_expiry(&mut out, b"0", rel, "setex").is_none());
        assert!(positive_expiry(&mut out, b"-5", rel, "setex").is_none());
        assert!(positive_expiry(&mut out, b"9223372036854775807", rel, "setex").is_none());
        let at = positive_expiry(&mut out, b"10", rel, "setex").unwrap();
        assert!((at - now_ms() - 10_000).abs() < 5_000);
        let abs = Unit { seconds: false, relative: false };
        assert_eq!(positive_expiry(&mut out, b"123", abs, "getex"), Some(123));
        assert_eq!(
            String::from_utf8_lossy(&out.buf),
            "-ERR value is not an integer or out of range\r\n\
             -ERR invalid expire time in 'setex' command\r\n\
             -ERR invalid expire time in 'setex' command\r\n\
             -ERR invalid expire time in 'setex' command\r\n"
        );
        let mut out = Out::new();
        assert!(parse_expire_flags(&mut out, &[b"nx", b"GT"]).is_none());
        assert!(parse_expire_flags(&mut out, &[b"gt", b"lt"]).is_none());
        assert!(parse_expire_flags(&mut out, &[b"bo\0gus"]).is_none());
        assert!(parse_expire_flags(&mut out, &[b"XX", b"gt"]).is_some());
        assert_eq!(
            String::from_utf8_lossy(&out.buf),
            "-ERR NX and XX, GT or LT options at the same time are not compatible\r\n\
             -ERR GT and LT options at the same time are not compatible\r\n\
             -ERR Unsupported option bo\r\n"
        );
    }
}
