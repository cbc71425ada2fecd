//! The persistence layer: backends, the operations table and the copy.

pub(crate) mod backend;
pub(crate) mod msync;
pub(crate) mod table;

#[cfg(not(target_arch = "x86_64"))]
pub(crate) mod generic;
#[cfg(target_arch = "x86_64")]
pub(crate) mod x86_64;
