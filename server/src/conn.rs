//! One client connection: input buffer, request loop, output buffer.
//!
//! [`Conn::drive`] is called on every readiness event (edge-triggered). It
//! reads everything the socket has, executes every complete request, commits
//! the writes they queued with one `write_batch`, and only then writes the
//! replies, with as few `write` calls as the socket allows.

use crate::cmd::{self, Ctx, Flow};
use crate::frame::{self, Limits};
use crate::kv::Batch;
use crate::reply::Out;
use crate::session::Session;
use crate::shared::Shared;
use mio::net::TcpStream;
use std::io::{self, Read, Write};
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Read granularity.
const READ_CHUNK: usize = 64 * 1024;
/// Stop executing requests while this many reply bytes are unsent.
const OUT_SOFT_LIMIT: usize = 1 << 20;
/// Rounds of read-execute-write before yielding to other clients.
const ROUNDS: usize = 16;
/// Buffers larger than this are freed once empty.
const KEEP_BUFFER: usize = 1 << 20;

/// What became of a connection after [`Conn::drive`].
#[derive(Debug, PartialEq, Eq)]
pub enum State {
    /// Waiting for the socket.
    Open,
    /// More to do without waiting: drive again soon.
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
    batch: Batch,
    marks: Vec<Range<usize>>,
    /// Close once the output is sent.
    closing: bool,
    /// The peer closed its side.
    eof: bool,
    /// Last time a request arrived.
    pub last_active: Instant,
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
            batch: Batch::default(),
            marks: Vec::new(),
            closing: false,
            eof: false,
            last_active: Instant::now(),
        }
    }

    fn unsent(&self) -> usize {
        self.out.buf.len() - self.sent
    }

    /// Send what can be sent. `Err` means the connection is dead.
    fn flush(&mut self, shared: &Shared) -> io::Result<()> {
        while self.sent < self.out.buf.len() {
            match self.stream.write(&self.out.buf[self.sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.sent += n;
                    shared.counters.net_out.fetch_add(n as u64, Ordering::Relaxed);
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

    /// Read until the socket is empty or a chunk budget is used. Returns
    /// whether anything was read; sets `eof`.
    fn read(&mut self, shared: &Shared) -> io::Result<bool> {
        let mut any = false;
        for _ in 0..64 {
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
            match self.stream.read(&mut self.inbuf[self.filled..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(any);
                }
                Ok(n) => {
                    self.filled += n;
                    any = true;
                    shared.counters.net_in.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(any),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(any)
    }

    /// Execute the complete requests in the input buffer, then commit their
    /// writes. Stops early when enough output is waiting.
    fn process(&mut self, shared: &Shared) {
        let mut ctx = Ctx {
            shared,
            session: &mut self.session,
            out: &mut self.out,
            batch: &mut self.batch,
            marks: &mut self.marks,
        };
        while !self.closing && self.start < self.filled {
            let limits = Limits { unauthenticated: !ctx.session.authed, ..shared.config.limits };
            let buf = &self.inbuf[self.start..self.filled];
            match frame::parse(buf, &limits) {
                Ok(None) => break,
                Err(e) => {
                    ctx.commit();
                    ctx.out.error(&format!("ERR {e}"));
                    self.closing = true;
                }
                Ok(Some(req)) => {
                    self.last_active = Instant::now();
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
                        break;
                    }
                }
            }
        }
        ctx.commit();
        if self.start == self.filled {
            self.start = 0;
            self.filled = 0;
            if self.inbuf.len() > KEEP_BUFFER {
                self.inbuf = Vec::new();
            }
        }
    }

    /// Make all the progress possible now.
    pub fn drive(&mut self, shared: &Shared) -> State {
        for _ in 0..ROUNDS {
            if self.flush(shared).is_err() {
                return State::Closed;
            }
            if self.unsent() > shared.config.max_output_buffer {
                log::info!("client {} closed: output buffer limit reached", self.session.id);
                return State::Closed;
            }
            if self.closing {
                return if self.unsent() == 0 { State::Closed } else { State::Open };
            }
            if self.unsent() >= OUT_SOFT_LIMIT {
                return State::Open;
            }
            self.process(shared);
            if self.unsent() > 0 || self.closing {
                continue;
            }
            if self.eof {
                return State::Closed;
            }
            match self.read(shared) {
                Err(_) => return State::Closed,
                Ok(true) => {}
                Ok(false) if self.eof => {}
                Ok(false) => return State::Open,
            }
        }
        State::Again
    }

    /// The client's id.
    pub fn id(&self) -> u64 {
        self.session.id
    }
}
