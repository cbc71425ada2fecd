//! The event loops: one acceptor (the calling thread) hands connections
//! round-robin to `threads` workers, each a mio poll loop that owns its
//! connections outright (no locks on the request path).

use crate::cmd::Group;
use crate::config::Config;
use crate::conn::{Conn, State};
use crate::session::Session;
use crate::shared::{Shared, Shutdown, local};
use daxkv::Store;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

const WAKER: Token = Token(usize::MAX);

/// Redis's protected-mode refusal, naming daxkv's own remedies.
pub const DENIED: &str = "-DENIED daxkv is running in protected mode because it is bound to a non-loopback address and no password is set. In this mode connections are only accepted from the loopback interface. If you want to connect from external computers, you may adopt one of the following solutions: 1) Restart the server with a password: 'daxkv serve --requirepass <password>', then AUTH. 2) If you started the server manually just for testing, restart it with the '--protected-mode no' option, however MAKE SURE it is not publicly accessible from the internet if you do so. 3) Bind it to 127.0.0.1 only (the default).\r\n";

/// Serve the store on the given listeners until `shutdown` is triggered,
/// then close every connection and return. The listeners are already bound
/// (tests bind `127.0.0.1:0`). Closing the store is the caller's business.
pub fn run(
    listeners: Vec<std::net::TcpListener>,
    store: Arc<Store>,
    config: Config,
    shutdown: Shutdown,
) -> io::Result<()> {
    let threads = config.threads.max(1);
    let shared = Arc::new(Shared::new(store, config, shutdown.clone()));
    let mut poll = Poll::new()?;
    let mut listeners: Vec<TcpListener> = listeners
        .into_iter()
        .map(|l| {
            l.set_nonblocking(true)?;
            Ok(TcpListener::from_std(l))
        })
        .collect::<io::Result<_>>()?;
    for (i, l) in listeners.iter_mut().enumerate() {
        poll.registry().register(l, Token(i), Interest::READABLE)?;
    }
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    shutdown.add_waker(waker);

    let mut workers = Vec::new();
    for i in 0..threads {
        let wpoll = Poll::new()?;
        let wwaker = Arc::new(Waker::new(wpoll.registry(), WAKER)?);
        shutdown.add_waker(wwaker.clone());
        let (tx, rx) = channel();
        let sh = shared.clone();
        let handle =
            std::thread::Builder::new().name(format!("daxkv-loop-{i}")).spawn(move || worker(wpoll, rx, sh))?;
        workers.push((tx, wwaker, handle));
    }

    let purge = {
        let sh = shared.clone();
        std::thread::Builder::new().name("daxkv-expire".into()).spawn(move || purger(&sh))?
    };

    let mut events = Events::with_capacity(64);
    let mut next = 0usize;
    while !shutdown.is_triggered() {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for ev in events.iter() {
            let Some(l) = listeners.get(ev.token().0) else { continue };
            loop {
                match l.accept() {
                    Ok((stream, peer)) => {
                        if let Some(stream) = admit(&shared, stream, peer) {
                            let (tx, w, _) = &workers[next % workers.len()];
                            next += 1;
                            if tx.send((stream, peer)).is_ok() {
                                let _ = w.wake();
                            }
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        // Out of descriptors and the like: keep serving.
                        log::warn!("accept: {e}");
                        std::thread::sleep(Duration::from_millis(10));
                        break;
                    }
                }
            }
        }
    }
    drop(listeners);
    for (tx, _, handle) in workers {
        drop(tx);
        let _ = handle.join();
    }
    let _ = purge.join();
    Ok(())
}

/// Keys the background purge looks at per step.
const PURGE_KEYS: usize = 2000;
/// Time between purge steps.
const PURGE_EVERY: Duration = Duration::from_millis(100);

/// Remove expired keys in the background until shutdown: every
/// [`PURGE_EVERY`], the next [`PURGE_KEYS`] keys of a walk through the
/// whole keyspace (from the start again at its end). A step that removed
/// more than a quarter of what it looked at is followed by another at once,
/// as Redis's expiry cycle does. Nothing is walked while no key has an
/// expiry. (Reads never see an expired key; the purge gives back its
/// space and takes it out of DBSIZE.)
fn purger(shared: &Shared) {
    let mut from = Vec::new();
    while !shared.shutdown.is_triggered() {
        if shared.store.stats().keys_with_expiry > 0 {
            match shared.store.purge_expired(&from, PURGE_KEYS) {
                Ok(p) => {
                    shared.counters.expired_keys.fetch_add(p.removed, Ordering::Relaxed);
                    from = p.next.unwrap_or_default();
                    if p.removed * 4 > p.examined {
                        continue;
                    }
                }
                Err(daxkv::Error::Closed) => return,
                Err(e) => log::warn!("removing expired keys: {e}"),
            }
        }
        std::thread::sleep(PURGE_EVERY);
    }
}

fn is_local(peer: &SocketAddr) -> bool {
    match peer {
        SocketAddr::V4(a) => *a.ip() == std::net::Ipv4Addr::LOCALHOST,
        SocketAddr::V6(a) => a.ip().is_loopback() || a.ip().to_ipv4_mapped() == Some(std::net::Ipv4Addr::LOCALHOST),
    }
}

/// Protected mode and the client limit, checked on accept.
fn admit(shared: &Shared, mut stream: TcpStream, peer: SocketAddr) -> Option<TcpStream> {
    let c = &shared.counters;
    c.connections.fetch_add(1, Ordering::Relaxed);
    let refuse = |stream: &mut TcpStream, msg: &[u8]| {
        c.rejected.fetch_add(1, Ordering::Relaxed);
        // A fresh socket's send buffer takes the short message at once.
        let _ = stream.write(msg);
        let _ = stream.shutdown(std::net::Shutdown::Both);
    };
    if shared.config.protected_mode && shared.config.requirepass.is_none() && !is_local(&peer) {
        refuse(&mut stream, DENIED.as_bytes());
        return None;
    }
    if shared.clients.fetch_add(1, Ordering::SeqCst) >= shared.config.max_clients {
        shared.clients.fetch_sub(1, Ordering::SeqCst);
        refuse(&mut stream, b"-ERR max number of clients reached\r\n");
        return None;
    }
    let _ = stream.set_nodelay(true);
    Some(stream)
}

struct Slab {
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
}

fn worker(mut poll: Poll, rx: Receiver<(TcpStream, SocketAddr)>, shared: Arc<Shared>) {
    let mut slab = Slab { conns: Vec::new(), free: Vec::new() };
    let mut events = Events::with_capacity(1024);
    let mut again: Vec<usize> = Vec::new();
    let mut group = Group::default();
    let mut last_sweep = Instant::now();
    let tick = shared.config.timeout.map(|t| t.min(Duration::from_secs(1)));
    loop {
        let timeout = if again.is_empty() { tick } else { Some(Duration::ZERO) };
        if let Err(e) = poll.poll(&mut events, timeout)
            && e.kind() != io::ErrorKind::Interrupted
        {
            log::error!("poll: {e}");
            break;
        }
        if shared.shutdown.is_triggered() {
            break;
        }
        let mut ready: Vec<usize> = std::mem::take(&mut again);
        for ev in events.iter() {
            if ev.token() == WAKER {
                while let Ok((stream, peer)) = rx.try_recv() {
                    if let Some(i) = add(&mut poll, &mut slab, &shared, stream, peer) {
                        ready.push(i);
                    }
                }
            } else {
                let i = ev.token().0;
                if let Some(Some(c)) = slab.conns.get_mut(i) {
                    c.hup |= ev.is_read_closed() || ev.is_error();
                    ready.push(i);
                }
            }
        }
        ready.sort_unstable();
        ready.dedup();
        round(&mut poll, &mut slab, &shared, &mut group, &ready, &mut again);
        local::flush(&shared.counters);
        if let Some(t) = shared.config.timeout
            && last_sweep.elapsed() >= Duration::from_millis(500)
        {
            last_sweep = Instant::now();
            let idle: Vec<usize> = slab
                .conns
                .iter()
                .enumerate()
                .filter_map(|(i, c)| c.as_ref().filter(|c| c.last_active.elapsed() > t).map(|_| i))
                .collect();
            for i in idle {
                remove(&mut poll, &mut slab, &shared, i);
            }
        }
    }
    for i in 0..slab.conns.len() {
        if slab.conns[i].is_some() {
            remove(&mut poll, &mut slab, &shared, i);
        }
    }
}

/// One round of an event loop: run every ready connection (their blind
/// writes gather in `group`), commit the group once, turn the replies of a
/// failed commit into errors, then send every reply.
fn round(
    poll: &mut Poll,
    slab: &mut Slab,
    shared: &Shared,
    group: &mut Group,
    ready: &[usize],
    again: &mut Vec<usize>,
) {
    for &i in ready {
        if let Some(Some(conn)) = slab.conns.get_mut(i) {
            conn.run(shared, group, i);
        }
    }
    group.commit(shared);
    if !group.failed.is_empty() {
        let mut failed = std::mem::take(&mut group.failed);
        // By connection, each in the order its replies were made.
        failed.sort_by_key(|f| f.0);
        for part in failed.chunk_by(|a, b| a.0 == b.0) {
            if let Some(Some(conn)) = slab.conns.get_mut(part[0].0) {
                conn.patch(part.iter().map(|(_, r, e)| (r.clone(), &e[..])));
            }
        }
    }
    for &i in ready {
        let Some(Some(conn)) = slab.conns.get_mut(i) else { continue };
        match conn.finish(shared) {
            State::Open => {}
            State::Again => again.push(i),
            State::Closed => remove(poll, slab, shared, i),
        }
    }
}

fn add(poll: &mut Poll, slab: &mut Slab, shared: &Shared, mut stream: TcpStream, peer: SocketAddr) -> Option<usize> {
    let i = slab.free.pop().unwrap_or_else(|| {
        slab.conns.push(None);
        slab.conns.len() - 1
    });
    if let Err(e) = poll.registry().register(&mut stream, Token(i), Interest::READABLE | Interest::WRITABLE) {
        log::warn!("register: {e}");
        slab.free.push(i);
        shared.clients.fetch_sub(1, Ordering::SeqCst);
        return None;
    }
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let session = Session::new(id, Some(peer), shared.config.requirepass.is_none());
    slab.conns[i] = Some(Conn::new(stream, session));
    Some(i)
}

fn remove(poll: &mut Poll, slab: &mut Slab, shared: &Shared, i: usize) {
    if let Some(mut c) = slab.conns[i].take() {
        let _ = poll.registry().deregister(&mut c.stream);
        shared.clients.fetch_sub(1, Ordering::SeqCst);
        slab.free.push(i);
    }
}
