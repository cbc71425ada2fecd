//! # daxkv-tests
//!
//! Behaviour tests of daxkv by topic (in `tests/`), and the helpers and
//! child-process binaries they share.
#![forbid(unsafe_code)]
