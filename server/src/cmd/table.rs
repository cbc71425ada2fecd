//! The command table: names, arities (Redis's convention: `n` exactly,
//! `-n` at least n, counting the name), flags for COMMAND, and how each is
//! executed.

/// Every command the server knows.
#[allow(missing_docs)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmd {
    Ping,
    Echo,
    Quit,
    Select,
    Hello,
    Auth,
    Client,
    Command,
    Config,
    Info,
    Time,
    Reset,
    Shutdown,
    Dbsize,
    Flushdb,
    Flushall,
    Keys,
    Scan,
    Multi,
    Exec,
    Discard,
    Watch,
    Unwatch,
    Get,
    Set,
    Setnx,
    Getset,
    Getdel,
    Mget,
    Mset,
    Msetnx,
    Del,
    Unlink,
    Exists,
    Incr,
    Incrby,
    Decr,
    Decrby,
    Incrbyfloat,
    Append,
    Strlen,
    Getrange,
    Substr,
    Setrange,
    Type,
    Rename,
    Renamenx,
    Copy,
    Touch,
    Ttl,
    Pttl,
    Expiretime,
    Pexpiretime,
    Persist,
    Getex,
    Setex,
    Psetex,
    Expire,
    Pexpire,
    Expireat,
    Pexpireat,
}

/// How a command runs outside MULTI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Reads and blind writes: run against the connection's pending batch.
    Batched,
    /// Read-modify-write: one store transaction each.
    Atomic,
    /// Walks or clears the keyspace.
    Keyspace,
    /// Connection and server commands.
    Admin,
}

/// A command's description.
#[derive(Debug)]
pub struct Spec {
    /// Which command.
    pub cmd: Cmd,
    /// Lower-case name.
    pub name: &'static str,
    /// Arity, Redis's way.
    pub arity: i32,
    /// How it runs.
    pub kind: Kind,
    /// Flags reported by COMMAND.
    pub flags: &'static [&'static str],
    /// First key, last key, step (COMMAND).
    pub keys: (i32, i32, i32),
    /// Allowed before AUTH.
    pub no_auth: bool,
}

const R: &[&str] = &["readonly", "fast"];
const W: &[&str] = &["write", "denyoom"];
const WF: &[&str] = &["write", "denyoom", "fast"];
const A: &[&str] = &["fast"];
const L: &[&str] = &["loading", "stale", "fast", "no_auth"];

macro_rules! spec {
    ($cmd:ident, $name:literal, $arity:expr, $kind:ident, $flags:expr, $keys:expr) => {
        Spec {
            cmd: Cmd::$cmd,
            name: $name,
            arity: $arity,
            kind: Kind::$kind,
            flags: $flags,
            keys: $keys,
            no_auth: false,
        }
    };
    ($cmd:ident, $name:literal, $arity:expr, $kind:ident, $flags:expr, $keys:expr, noauth) => {
        Spec {
            cmd: Cmd::$cmd,
            name: $name,
            arity: $arity,
            kind: Kind::$kind,
            flags: $flags,
            keys: $keys,
            no_auth: true,
        }
    };
}

/// The table.
pub static COMMANDS: &[Spec] = &[
    spec!(Get, "get", 2, Batched, R, (1, 1, 1)),
    spec!(Set, "set", -3, Batched, W, (1, 1, 1)),
    spec!(Ping, "ping", -1, Admin, A, (0, 0, 0)),
    spec!(Echo, "echo", 2, Admin, A, (0, 0, 0)),
    spec!(Quit, "quit", -1, Admin, L, (0, 0, 0), noauth),
    spec!(Select, "select", 2, Admin, &["loading", "stale", "fast"], (0, 0, 0)),
    spec!(Hello, "hello", -1, Admin, L, (0, 0, 0), noauth),
    spec!(Auth, "auth", -2, Admin, L, (0, 0, 0), noauth),
    spec!(Client, "client", -2, Admin, &["loading", "stale"], (0, 0, 0)),
    spec!(Command, "command", -1, Admin, &["loading", "stale"], (0, 0, 0)),
    spec!(Config, "config", -2, Admin, &["admin", "loading", "stale"], (0, 0, 0)),
    spec!(Info, "info", -1, Admin, &["loading", "stale"], (0, 0, 0)),
    spec!(Time, "time", 1, Admin, A, (0, 0, 0)),
    spec!(Reset, "reset", 1, Admin, L, (0, 0, 0), noauth),
    spec!(Shutdown, "shutdown", -1, Admin, &["admin", "noscript", "loading", "stale", "no_multi"], (0, 0, 0)),
    spec!(Dbsize, "dbsize", 1, Keyspace, R, (0, 0, 0)),
    spec!(Flushdb, "flushdb", -1, Keyspace, &["write"], (0, 0, 0)),
    spec!(Flushall, "flushall", -1, Keyspace, &["write"], (0, 0, 0)),
    spec!(Keys, "keys", 2, Keyspace, &["readonly"], (0, 0, 0)),
    spec!(Scan, "scan", -2, Keyspace, &["readonly"], (0, 0, 0)),
    spec!(Multi, "multi", 1, Admin, &["noscript", "loading", "stale", "fast", "allow_busy"], (0, 0, 0)),
    spec!(Exec, "exec", 1, Admin, &["noscript", "loading", "stale", "skip_slowlog"], (0, 0, 0)),
    spec!(Discard, "discard", 1, Admin, &["noscript", "loading", "stale", "fast", "allow_busy"], (0, 0, 0)),
    spec!(Watch, "watch", -2, Admin, &["noscript", "loading", "stale", "fast", "allow_busy"], (1, -1, 1)),
    spec!(Unwatch, "unwatch", 1, Admin, &["noscript", "loading", "stale", "fast", "allow_busy"], (0, 0, 0)),
    spec!(Setnx, "setnx", 3, Atomic, WF, (1, 1, 1)),
    spec!(Getset, "getset", 3, Atomic, WF, (1, 1, 1)),
    spec!(Getdel, "getdel", 2, Atomic, &["write", "fast"], (1, 1, 1)),
    spec!(Mget, "mget", -2, Batched, R, (1, -1, 1)),
    spec!(Mset, "mset", -3, Batched, W, (1, -1, 2)),
    spec!(Msetnx, "msetnx", -3, Atomic, W, (1, -1, 2)),
    spec!(Del, "del", -2, Atomic, &["write"], (1, -1, 1)),
    spec!(Unlink, "unlink", -2, Atomic, &["write", "fast"], (1, -1, 1)),
    spec!(Exists, "exists", -2, Batched, R, (1, -1, 1)),
    spec!(Incr, "incr", 2, Atomic, WF, (1, 1, 1)),
    spec!(Incrby, "incrby", 3, Atomic, WF, (1, 1, 1)),
    spec!(Decr, "decr", 2, Atomic, WF, (1, 1, 1)),
    spec!(Decrby, "decrby", 3, Atomic, WF, (1, 1, 1)),
    spec!(Incrbyfloat, "incrbyfloat", 3, Atomic, WF, (1, 1, 1)),
    spec!(Append, "append", 3, Atomic, W, (1, 1, 1)),
    spec!(Strlen, "strlen", 2, Batched, R, (1, 1, 1)),
    spec!(Getrange, "getrange", 4, Batched, &["readonly"], (1, 1, 1)),
    spec!(Substr, "substr", 4, Batched, &["readonly"], (1, 1, 1)),
    spec!(Setrange, "setrange", 4, Atomic, W, (1, 1, 1)),
    spec!(Type, "type", 2, Batched, R, (1, 1, 1)),
    spec!(Rename, "rename", 3, Atomic, &["write"], (1, 2, 1)),
    spec!(Renamenx, "renamenx", 3, Atomic, &["write", "fast"], (1, 2, 1)),
    spec!(Copy, "copy", -3, Atomic, W, (1, 2, 1)),
    spec!(Touch, "touch", -2, Batched, R, (1, -1, 1)),
    spec!(Ttl, "ttl", 2, Batched, R, (1, 1, 1)),
    spec!(Pttl, "pttl", 2, Batched, R, (1, 1, 1)),
    spec!(Expiretime, "expiretime", 2, Batched, R, (1, 1, 1)),
    spec!(Pexpiretime, "pexpiretime", 2, Batched, R, (1, 1, 1)),
    // Atomic: they read the key, then rewrite it with its new expiry.
    spec!(Persist, "persist", 2, Atomic, &["write", "fast"], (1, 1, 1)),
    spec!(Getex, "getex", -2, Atomic, &["write", "fast"], (1, 1, 1)),
    spec!(Setex, "setex", 4, Batched, W, (1, 1, 1)),
    spec!(Psetex, "psetex", 4, Batched, W, (1, 1, 1)),
    spec!(Expire, "expire", -3, Atomic, &["write", "fast"], (1, 1, 1)),
    spec!(Pexpire, "pexpire", -3, Atomic, &["write", "fast"], (1, 1, 1)),
    spec!(Expireat, "expireat", -3, Atomic, &["write", "fast"], (1, 1, 1)),
    spec!(Pexpireat, "pexpireat", -3, Atomic, &["write", "fast"], (1, 1, 1)),
];

/// The command named `name` (any case).
pub fn lookup(name: &[u8]) -> Option<&'static Spec> {
    COMMANDS.iter().find(|s| s.name.len() == name.len() && s.name.as_bytes().eq_ignore_ascii_case(name))
}

/// Whether `argc` arguments (with the name) suit `arity`.
pub fn arity_ok(arity: i32, argc: usize) -> bool {
    let argc = argc as i64;
    let arity = i64::from(arity);
    if arity >= 0 { argc == arity } else { argc >= -arity }
}

/// Subcommands of the container commands: (name, arity).
pub fn subcommands(cmd: Cmd) -> &'static [(&'static str, i32)] {
    match cmd {
        Cmd::Client => &[
            ("id", 2),
            ("setname", 3),
            ("getname", 2),
            ("setinfo", 4),
            ("info", 2),
            ("list", -2),
            ("no-evict", 3),
            ("no-touch", 3),
            ("help", 2),
        ],
        Cmd::Config => &[("get", -3), ("set", -4), ("resetstat", 2), ("rewrite", 2), ("help", 2)],
        Cmd::Command => &[("count", 2), ("info", -2), ("docs", -2), ("list", -2), ("getkeys", -3), ("help", 2)],
        _ => &[],
    }
}

/// For a container command, the error its subcommand earns (unknown
/// subcommand, or wrong arity for it), as Redis words it.
pub fn check_subcommand(spec: &Spec, argv: &[&[u8]]) -> Option<Vec<u8>> {
    let subs = subcommands(spec.cmd);
    if subs.is_empty() || argv.len() < 2 {
        return None;
    }
    let sub = argv[1];
    match subs.iter().find(|(n, _)| n.as_bytes().eq_ignore_ascii_case(sub)) {
        None => {
            let mut e = b"ERR unknown subcommand '".to_vec();
            let sub = c_str(sub);
            e.extend_from_slice(&sub[..sub.len().min(128)]);
            e.extend_from_slice(format!("'. Try {} HELP.", spec.name.to_uppercase()).as_bytes());
            Some(e)
        }
        Some((n, arity)) if !arity_ok(*arity, argv.len()) => {
            Some(format!("ERR wrong number of arguments for '{}|{}' command", spec.name, n).into_bytes())
        }
        _ => None,
    }
}

/// `a` as Redis prints it into an error message: a C string, which ends
/// at the first NUL byte.
pub(crate) fn c_str(a: &[u8]) -> &[u8] {
    &a[..a.iter().position(|&b| b == 0).unwrap_or(a.len())]
}

/// Redis's reply to a command it does not know.
pub fn unknown_command(argv: &[&[u8]]) -> Vec<u8> {
    let mut args = Vec::new();
    for a in &argv[1..] {
        if args.len() >= 128 {
            break;
        }
        let room = 128 - args.len();
        args.push(b'\'');
        let a = c_str(a);
        args.extend_from_slice(&a[..a.len().min(room)]);
        args.extend_from_slice(b"' ");
    }
    let mut e = b"ERR unknown command '".to_vec();
    let name = c_str(argv[0]);
    e.extend_from_slice(&name[..name.len().min(128)]);
    e.extend_from_slice(b"', with args beginning with: ");
    e.extend_from_slice(&args);
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_and_errors() {
        assert_eq!(lookup(b"gEt").unwrap().cmd, Cmd::Get);
        assert!(lookup(b"nope").is_none());
        assert!(arity_ok(-3, 3) && arity_ok(-3, 5) && !arity_ok(-3, 2) && arity_ok(2, 2) && !arity_ok(2, 3));
        assert_eq!(
            unknown_command(&[b"foo", b"a", b"b"]),
            b"ERR unknown command 'foo', with args beginning with: 'a' 'b' "
        );
        assert_eq!(
            unknown_command(&[b"fo\0o", b"a\0b", b"\0", b"c"]),
            b"ERR unknown command 'fo', with args beginning with: 'a' '' 'c' "
        );
        assert_eq!(unknown_command(&[b"foo"]), b"ERR unknown command 'foo', with args beginning with: ");
        let client = lookup(b"client").unwrap();
        assert_eq!(
            check_subcommand(client, &[b"client", b"foo"]).unwrap(),
            b"ERR unknown subcommand 'foo'. Try CLIENT HELP."
        );
        assert_eq!(
            check_subcommand(client, &[b"client", b"fo\0o"]).unwrap(),
            b"ERR unknown subcommand 'fo'. Try CLIENT HELP."
        );
        assert_eq!(
            check_subcommand(client, &[b"client", b"SETNAME"]).unwrap(),
            b"ERR wrong number of arguments for 'client|setname' command"
        );
        for s in COMMANDS {
            assert_eq!(lookup(s.name.as_bytes()).unwrap().cmd, s.cmd, "{} listed twice", s.name);
        }
    }
}
