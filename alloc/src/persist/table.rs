//! The table of persistence operations, filled once when a region is opened
//! from the backend, the options and CPUID; every later flush, drain and copy
//! is a plain call through it.

use super::backend::{Backend, CopyIsa, FlushInstr, PersistOptions};
use crate::error::OpenError;
use std::ptr;

#[cfg(not(target_arch = "x86_64"))]
use super::generic as hw;
#[cfg(target_arch = "x86_64")]
use super::x86_64 as hw;

pub(crate) use hw::LINE;

type FlushFn = unsafe fn(*const u8, usize);
type CopyFn = unsafe fn(*mut u8, *const u8, usize);
type SetFn = unsafe fn(*mut u8, u8, usize);

/// The operations of one region, chosen once.
#[derive(Clone, Copy)]
pub(crate) struct Ops {
    flush: FlushFn,
    drain: fn(),
    nt_copy: Option<CopyFn>,
    nt_set: Option<SetFn>,
    threshold: usize,
    pub(crate) flush_instr: FlushInstr,
    pub(crate) copy_isa: CopyIsa,
}

/// # Safety
/// Always safe: touches nothing. `unsafe` only to fit the table's type.
unsafe fn flush_none(_: *const u8, _: usize) {}

fn drain_compiler() {
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
}

#[cfg(target_arch = "x86_64")]
fn drain_fence() {
    hw::sfence();
}
#[cfg(not(target_arch = "x86_64"))]
fn drain_fence() {
    hw::fence();
}

#[cfg(target_arch = "x86_64")]
fn pick_flush(o: &PersistOptions) -> Result<(FlushInstr, FlushFn), OpenError> {
    let cpu = hw::detect();
    let want = match o.force_flush {
        Some(f) => f,
        None if cpu.clwb && !o.no_clwb => FlushInstr::Clwb,
        None if cpu.clflushopt && !o.no_clflushopt => FlushInstr::Clflushopt,
        None => FlushInstr::Clflush,
    };
    let f: FlushFn = match want {
        FlushInstr::Clwb if cpu.clwb => hw::flush_clwb,
        FlushInstr::Clflushopt if cpu.clflushopt => hw::flush_clflushopt,
        FlushInstr::Clflush => hw::flush_clflush,
        FlushInstr::None => flush_none,
        other => {
            return Err(OpenError::Backend {
                backend: "pmem",
                why: format!("this CPU has no {} instruction", other.name()),
            });
        }
    };
    Ok((want, f))
}

#[cfg(not(target_arch = "x86_64"))]
fn pick_flush(_: &PersistOptions) -> Result<(FlushInstr, FlushFn), OpenError> {
    Err(OpenError::Backend {
        backend: "pmem",
        why: "no cache-line flush instruction is known on this architecture".into(),
    })
}

#[cfg(target_arch = "x86_64")]
fn pick_copy(o: &PersistOptions) -> Result<(CopyIsa, Option<CopyFn>, Option<SetFn>), OpenError> {
    let cpu = hw::detect();
    let want = match o.force_copy {
        Some(c) => c,
        None if o.no_movnt => CopyIsa::Plain,
        None if cpu.avx512f => CopyIsa::Avx512,
        None if cpu.avx2 => CopyIsa::Avx2,
        None => CopyIsa::Sse2,
    };
    Ok(match want {
        CopyIsa::Avx512 if cpu.avx512f => (want, Some(hw::nt_copy_avx512 as CopyFn), Some(hw::nt_set_avx512 as SetFn)),
        CopyIsa::Avx2 if cpu.avx2 => (want, Some(hw::nt_copy_avx2 as CopyFn), Some(hw::nt_set_avx2 as SetFn)),
        CopyIsa::Sse2 => (want, Some(hw::nt_copy_sse2 as CopyFn), Some(hw::nt_set_sse2 as SetFn)),
        CopyIsa::Plain => (want, None, None),
        other => {
            return Err(OpenError::Backend {
                backend: "pmem",
                why: format!("this CPU cannot run the {} copy path", other.name()),
            });
        }
    })
}

#[cfg(not(target_arch = "x86_64"))]
fn pick_copy(_: &PersistOptions) -> Result<(CopyIsa, Option<CopyFn>, Option<SetFn>), OpenError> {
    Ok((CopyIsa::Plain, None, None))
}

impl Ops {
    /// Fill the table for `backend`.
    pub(crate) fn build(backend: Backend, o: &PersistOptions) -> Result<Ops, OpenError> {
        let plain = Ops {
            flush: flush_none,
            drain: drain_compiler,
            nt_copy: None,
            nt_set: None,
            threshold: o.movnt_threshold,
            flush_instr: FlushInstr::None,
            copy_isa: CopyIsa::Plain,
        };
        Ok(match backend {
            Backend::Pmem => {
                let (flush_instr, flush) = pick_flush(o)?;
                let (copy_isa, nt_copy, nt_set) = pick_copy(o)?;
                Ops { flush, drain: drain_fence, nt_copy, nt_set, flush_instr, copy_isa, ..plain }
            }
            Backend::Eadr => {
                #[cfg(not(target_arch = "x86_64"))]
                return Err(OpenError::Backend {
                    backend: "eadr",
                    why: "non-temporal stores are only implemented on x86-64".into(),
                });
                #[cfg(target_arch = "x86_64")]
                {
                    let (copy_isa, nt_copy, nt_set) = pick_copy(o)?;
                    Ops { drain: drain_fence, nt_copy, nt_set, copy_isa, ..plain }
                }
            }
            // msync and the simulator do their own bookkeeping in `Region`;
            // the table gives them plain copies and a full fence.
            Backend::Msync | Backend::Sim => Ops { drain: drain_fence, ..plain },
            Backend::Volatile => plain,
        })
    }

    /// Start write-back of every line touched by the range.
    ///
    /// # Safety
    /// `[addr, addr+len)` lies inside a live mapping.
    #[inline]
    pub(crate) unsafe fn flush(&self, addr: *const u8, len: usize) {
        // SAFETY: forwarded from the caller; the function matches the CPU.
        unsafe { (self.flush)(addr, len) }
    }

    /// Order every earlier flush and non-temporal store before later stores.
    #[inline]
    pub(crate) fn drain(&self) {
        (self.drain)()
    }

    /// The flushcache copy: non-temporal stores for the 64-byte aligned body
    /// of a copy of at least `threshold` bytes, cached stores plus line
    /// flush for small copies and for the unaligned head and tail. Lines
    /// written with non-temporal stores are never flushed.
    ///
    /// # Safety
    /// `dst..dst+len` lies inside a live mapping, `src..src+len` is readable,
    /// and they do not overlap.
    #[inline]
    pub(crate) unsafe fn copy_nodrain(&self, dst: *mut u8, src: *const u8, len: usize) {
        match self.nt_copy {
            Some(nt) if len >= self.threshold && len >= LINE => {
                let head = dst.align_offset(LINE).min(len);
                let body = (len - head) & !(LINE - 1);
                let tail = len - head - body;
                // SAFETY: the three pieces partition the caller's ranges; the
                // body starts 64-byte aligned and is a multiple of 64 long.
                unsafe {
                    if head > 0 {
                        ptr::copy_nonoverlapping(src, dst, head);
                        (self.flush)(dst, head);
                    }
                    nt(dst.add(head), src.add(head), body);
                    if tail > 0 {
                        ptr::copy_nonoverlapping(src.add(head + body), dst.add(head + body), tail);
                        (self.flush)(dst.add(head + body), tail);
                    }
                }
            }
            _ => {
                // SAFETY: caller's ranges.
                unsafe {
                    ptr::copy_nonoverlapping(src, dst, len);
                    (self.flush)(dst, len);
                }
            }
        }
    }

    /// [`Ops::copy_nodrain`] for whole cache lines (`dst` 64-byte aligned,
    /// `len` a multiple of 64): non-temporal stores whatever the threshold,
    /// so that no line is read from memory before it is overwritten and
    /// none needs a flush. Falls back to `copy_nodrain` otherwise.
    ///
    /// # Safety
    /// As for [`Ops::copy_nodrain`].
    #[inline]
    pub(crate) unsafe fn copy_lines_nodrain(&self, dst: *mut u8, src: *const u8, len: usize) {
        match self.nt_copy {
            Some(nt) if (dst as usize).is_multiple_of(LINE) && len.is_multiple_of(LINE) => {
                // SAFETY: caller's ranges; `dst` aligned, `len` whole lines.
                unsafe { nt(dst, src, len) }
            }
            // SAFETY: caller's ranges.
            _ => unsafe { self.copy_nodrain(dst, src, len) },
        }
    }

    /// The memset twin of [`Ops::copy_nodrain`].
    ///
    /// # Safety
    /// `dst..dst+len` lies inside a live mapping.
    #[inline]
    pub(crate) unsafe fn set_nodrain(&self, dst: *mut u8, byte: u8, len: usize) {
        match self.nt_set {
            Some(nt) if len >= self.threshold && len >= LINE => {
                let head = dst.align_offset(LINE).min(len);
                let body = (len - head) & !(LINE - 1);
                let tail = len - head - body;
                // SAFETY: as in copy_nodrain.
                unsafe {
                    if head > 0 {
                        ptr::write_bytes(dst, byte, head);
                        (self.flush)(dst, head);
                    }
                    nt(dst.add(head), byte, body);
                    if tail > 0 {
                        ptr::write_bytes(dst.add(head + body), byte, tail);
                        (self.flush)(dst.add(head + body), tail);
                    }
                }
            }
            _ => {
                // SAFETY: caller's range.
                unsafe {
                    ptr::write_bytes(dst, byte, len);
                    (self.flush)(dst, len);
                }
            }
        }
    }

    pub(crate) fn threshold(&self) -> usize {
        self.threshold
    }
}
