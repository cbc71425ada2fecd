//! Command dispatch: lookup, arity, AUTH, MULTI queueing, then execution by
//! kind (see [`table::Kind`]), and MULTI/EXEC/WATCH.
//!
//! Group commit: plain reads and blind writes (`GET`, `SET k v`, `MSET`,
//! ...) run against the event loop's [`Group`]: writes from every
//! connection served in one loop round are queued in one batch, and reads
//! see the queued writes first. Everything else first commits the batch.
//! The loop commits what is left once every ready connection has run, and
//! only then sends the replies. If a commit fails, the replies of the
//! commands whose writes it held, or that read a write it held (recorded
//! as marks), become the error.

pub mod admin;
pub mod generic;
pub mod keys;
pub mod strings;
pub mod table;

use crate::kv::{Batch, Batched, TxKv};
use crate::reply::Out;
use crate::session::{Session, Watched};
use crate::shared::Shared;
use crate::shared::local;
use daxkv::Tx;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use strings::error_reply;
use table::{Cmd, Kind, Spec, arity_ok, check_subcommand, lookup, unknown_command};

/// Commit a loop's batch early past this many bytes (and past
/// [`crate::Config::batch_ops`] operations).
const BATCH_MAX_BYTES: usize = 16 << 20;

/// What the connection does after a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Go on.
    Continue,
    /// Send the replies, then close (QUIT).
    Close,
    /// The server is shutting down (SHUTDOWN): close.
    Shutdown,
}

/// An event loop's group commit: the writes queued in this round by every
/// connection it serves, which replies depend on them, and which replies
/// must become errors because their commit failed.
#[derive(Default)]
pub struct Group {
    /// Writes not yet committed.
    pub batch: Batch,
    /// Replies (connection, byte range of its output) that depend on
    /// `batch`.
    marks: Vec<(usize, Range<usize>)>,
    /// Replies to replace: (connection, byte range, error line), in the
    /// order they were made.
    pub failed: Vec<(usize, Range<usize>, Arc<[u8]>)>,
}

impl Group {
    /// Commit the pending batch (one store commit). On failure, the
    /// replies that depend on it are listed in `failed`.
    pub fn commit(&mut self, shared: &Shared) {
        if self.batch.is_empty() {
            return;
        }
        let c = &shared.counters;
        c.batches.fetch_add(1, Ordering::Relaxed);
        c.batched_ops.fetch_add(self.batch.len() as u64, Ordering::Relaxed);
        if let Err(e) = self.batch.commit(&shared.store) {
            log::warn!("write batch failed: {e}");
            let mut err = Out::new();
            err.error(&error_reply(&e));
            let err: Arc<[u8]> = err.buf.into();
            self.failed.extend(self.marks.drain(..).map(|(c, r)| (c, r, err.clone())));
        }
        self.marks.clear();
    }
}

/// Everything a command may touch.
pub struct Ctx<'a> {
    /// Server-wide state.
    pub shared: &'a Shared,
    /// The client.
    pub session: &'a mut Session,
    /// Where replies go.
    pub out: &'a mut Out,
    /// The loop's writes not yet committed.
    pub group: &'a mut Group,
    /// This connection's number in `group`'s marks.
    pub conn: usize,
}

impl Ctx<'_> {
    /// Commit the loop's pending batch (see [`Group::commit`]).
    pub fn commit(&mut self) {
        self.group.commit(self.shared);
    }
}

/// Execute one request.
pub fn execute(ctx: &mut Ctx<'_>, argv: &[&[u8]]) -> Flow {
    local::command();
    let Some(spec) = lookup(argv[0]) else {
        return refuse(ctx, &unknown_command(argv));
    };
    if !arity_ok(spec.arity, argv.len()) {
        return reject(ctx, spec, format!("ERR wrong number of arguments for '{}' command", spec.name).as_bytes());
    }
    if let Some(e) = check_subcommand(spec, argv) {
        return reject(ctx, spec, &e);
    }
    if !ctx.session.authed && !spec.no_auth {
        return reject(ctx, spec, b"NOAUTH Authentication required.");
    }
    if ctx.session.multi.is_some()
        && !matches!(spec.cmd, Cmd::Exec | Cmd::Discard | Cmd::Multi | Cmd::Watch | Cmd::Quit | Cmd::Reset)
    {
        if spec.flags.contains(&"no_multi") {
            return refuse(ctx, b"ERR Command not allowed inside a transaction");
        }
        if let Some(q) = ctx.session.multi.as_mut() {
            q.push(argv.iter().map(|a| a.to_vec()).collect());
        }
        ctx.out.simple("QUEUED");
        return Flow::Continue;
    }
    run(ctx, spec, argv)
}

/// Refuse a known command before it runs. A refused EXEC (wrong arity,
/// not authenticated) ends the transaction, in MULTI or not, and says why,
/// as Redis does.
fn reject(ctx: &mut Ctx<'_>, spec: &Spec, msg: &[u8]) -> Flow {
    if spec.cmd != Cmd::Exec {
        return refuse(ctx, msg);
    }
    ctx.session.multi = None;
    ctx.session.multi_dirty = false;
    ctx.session.watched.clear();
    let why = msg.strip_prefix(b"ERR ").unwrap_or(msg);
    ctx.out.error_bytes(&[&b"EXECABORT Transaction discarded because of: "[..], why].concat());
    Flow::Continue
}

/// Answer an error; inside MULTI it also dooms the transaction.
fn refuse(ctx: &mut Ctx<'_>, msg: &[u8]) -> Flow {
    if ctx.session.multi.is_some() {
        ctx.session.multi_dirty = true;
    }
    ctx.out.error_bytes(msg);
    Flow::Continue
}

fn run(ctx: &mut Ctx<'_>, spec: &Spec, argv: &[&[u8]]) -> Flow {
    let shared = ctx.shared;
    match spec.kind {
        Kind::Batched if spec.cmd != Cmd::Set || strings::set_is_plain(argv) => {
            let (ops, start) = (ctx.group.batch.len(), ctx.out.len());
            let mut kv =
                Batched { store: &shared.store, batch: &mut ctx.group.batch, watch: &shared.watch, saw_pending: false };
            if let Err(e) = strings::exec(spec.cmd, argv, &mut kv, ctx.out) {
                ctx.out.error(&error_reply(&e));
            }
            let saw_pending = kv.saw_pending;
            let g = &mut *ctx.group;
            if saw_pending || g.batch.len() > ops {
                g.marks.push((ctx.conn, start..ctx.out.len()));
                if g.batch.len() >= shared.config.batch_ops || g.batch.bytes >= BATCH_MAX_BYTES {
                    ctx.commit();
                }
            }
            Flow::Continue
        }
        Kind::Batched | Kind::Atomic => {
            ctx.commit();
            let start = ctx.out.len();
            let out = &mut *ctx.out;
            let res = shared.store.transaction(|tx| {
                out.buf.truncate(start);
                strings::exec(spec.cmd, argv, &mut TxKv { tx, watch: &shared.watch }, out)
            });
            if let Err(e) = res {
                ctx.out.buf.truncate(start);
                ctx.out.error(&error_reply(&e));
            }
            Flow::Continue
        }
        Kind::Keyspace => {
            ctx.commit();
            keys::exec(spec.cmd, argv, shared, None, ctx.out);
            Flow::Continue
        }
        Kind::Admin => {
            if !matches!(spec.cmd, Cmd::Ping | Cmd::Echo) {
                ctx.commit();
            }
            match spec.cmd {
                Cmd::Multi => multi(ctx),
                Cmd::Exec => exec(ctx),
                Cmd::Discard => {
                    if ctx.session.multi.take().is_some() {
                        ctx.session.multi_dirty = false;
                        ctx.session.watched.clear();
                        ctx.out.ok();
                    } else {
                        ctx.out.error("ERR DISCARD without MULTI");
                    }
                }
                Cmd::Watch => watch(ctx, argv),
                Cmd::Unwatch => {
                    ctx.session.watched.clear();
                    ctx.out.ok();
                }
                _ => return admin::exec(ctx, spec, argv),
            }
            Flow::Continue
        }
    }
}

fn multi(ctx: &mut Ctx<'_>) {
    if ctx.session.multi.is_some() {
        ctx.out.error("ERR MULTI calls can not be nested");
    } else {
        ctx.session.multi = Some(Vec::new());
        ctx.session.multi_dirty = false;
        ctx.out.ok();
    }
}

/// WATCH: remember each key's slot version, then its value (in that order:
/// see [`crate::shared::WatchTable`]).
fn watch(ctx: &mut Ctx<'_>, argv: &[&[u8]]) {
    if ctx.session.multi.is_some() {
        ctx.out.error("ERR WATCH inside MULTI is not allowed");
        return;
    }
    for k in &argv[1..] {
        if ctx.session.watched.iter().any(|w| w.key == *k) {
            continue;
        }
        let version = ctx.shared.watch.version(k);
        let value = if crate::kv::storable(k) {
            match ctx.shared.store.get(k) {
                Ok(v) => v,
                Err(e) => {
                    ctx.out.error(&error_reply(&e));
                    return;
                }
            }
        } else {
            None
        };
        ctx.session.watched.push(Watched { key: k.to_vec(), version, value });
    }
    ctx.out.ok();
}

/// EXEC: the queued commands as one store transaction, which first checks
/// that no watched key changed (else a null reply and nothing runs).
fn exec(ctx: &mut Ctx<'_>) {
    let Some(queue) = ctx.session.multi.take() else {
        ctx.out.error("ERR EXEC without MULTI");
        return;
    };
    let watched = std::mem::take(&mut ctx.session.watched);
    if std::mem::take(&mut ctx.session.multi_dirty) {
        ctx.out.error("EXECABORT Transaction discarded because of previous errors.");
        return;
    }
    let shared = ctx.shared;
    let start = ctx.out.len();
    let session = &mut *ctx.session;
    let out = &mut *ctx.out;
    let res = shared.store.transaction(|tx| {
        out.buf.truncate(start);
        for w in &watched {
            let now = if crate::kv::storable(&w.key) { tx.get(&w.key)? } else { None };
            if now != w.value || shared.watch.version(&w.key) != w.version {
                return Ok(false);
            }
        }
        out.array(queue.len());
        for args in &queue {
            let argv: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            queued(shared, session, out, tx, &argv)?;
        }
        Ok(true)
    });
    match res {
        Ok(true) => {}
        Ok(false) => {
            ctx.out.buf.truncate(start);
            ctx.out.null_array();
        }
        Err(e) => {
            ctx.out.buf.truncate(start);
            ctx.out.error(&error_reply(&e));
        }
    }
}

/// One queued command, inside EXEC's transaction.
fn queued(shared: &Shared, session: &mut Session, out: &mut Out, tx: &mut Tx<'_>, argv: &[&[u8]]) -> daxkv::Result<()> {
    let Some(spec) = lookup(argv[0]) else { return Ok(()) };
    match spec.kind {
        Kind::Batched | Kind::Atomic => strings::exec(spec.cmd, argv, &mut TxKv { tx, watch: &shared.watch }, out)?,
        Kind::Keyspace => keys::exec(spec.cmd, argv, shared, Some(tx), out),
        // EXEC has already dropped the watched keys.
        Kind::Admin if spec.cmd == Cmd::Unwatch => out.ok(),
        Kind::Admin => {
            let mut group = Group::default();
            let mut ctx = Ctx { shared, session, out, group: &mut group, conn: usize::MAX };
            admin::exec(&mut ctx, spec, argv);
        }
    }
    Ok(())
}
