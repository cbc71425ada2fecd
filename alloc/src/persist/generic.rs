//! Fallback primitives for targets without an architecture file: no line
//! flush instruction is known, so only `msync`, `volatile` and `sim` are
//! correct here; `table.rs` refuses `pmem` and `eadr` on such targets.

/// Assumed cache-line size.
pub(crate) const LINE: usize = 64;

/// A full memory fence; the strongest ordering the language offers.
pub(crate) fn fence() {
    std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
}
