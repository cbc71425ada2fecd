//! The persistent allocator: size classes, slabs, page extents, thread
//! caches, epochs, recovery.

pub(crate) mod api;
pub(crate) mod cache;
pub(crate) mod classes;
pub(crate) mod error;
pub(crate) mod grow;
pub(crate) mod layout;
pub(crate) mod pages;
pub(crate) mod slab;
