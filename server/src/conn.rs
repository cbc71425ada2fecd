//! One client connection: input buffer, request loop, output buffer.
//!
//! An event loop serves its ready connections in rounds (see
//! [`crate::server`]): [`Conn::run`] sends what earlier rounds left, reads
//! what the socket has and executes every complete request, queueing blind
//! writes in the loop's [`Group`]; the loop then commits the group's writes
//! with one store commit, [`Conn::patch`] turns the replies of a failed
//! commit into errors, and [`Conn::finish`] sends the replies, with as few
//! `write` calls as the socket allows. No reply leaves before the writes it
//! depends on are durable.

use crate::cmd::{self, Ctx, Flow, Group};
use crate::frame::{self, Limits};
use crate::reply::Out;
use crate::session::Session;
use crate::shared::{Shared, local};
use mio::net::TcpStream;
use std::io::{self, Read, Write};
use std::ops::Range;
use std::time::Instant;

/// Read granularity.
const READ_CHUNK: usize = 64 * 1024;
/// Stop executing requests while this many reply bytes are unsent.
const OUT_SOFT_LIMIT: usize = 1 << 20;
/// Most reads per round.
const READS: usize = 16;
/// Buffers larger than this are freed once empty.
const KEEP_BUFFER: usize = 1 << 20;

/// What became of a connection after a round.
#[derive(Debug, PartialEq, Eq)]
pub enum State {
    /// Waiting for the socket.
    Open,
    /// More to do without waiting: run again next round.
    Again,
    /// Done: drop it.
    Closed,
}

/// A client connection.
pub struct Conn {
    /// The socket.
    pub stream: TcpStream,
    /// Input: `inbuf[start..filled]` is unread; the rest is scratch.
    inbuf: Vec<u8>,
    start: usize,
    filled: usize,
    out: Out,
    sent: usize,
    session: Session,
    /// Close once the output is sent.
    closing: bool,
    /// The peer closed its side (a read returned 0).
    eof: bool,
    /// The poller reported the peer's close or an error: read until 0.
    pub hup: bool,
    /// The socket may hold more input (the read budget ran out).
    more: bool,
    /// Complete requests were left unexecuted (too much output waiting).
    stalled: bool,
    /// The connection failed: drop it.
    dead: bool,
    /// Last time a request arrived.
    pub last_active: Instant,
}

/// Requests looked at by one [`prefetch_ahead`].
const PREFETCH_WINDOW: usize = 32;

/// Parse up to [`PREFETCH_WINDOW`] complete requests of `buf` from `at`
/// (no side effects) and prefetch the keys that GET, MGET and EXISTS among
/// them will look up, so that a pipelined batch's store misses overlap
/// instead of following one another. Returns where the window ended.
pub fn prefetch_ahead(shared: &Shared, buf: &[u8], mut at: usize) -> usize {
    let limits = shared.config.limits;
    let mut keys: Vec<&[u8]> = Vec::new();
    let mut requests = 0;
    for _ in 0..PREFETCH_WINDOW {
        let Ok(Some(req)) = frame::parse(&buf[at..], &limits) else { break };
        requests += 1;
        let base = at;
        at += req.consumed;
        // Inline requests own their unquoted arguments: not worth it.
        if req.owned.is_some() || req.args.len() < 2 {
            continue;
        }
        let arg = |i: usize| &buf[base + req.args[i].start..base + req.args[i].end];
        let name = arg(0);
        if name.eq_ignore_ascii_case(b"GET") {
            keys.push(arg(1));
        } else if name.eq_ignore_ascii_case(b"MGET") || name.eq_ignore_ascii_case(b"EXISTS") {
            keys.extend((1..req.args.len()).map(arg));
        }
    }
    // A lone request with one key runs next: its own lookup takes the
    // same misses, and a prefetch would only hash the key twice.
    if keys.len() > 1 || (requests > 1 && !keys.is_empty()) {
        shared.store.prefetch(&keys);
    }
    at
}

impl Conn {
    /// A connection for an accepted socket.
    pub fn new(stream: TcpStream, session: Session) -> Conn {
        Conn {
            stream,
            inbuf: Vec::new(),
            start: 0,
            filled: 0,
            out: Out::new(),
            sent: 0,
            session,
            closing: false,
            eof: false,
            hup: false,
            more: false,
            stalled: false,
            dead: false,
            last_active: Instant::now(),
        }
    }

    fn unsent(&self) -> usize {
        self.out.buf.len() - self.sent
    }

    /// Send what can be sent. `Err` means the connection is dead.
    fn flush(&mut self) -> io::Result<()> {
        while self.sent < self.out.buf.len() {
            match self.stream.write(&self.out.buf[self.sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.sent += n;
                    local::net_out(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.sent == self.out.buf.len() {
            self.out.buf.clear();
            self.sent = 0;
            if self.out.buf.capacity() > KEEP_BUFFER {
                self.out.buf = Vec::new();
            }
        }
        Ok(())
    }

    /// Read what the socket has, within a budget; sets `eof` and `more`.
    ///
    /// Edge-triggered readiness: a read that returns less than it asked
    /// for emptied the socket, and any later byte raises a new event, so
    /// no second read is needed to see `WouldBlock` (the common case of one
    /// request per round costs one `read`). A peer's close that came with
    /// the data is flagged by the poller (`hup`), and then the read goes on
    /// until it returns 0.
    fn read(&mut self, shared: &Shared) -> io::Result<()> {
        self.more = false;
        for _ in 0..READS {
            if self.filled - self.start > shared.config.max_query_buffer {
                return Err(io::Error::other("query buffer limit reached"));
            }
            if self.inbuf.len() - self.filled < READ_CHUNK / 4 {
                if self.start > 0 {
                    self.inbuf.copy_within(self.start..self.filled, 0);
                    self.filled -= self.start;
                    self.start = 0;
                }
                if self.inbuf.len() - self.filled < READ_CHUNK / 4 {
                    let want = (self.inbuf.len() * 2).max(READ_CHUNK);
                    self.inbuf.resize(want, 0);
                }
            }
            let room = self.inbuf.len() - self.filled;
            match self.stream.read(&mut self.inbuf[self.filled..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => {
                    self.filled += n;
                    local::net_in(n);
                    if n < room && !self.hup {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.more = true;
        Ok(())
    }

    /// Execute the complete requests in the input buffer; their writes join
    /// `group`. Stops early when enough output is waiting.
    fn process(&mut self, shared: &Shared, group: &mut Group, conn: usize) {
        let mut ctx = Ctx { shared, session: &mut self.session, out: &mut self.out, group, conn };
        self.stalled = false;
        // Requests up to here had their keys prefetched.
        let mut prefetched = self.start;
        // A request arrived (the idle clock is read once per round, not
        // once per request).
        let mut active = false;
        while !self.closing && self.start < self.filled {
            if self.start >= prefetched && ctx.session.authed {
                prefetched = prefetch_ahead(shared, &self.inbuf[..self.filled], self.start);
            }
            let limits = Limits { unauthenticated: !ctx.session.authed, ..shared.config.limits };
            let buf = &self.inbuf[self.start..self.filled];
            match frame::parse(buf, &limits) {
                Ok(None) => break,
                Err(e) => {
                    ctx.out.error(&format!("ERR {e}"));
                    self.closing = true;
                }
                Ok(Some(req)) => {
                    active = true;
                    let consumed = req.consumed;
                    if !req.args.is_empty() {
                        let argv = req.argv(buf);
                        match cmd::execute(&mut ctx, &argv) {
                            Flow::Continue => {}
                            Flow::Close | Flow::Shutdown => self.closing = true,
                        }
                    }
                    self.start += consumed;
                    if ctx.out.len() - self.sent >= OUT_SOFT_LIMIT {
                        self.stalled = self.start < self.filled;
                        break;
                    }
                }
            }
        }
        if active {
            self.last_active = Instant::now();
        }
        if self.start == self.filled {
            self.start = 0;
            self.filled = 0;
            if self.inbuf.len() > KEEP_BUFFER {
                self.inbuf = Vec::new();
            }
        }
    }

    /// First step of a round: send what is left from earlier rounds, read,
    /// and execute the complete requests (their writes join `group`, whose
    /// commit the replies must wait for).
    pub fn run(&mut self, shared: &Shared, group: &mut Group, conn: usize) {
        if self.dead || self.flush().is_err() {
            self.dead = true;
            return;
        }
        if self.closing || self.unsent() >= OUT_SOFT_LIMIT {
            return;
        }
        if !self.eof && self.read(shared).is_err() {
            self.dead = true;
            return;
        }
        self.process(shared, group, conn);
    }

    /// The round's commit failed: replace the replies in `failed` (byte
    /// ranges of the output, in increasing order) by their error lines.
    pub fn patch<'a>(&mut self, failed: impl IntoIterator<Item = (Range<usize>, &'a [u8])>) {
        let old = std::mem::take(&mut self.out.buf);
        let mut at = 0;
        for (r, err) in failed {
            self.out.buf.extend_from_slice(&old[at..r.start]);
            self.out.buf.extend_from_slice(err);
            at = r.end;
        }
        self.out.buf.extend_from_slice(&old[at..]);
    }

    /// Last step of a round, once its writes are durable: send the replies
    /// and say what becomes of the connection.
    pub fn finish(&mut self, shared: &Shared) -> State {
        if self.dead || self.flush().is_err() {
            return State::Closed;
        }
        if self.unsent() > shared.config.max_output_buffer {
            log::info!("client {} closed: output buffer limit reached", self.session.id);
            return State::Closed;
        }
        let unsent = self.unsent();
        if self.closing || self.eof && !self.more && !self.stalled {
            // Nothing more will be read: close once everything is sent.
            return if unsent == 0 { State::Closed } else { State::Open };
        }
        if unsent >= OUT_SOFT_LIMIT {
            // The socket is full: its writable event comes back.
            return State::Open;
        }
        if self.more || self.stalled { State::Again } else { State::Open }
    }

    /// The client's id.
    pub fn id(&self) -> u64 {
        self.session.id
    }
}
