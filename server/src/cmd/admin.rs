//! Connection and server commands: PING, ECHO, QUIT, SELECT, HELLO, AUTH,
//! CLIENT, COMMAND, CONFIG, INFO, TIME, RESET, SHUTDOWN.

use super::table::{COMMANDS, Cmd, Spec, lookup};
use super::{Ctx, Flow};
use crate::frame::parse_i64;
use crate::glob;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;

/// The Redis version daxkv answers as (its commands follow Redis 7.2).
pub const REDIS_VERSION: &str = "7.2.0";

const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

/// Compare without leaking where the first difference is.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Check credentials; `Err` is the error reply.
fn check_auth(ctx: &Ctx<'_>, user: Option<&[u8]>, pass: &[u8]) -> Result<(), &'static str> {
    let default_user = user.is_none_or(|u| u == b"default");
    match &ctx.shared.config.requirepass {
        None if user.is_none() => Err(
            "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
        ),
        None if default_user => Ok(()),
        Some(pw) if default_user && same_secret(pw, pass) => Ok(()),
        _ => Err(WRONGPASS),
    }
}

/// Run a connection or server command (not MULTI/EXEC/WATCH).
pub fn exec(ctx: &mut Ctx<'_>, spec: &Spec, argv: &[&[u8]]) -> Flow {
    let out = &mut *ctx.out;
    match spec.cmd {
        Cmd::Ping => match argv.len() {
            1 => out.simple("PONG"),
            2 => out.bulk(argv[1]),
            _ => out.error("ERR wrong number of arguments for 'ping' command"),
        },
        Cmd::Echo => out.bulk(argv[1]),
        Cmd::Quit => {
            out.ok();
            return Flow::Close;
        }
        Cmd::Select => {
            if super::generic::db_zero(out, argv[1]) {
                out.ok();
            }
        }
        Cmd::Time => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            out.array(2);
            out.bulk(now.as_secs().to_string().as_bytes());
            out.bulk(now.subsec_micros().to_string().as_bytes());
        }
        Cmd::Auth => {
            if argv.len() > 3 {
                out.error("ERR syntax error");
                return Flow::Continue;
            }
            let (user, pass) = if argv.len() == 3 { (Some(argv[1]), argv[2]) } else { (None, argv[1]) };
            match check_auth(ctx, user, pass) {
                Ok(()) => {
                    ctx.session.authed = true;
                    ctx.out.ok();
                }
                Err(e) => ctx.out.error(e),
            }
        }
        Cmd::Hello => return hello(ctx, argv),
        Cmd::Client => client(ctx, argv),
        Cmd::Command => command(ctx, argv),
        Cmd::Config => config(ctx, argv),
        Cmd::Info => {
            let text = info(ctx, argv);
            ctx.out.verbatim(&text);
        }
        Cmd::Reset => {
            ctx.session.multi = None;
            ctx.session.multi_dirty = false;
            ctx.session.watched.clear();
            ctx.session.name = None;
            ctx.session.authed = ctx.shared.config.requirepass.is_none();
            ctx.out.resp3 = false;
            ctx.out.simple("RESET");
        }
        Cmd::Shutdown => {
            for a in &argv[1..] {
                match a.to_ascii_uppercase().as_slice() {
                    b"NOSAVE" | b"SAVE" | b"NOW" | b"FORCE" => {}
                    b"ABORT" => {
                        out.error("ERR No shutdown in progress.");
                        return Flow::Continue;
                    }
                    _ => {
                        out.error("ERR syntax error");
                        return Flow::Continue;
                    }
                }
            }
            log::info!("SHUTDOWN asked by client {}", ctx.session.id);
            ctx.shared.shutdown.trigger();
            return Flow::Shutdown;
        }
        // Dispatch sends every other command elsewhere; should one arrive
        // here all the same, it is refused rather than taking the event
        // loop down.
        _ => {
            log::error!("{:?} reached the admin commands' dispatch", spec.cmd);
            out.error(&format!("ERR internal error: {} cannot run here", spec.name));
        }
    }
    Flow::Continue
}

fn hello(ctx: &mut Ctx<'_>, argv: &[&[u8]]) -> Flow {
    let mut proto = None;
    if argv.len() >= 2 {
        match parse_i64(argv[1]) {
            None => {
                ctx.out.error("ERR Protocol version is not an integer or out of range");
                return Flow::Continue;
            }
            Some(v @ (2 | 3)) => proto = Some(v),
            Some(_) => {
                ctx.out.error("NOPROTO unsupported protocol version");
                return Flow::Continue;
            }
        }
    }
    let mut auth = None;
    let mut name = None;
    let mut i = 2;
    while i < argv.len() {
        let opt = argv[i].to_ascii_uppercase();
        match opt.as_slice() {
            b"AUTH" if i + 2 < argv.len() => {
                auth = Some((argv[i + 1], argv[i + 2]));
                i += 3;
            }
            b"SETNAME" if i + 1 < argv.len() => {
                name = Some(argv[i + 1]);
                i += 2;
            }
            _ => {
                let mut e = b"ERR Syntax error in HELLO option '".to_vec();
                e.extend_from_slice(argv[i]);
                e.push(b'\'');
                ctx.out.error_bytes(&e);
                return Flow::Continue;
            }
        }
    }
    if let Some((user, pass)) = auth {
        if let Err(e) = check_auth(ctx, Some(user), pass) {
            ctx.out.error(e);
            return Flow::Continue;
        }
        ctx.session.authed = true;
    }
    if !ctx.session.authed {
        ctx.out.error(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time",
        );
        return Flow::Continue;
    }
    if let Some(n) = name {
        if !valid_name(n) {
            ctx.out.error("ERR Client names cannot contain spaces, newlines or special characters.");
            return Flow::Continue;
        }
        ctx.session.name = if n.is_empty() { None } else { Some(n.to_vec()) };
    }
    if let Some(p) = proto {
        ctx.out.resp3 = p == 3;
    }
    let out = &mut *ctx.out;
    out.map(7);
    out.bulk(b"server");
    out.bulk(b"redis");
    out.bulk(b"version");
    out.bulk(REDIS_VERSION.as_bytes());
    out.bulk(b"proto");
    out.int(if out.resp3 { 3 } else { 2 });
    out.bulk(b"id");
    out.int(ctx.session.id as i64);
    out.bulk(b"mode");
    out.bulk(b"standalone");
    out.bulk(b"role");
    out.bulk(b"master");
    out.bulk(b"modules");
    out.array(0);
    Flow::Continue
}

fn valid_name(n: &[u8]) -> bool {
    n.iter().all(|&c| (b'!'..=b'~').contains(&c))
}

fn client(ctx: &mut Ctx<'_>, argv: &[&[u8]]) {
    let sub = argv[1].to_ascii_lowercase();
    let out = &mut *ctx.out;
    match sub.as_slice() {
        b"id" => out.int(ctx.session.id as i64),
        b"getname" => out.opt_bulk(ctx.session.name.as_deref()),
        b"setname" => {
            if !valid_name(argv[2]) {
                out.error("ERR Client names cannot contain spaces, newlines or special characters.");
            } else {
                ctx.session.name = if argv[2].is_empty() { None } else { Some(argv[2].to_vec()) };
                out.ok();
            }
        }
        b"setinfo" => {
            // The option as Redis reads and prints it: a C string.
            let opt = super::table::c_str(argv[2]);
            let slot = match opt.to_ascii_lowercase().as_slice() {
                b"lib-name" => &mut ctx.session.lib.0,
                b"lib-ver" => &mut ctx.session.lib.1,
                _ => {
                    out.error_bytes(&[&b"ERR Unrecognized option '"[..], opt, b"'"].concat());
                    return;
                }
            };
            if valid_name(argv[3]) {
                *slot = argv[3].to_vec();
                out.ok();
            } else {
                out.error_bytes(
                    &[&b"ERR "[..], opt, b" cannot contain spaces, newlines or special characters."].concat(),
                );
            }
        }
        b"no-evict" | b"no-touch" => out.ok(),
        b"info" | b"list" => {
            let s = &ctx.session;
            let line = format!(
                "id={} addr={} name={} age={} db=0 multi={} resp={} lib-name={} lib-ver={}\n",
                s.id,
                s.peer.map_or_else(String::new, |p| p.to_string()),
                String::from_utf8_lossy(s.name.as_deref().unwrap_or_default()),
                s.since.elapsed().as_secs(),
                s.multi.as_ref().map_or(-1, |q| q.len() as i64),
                if out.resp3 { 3 } else { 2 },
                String::from_utf8_lossy(&s.lib.0),
                String::from_utf8_lossy(&s.lib.1),
            );
            out.verbatim(&line);
        }
        _ => {
            let help = [
                "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                "ID",
                "GETNAME",
                "SETNAME <name>",
                "SETINFO <option> <value>",
                "INFO",
                "LIST",
            ];
            out.array(help.len());
            for h in help {
                out.simple(h);
            }
        }
    }
}

fn command_entry(out: &mut crate::reply::Out, s: &Spec) {
    out.array(10);
    out.bulk(s.name.as_bytes());
    out.int(i64::from(s.arity));
    out.set(s.flags.len());
    for f in s.flags {
        out.simple(f);
    }
    out.int(i64::from(s.keys.0));
    out.int(i64::from(s.keys.1));
    out.int(i64::from(s.keys.2));
    out.set(0);
    out.set(0);
    out.array(0);
    out.array(0);
}

fn command(ctx: &mut Ctx<'_>, argv: &[&[u8]]) {
    let out = &mut *ctx.out;
    if argv.len() == 1 {
        out.array(COMMANDS.len());
        for s in COMMANDS {
            command_entry(out, s);
        }
        return;
    }
    match argv[1].to_ascii_lowercase().as_slice() {
        b"count" => out.int(COMMANDS.len() as i64),
        b"info" => {
            out.array(argv.len() - 2);
            for a in &argv[2..] {
                match lookup(a) {
                    Some(s) => command_entry(out, s),
                    None => out.null_array(),
                }
            }
        }
        // No documentation to give: an empty map is what redis-cli expects
        // from a server without docs.
        b"docs" => out.map(0),
        b"list" => {
            out.array(COMMANDS.len());
            for s in COMMANDS {
                out.bulk(s.name.as_bytes());
            }
        }
        b"getkeys" => match lookup(argv[2]) {
            Some(s) if s.keys.0 > 0 => {
                let args = &argv[2..];
                let last = if s.keys.1 < 0 { args.len() as i64 + i64::from(s.keys.1) } else { i64::from(s.keys.1) };
                let keys: Vec<&[u8]> = (s.keys.0 as i64..=last.min(args.len() as i64 - 1))
                    .step_by(s.keys.2.max(1) as usize)
                    .map(|i| args[i as usize])
                    .collect();
                out.array(keys.len());
                for k in keys {
                    out.bulk(k);
                }
            }
            Some(_) => out.error("ERR The command has no key arguments"),
            None => out.error("ERR Invalid command specified"),
        },
        _ => {
            out.array(1);
            out.simple("COMMAND [<subcommand> [<arg> [value] [opt] ...]]: COUNT, INFO, DOCS, LIST, GETKEYS");
        }
    }
}

/// The parameters CONFIG GET knows, with their values.
fn config_params(ctx: &Ctx<'_>) -> Vec<(&'static str, String)> {
    let c = &ctx.shared.config;
    let st = ctx.shared.store.stats();
    vec![
        ("bind", c.bind.clone()),
        ("port", c.port.to_string()),
        ("protected-mode", if c.protected_mode { "yes" } else { "no" }.into()),
        ("requirepass", c.requirepass.as_deref().map(|p| String::from_utf8_lossy(p).into_owned()).unwrap_or_default()),
        ("maxclients", c.max_clients.to_string()),
        ("timeout", c.timeout.map_or(0, |t| t.as_secs()).to_string()),
        ("proto-max-bulk-len", c.limits.max_bulk_len.to_string()),
        ("client-query-buffer-limit", c.max_query_buffer.to_string()),
        ("io-threads", c.threads.to_string()),
        ("databases", "1".into()),
        ("maxmemory", st.pool_size.to_string()),
        ("maxmemory-policy", "noeviction".into()),
        ("save", String::new()),
        ("appendonly", "no".into()),
        ("appendfsync", "always".into()),
        ("daxkv-pool", ctx.shared.store.path().display().to_string()),
        ("daxkv-persistence", st.backend.to_string()),
    ]
}

fn config(ctx: &mut Ctx<'_>, argv: &[&[u8]]) {
    match argv[1].to_ascii_lowercase().as_slice() {
        b"get" => {
            let params = config_params(ctx);
            let hits: Vec<&(&str, String)> = params
                .iter()
                .filter(|(n, _)| argv[2..].iter().any(|p| glob::matches(&p.to_ascii_lowercase(), n.as_bytes())))
                .collect();
            let out = &mut *ctx.out;
            out.map(hits.len());
            for (n, v) in hits {
                out.bulk(n.as_bytes());
                out.bulk(v.as_bytes());
            }
        }
        b"set" => ctx.out.error("ERR CONFIG SET is not supported by daxkv: restart `daxkv serve` with other options"),
        b"resetstat" | b"rewrite" => ctx.out.ok(),
        _ => {
            ctx.out.array(1);
            ctx.out.simple("CONFIG <subcommand>: GET <pattern>, RESETSTAT");
        }
    }
}

fn info(ctx: &Ctx<'_>, argv: &[&[u8]]) -> String {
    let sections: Vec<String> = argv[1..].iter().map(|a| String::from_utf8_lossy(a).to_ascii_lowercase()).collect();
    let want = |s: &str| {
        sections.is_empty() || sections.iter().any(|x| x == s || x == "all" || x == "everything" || x == "default")
    };
    let sh = ctx.shared;
    crate::shared::local::flush(&sh.counters);
    let st = sh.store.stats();
    let c = &sh.counters;
    let mut t = String::new();
    if want("server") {
        let _ = write!(
            t,
            "# Server\r\nredis_version:{REDIS_VERSION}\r\ndaxkv_version:{}\r\nredis_mode:standalone\r\nos:{}\r\narch_bits:64\r\nprocess_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{}\r\nio_threads_active:{}\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            std::process::id(),
            sh.config.port,
            sh.started.elapsed().as_secs(),
            sh.config.threads,
        );
    }
    if want("clients") {
        let _ = write!(
            t,
            "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\n\r\n",
            sh.clients.load(Ordering::Relaxed),
            sh.config.max_clients
        );
    }
    if want("memory") {
        let _ = write!(
            t,
            "# Memory\r\nused_memory:{}\r\nused_memory_dataset:{}\r\nmaxmemory:{}\r\nmaxmemory_policy:noeviction\r\npool_size:{}\r\nheap_bytes:{}\r\nheap_live_bytes:{}\r\nheap_free_bytes:{}\r\n\r\n",
            st.heap_live_bytes,
            st.bytes,
            st.pool_size,
            st.pool_size,
            st.heap_bytes,
            st.heap_live_bytes,
            st.heap_free_bytes
        );
    }
    if want("persistence") {
        let _ = write!(
            t,
            "# Persistence\r\nloading:0\r\naof_enabled:0\r\nrdb_changes_since_last_save:0\r\ndaxkv_backend:{}\r\ndaxkv_persistence_reason:{}\r\ndaxkv_pool:{}\r\ndaxkv_recoveries:{}\r\ndaxkv_opened_clean:{}\r\n\r\n",
            st.backend,
            st.persistence_reason.replace(['\r', '\n'], " "),
            sh.store.path().display(),
            st.recoveries,
            u8::from(st.opened_clean),
        );
    }
    if want("stats") {
        let _ = write!(
            t,
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\nrejected_connections:{}\r\ntotal_net_input_bytes:{}\r\ntotal_net_output_bytes:{}\r\nkeyspace_hits:{}\r\nkeyspace_misses:{}\r\nexpired_keys:{}\r\ndaxkv_write_batches:{}\r\ndaxkv_batched_writes:{}\r\n\r\n",
            c.connections.load(Ordering::Relaxed),
            c.commands.load(Ordering::Relaxed),
            c.rejected.load(Ordering::Relaxed),
            c.net_in.load(Ordering::Relaxed),
            c.net_out.load(Ordering::Relaxed),
            c.hits.load(Ordering::Relaxed),
            c.misses.load(Ordering::Relaxed),
            c.expired_keys.load(Ordering::Relaxed),
            c.batches.load(Ordering::Relaxed),
            c.batched_ops.load(Ordering::Relaxed),
        );
    }
    if want("keyspace") {
        t.push_str("# Keyspace\r\n");
        let n = sh.store.len();
        if n > 0 {
            let _ = write!(t, "db0:keys={n},expires={},avg_ttl=0\r\n", st.keys_with_expiry);
        }
        t.push_str("\r\n");
    }
    while t.ends_with("\r\n\r\n") {
        t.truncate(t.len() - 2);
    }
    t
}
