//! Command dispatch: lookup, arity, AUTH, MULTI queueing, then execution by
//! kind (see [`table::Kind`]), and MULTI/EXEC/WATCH.
//!
//! Pipelining: plain reads and blind writes (`GET`, `SET k v`, `MSET`, ...)
//! run against the connection's [`Batch`]: writes are queued, reads see the
//! queued writes first. Everything else first commits the batch. The
//! connection commits what is left once all complete requests of a read are
//! done, and only then sends the replies. If a commit fails, the replies of
//! the commands whose writes it held (recorded in `marks`) become the error.

pub mod admin;
pub mod keys;
pub mod strings;
pub mod table;

use crate::kv::{Batch, Batched, TxKv};
use crate::reply::Out;
use crate::session::{Session, Watched};
use crate::shared::Shared;
use daxkv::Tx;
use std::ops::Range;
use std::sync::atomic::Ordering;
use strings::error_reply;
use table::{Cmd, Kind, Spec, arity_ok, check_subcommand, lookup, unknown_command};

/// Commit a pipeline's batch early past this many operations or bytes.
const BATCH_MAX_OPS: usize = 1024;
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

/// Everything a command may touch.
pub struct Ctx<'a> {
    /// Server-wide state.
    pub shared: &'a Shared,
    /// The client.
    pub session: &'a mut Session,
    /// Where replies go.
    pub out: &'a mut Out,
    /// Writes not yet committed.
    pub batch: &'a mut Batch,
    /// Reply ranges of the commands whose writes are in `batch`.
    pub marks: &'a mut Vec<Range<usize>>,
}

impl Ctx<'_> {
    /// Commit the pending batch (one drain). On failure, the replies of the
    /// commands it held are replaced by the error.
    pub fn commit(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let c = &self.shared.counters;
        c.batches.fetch_add(1, Ordering::Relaxed);
        c.batched_ops.fetch_add(self.batch.ops.len() as u64, Ordering::Relaxed);
        let res = self.batch.commit(&self.shared.store);
        if let Err(e) = res {
            log::warn!("write batch failed: {e}");
            let mut err = Out { resp3: self.out.resp3, ..Out::new() };
            err.error(&error_reply(&e));
            let old = std::mem::take(&mut self.out.buf);
            let mut at = 0;
            for m in self.marks.iter() {
                self.out.buf.extend_from_slice(&old[at..m.start]);
                self.out.buf.extend_from_slice(&err.buf);
                at = m.end;
            }
            self.out.buf.extend_from_slice(&old[at..]);
        }
        self.marks.clear();
    }
}

/// Execute one request.
pub fn execute(ctx: &mut Ctx<'_>, argv: &[&[u8]]) -> Flow {
    ctx.shared.counters.commands.fetch_add(1, Ordering::Relaxed);
    let Some(spec) = lookup(argv[0]) else {
        return refuse(ctx, &unknown_command(argv));
    };
    if !arity_ok(spec.arity, argv.len()) {
        return refuse(ctx, format!("ERR wrong number of arguments for '{}' command", spec.name).as_bytes());
    }
    if let Some(e) = check_subcommand(spec, argv) {
        return refuse(ctx, &e);
    }
    if !ctx.session.authed && !spec.no_auth {
        return refuse(ctx, b"NOAUTH Authentication required.");
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
            let (ops, start) = (ctx.batch.ops.len(), ctx.out.len());
            let mut kv = Batched { store: &shared.store, batch: ctx.batch, watch: &shared.watch };
            if let Err(e) = strings::exec(spec.cmd, argv, &mut kv, ctx.out) {
                ctx.out.error(&error_reply(&e));
            }
            if ctx.batch.ops.len() > ops {
                ctx.marks.push(start..ctx.out.len());
                if ctx.batch.ops.len() >= BATCH_MAX_OPS || ctx.batch.bytes >= BATCH_MAX_BYTES {
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
            keys::exec(spec.cmd, argv, shared, ctx.out);
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
        Kind::Keyspace if matches!(spec.cmd, Cmd::Flushdb | Cmd::Flushall) => {
            shared.watch.touch_all();
            for kv in shared.store.iter() {
                tx.delete(&kv?.0)?;
            }
            out.ok();
        }
        Kind::Keyspace => keys::exec(spec.cmd, argv, shared, out),
        Kind::Admin => {
            let mut batch = Batch::default();
            let mut marks = Vec::new();
            let mut ctx = Ctx { shared, session, out, batch: &mut batch, marks: &mut marks };
            admin::exec(&mut ctx, spec, argv);
        }
    }
    Ok(())
}
