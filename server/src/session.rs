//! Per-connection state that commands read and change.

use std::net::SocketAddr;
use std::time::Instant;

/// A key watched by WATCH: its slot version and epoch then, and its value.
#[derive(Debug, Clone)]
pub struct Watched {
    /// The key.
    pub key: Vec<u8>,
    /// [`crate::shared::WatchTable::version`] when watched.
    pub version: u64,
    /// Its value when watched.
    pub value: Option<Vec<u8>>,
}

/// One client's state.
#[derive(Debug)]
pub struct Session {
    /// CLIENT ID.
    pub id: u64,
    /// CLIENT SETNAME.
    pub name: Option<Vec<u8>>,
    /// CLIENT SETINFO LIB-NAME and LIB-VER (what client libraries send on
    /// connect).
    pub lib: (Vec<u8>, Vec<u8>),
    /// The peer.
    pub peer: Option<SocketAddr>,
    /// Authenticated (or no password is required).
    pub authed: bool,
    /// Commands queued since MULTI (`None`: not in a transaction).
    pub multi: Option<Vec<Vec<Vec<u8>>>>,
    /// A command was refused while queueing: EXEC must abort.
    pub multi_dirty: bool,
    /// Keys under WATCH.
    pub watched: Vec<Watched>,
    /// When it connected.
    pub since: Instant,
}

impl Session {
    /// A new client's state.
    pub fn new(id: u64, peer: Option<SocketAddr>, authed: bool) -> Session {
        Session {
            id,
            name: None,
            lib: (Vec::new(), Vec::new()),
            peer,
            authed,
            multi: None,
            multi_dirty: false,
            watched: Vec::new(),
            since: Instant::now(),
        }
    }
}
