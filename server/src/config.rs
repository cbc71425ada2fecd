//! Server configuration.

use crate::frame::Limits;
use std::time::Duration;

/// Default [`Config::batch_ops`]: how many writes one commit may carry.
/// A commit that touches several leaves costs a log entry and a few drains
/// whatever its size, so bigger batches amortize it; past a few dozen keys
/// the per-key work dominates and latency grows.
pub const DEFAULT_BATCH_OPS: usize = 32;

/// How a server runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Event loops (threads serving connections).
    pub threads: usize,
    /// The password `AUTH` must give; `None`: no authentication.
    pub requirepass: Option<Vec<u8>>,
    /// Refuse clients that do not connect from 127.0.0.1 or ::1 (the
    /// server sets this when bound beyond loopback without a password).
    pub protected_mode: bool,
    /// Most clients connected at once.
    pub max_clients: usize,
    /// Request limits (bulk length, argument count, inline length).
    pub limits: Limits,
    /// Most bytes a request may buffer before it is complete.
    pub max_query_buffer: usize,
    /// Most reply bytes a client may leave unread; past it the client is
    /// disconnected (Redis's client-output-buffer-limit).
    pub max_output_buffer: usize,
    /// Close clients idle this long (`None`: never).
    pub timeout: Option<Duration>,
    /// A loop's write batch is committed once it holds this many
    /// operations, even in the middle of a round.
    pub batch_ops: usize,
    /// Address shown by CONFIG GET bind.
    pub bind: String,
    /// Port shown by CONFIG GET port.
    pub port: u16,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            requirepass: None,
            protected_mode: false,
            max_clients: 10000,
            limits: Limits::default(),
            max_query_buffer: 1 << 30,
            max_output_buffer: 512 << 20,
            timeout: None,
            batch_ops: DEFAULT_BATCH_OPS,
            bind: "127.0.0.1".into(),
            port: 6379,
        }
    }
}
