//! # daxkv-server
//!
//! A Redis-protocol (RESP2, RESP3 through `HELLO 3`) server over a daxkv
//! [`Store`](daxkv::Store), and the pieces of the `daxkv` command-line tool.
//!
//! ```no_run
//! use daxkv::{Options, Store};
//! use daxkv_server::{Config, Shutdown, run};
//! use std::sync::Arc;
//! let store = Arc::new(Store::open("/dev/shm/example.pool", &Options::new().create_if_missing(true)).unwrap());
//! let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
//! let shutdown = Shutdown::new();
//! // Another thread may call `shutdown.trigger()`; SHUTDOWN does too.
//! run(vec![listener], store.clone(), Config::default(), shutdown).unwrap();
//! ```
//!
//! Map: [`frame`] parses requests, [`reply`] encodes replies, [`cmd`]
//! executes commands over [`kv`] (a pipeline's write batch, or a store
//! transaction), [`conn`] drives one connection, [`server`] runs the mio
//! event loops, [`dump`] is the portable dump format, [`float`] is
//! INCRBYFLOAT's long double sum.
//!
//! No `unsafe` here except the one call into `csrc/float.c` in [`float`]
//! (Rust has no 80-bit long double; the call is the only way to add and
//! print as Redis does), allowed on that module alone.
#![deny(unsafe_code)]

pub mod cmd;
pub mod config;
pub mod conn;
pub mod dump;
#[allow(unsafe_code)]
pub mod float;
pub mod frame;
pub mod glob;
pub mod kv;
pub mod reply;
pub mod server;
pub mod session;
pub mod shared;

pub use config::Config;
pub use server::run;
pub use shared::Shutdown;
