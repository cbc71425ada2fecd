//! x86-64 flush, fence and non-temporal copy primitives.
//!
//! Everything here is an `unsafe fn` over raw addresses; `table.rs` picks
//! which of them to use once, from CPUID, and `Region` calls them only on
//! ranges it has bounds-checked against its own mapping.

use core::arch::asm;
use core::arch::x86_64 as arch;

/// Cache-line size on every x86-64 part that has clwb or clflushopt.
pub(crate) const LINE: usize = 64;

/// CPU features that matter to the persistence layer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cpu {
    pub clwb: bool,
    pub clflushopt: bool,
    pub avx512f: bool,
    pub avx2: bool,
    pub sse2: bool,
}

pub(crate) fn detect() -> Cpu {
    // CPUID leaf 7, sub-leaf 0, EBX: bit 23 = CLFLUSHOPT, bit 24 = CLWB.
    // `__cpuid_count` is a safe function on current Rust; the leaf exists on
    // every x86-64 processor that can run this code (max leaf checked first).
    #[allow(unused_unsafe)]
    // SAFETY: cpuid is available on all x86-64 processors.
    let max_leaf = unsafe { arch::__cpuid(0) }.eax;
    let (clflushopt, clwb) = if max_leaf >= 7 {
        #[allow(unused_unsafe)]
        // SAFETY: leaf 7 exists, checked against the maximum leaf above.
        let l7 = unsafe { arch::__cpuid_count(7, 0) };
        (l7.ebx & (1 << 23) != 0, l7.ebx & (1 << 24) != 0)
    } else {
        (false, false)
    };
    Cpu {
        clwb,
        clflushopt,
        avx512f: std::arch::is_x86_feature_detected!("avx512f"),
        avx2: std::arch::is_x86_feature_detected!("avx2"),
        sse2: std::arch::is_x86_feature_detected!("sse2"),
    }
}

#[inline(always)]
fn lines(addr: *const u8, len: usize) -> impl Iterator<Item = usize> {
    let start = addr as usize & !(LINE - 1);
    let end = if len == 0 { start } else { addr as usize + len };
    (start..end).step_by(LINE)
}

/// Write back every line touched by `[addr, addr+len)` with `clwb`.
///
/// # Safety
/// The range must lie in mapped memory and the CPU must support clwb.
pub(crate) unsafe fn flush_clwb(addr: *const u8, len: usize) {
    for line in lines(addr, len) {
        // SAFETY: `line` is inside a mapped range (caller) and clwb exists
        // (caller); clwb neither writes memory visible to Rust nor the stack.
        unsafe { asm!("clwb [{0}]", in(reg) line, options(nostack, preserves_flags)) };
    }
}

/// Write back and evict every line touched with `clflushopt`.
///
/// # Safety
/// The range must lie in mapped memory and the CPU must support clflushopt.
pub(crate) unsafe fn flush_clflushopt(addr: *const u8, len: usize) {
    for line in lines(addr, len) {
        // SAFETY: as for clwb: mapped line, instruction present.
        unsafe { asm!("clflushopt [{0}]", in(reg) line, options(nostack, preserves_flags)) };
    }
}

/// Write back and evict every line touched with the ordered `clflush`.
///
/// # Safety
/// The range must lie in mapped memory.
pub(crate) unsafe fn flush_clflush(addr: *const u8, len: usize) {
    for line in lines(addr, len) {
        // SAFETY: mapped line (caller); clflush is baseline on x86-64.
        unsafe { arch::_mm_clflush(line as *const u8) };
    }
}

/// Store fence: every earlier flush and non-temporal store is complete (and
/// so, in the persistence domain) before any later store.
pub(crate) fn sfence() {
    // SAFETY: sfence is baseline on x86-64 and touches no memory.
    unsafe { arch::_mm_sfence() };
}

/// Non-temporal copy, 64 bytes a step, 256 bytes an iteration.
///
/// # Safety
/// `dst` is 64-byte aligned, `len` a multiple of 64, both ranges valid and
/// not overlapping, and the CPU has AVX-512F.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn nt_copy_avx512(dst: *mut u8, src: *const u8, len: usize) {
    debug_assert!((dst as usize).is_multiple_of(LINE) && len.is_multiple_of(LINE));
    let mut i = 0;
    // SAFETY: every access is within [0, len) of ranges the caller
    // guarantees valid; stores are to 64-byte aligned addresses.
    unsafe {
        while i + 4 * LINE <= len {
            let a = arch::_mm512_loadu_si512(src.add(i).cast());
            let b = arch::_mm512_loadu_si512(src.add(i + 64).cast());
            let c = arch::_mm512_loadu_si512(src.add(i + 128).cast());
            let d = arch::_mm512_loadu_si512(src.add(i + 192).cast());
            arch::_mm512_stream_si512(dst.add(i).cast(), a);
            arch::_mm512_stream_si512(dst.add(i + 64).cast(), b);
            arch::_mm512_stream_si512(dst.add(i + 128).cast(), c);
            arch::_mm512_stream_si512(dst.add(i + 192).cast(), d);
            i += 4 * LINE;
        }
        while i < len {
            let a = arch::_mm512_loadu_si512(src.add(i).cast());
            arch::_mm512_stream_si512(dst.add(i).cast(), a);
            i += LINE;
        }
    }
}

/// Non-temporal copy with 32-byte AVX2 stores.
///
/// # Safety
/// As [`nt_copy_avx512`], with AVX2 instead of AVX-512F.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn nt_copy_avx2(dst: *mut u8, src: *const u8, len: usize) {
    debug_assert!((dst as usize).is_multiple_of(LINE) && len.is_multiple_of(LINE));
    let mut i = 0;
    // SAFETY: within the caller's valid ranges; stores 32-byte aligned.
    unsafe {
        while i < len {
            let a = arch::_mm256_loadu_si256(src.add(i).cast());
            let b = arch::_mm256_loadu_si256(src.add(i + 32).cast());
            arch::_mm256_stream_si256(dst.add(i).cast(), a);
            arch::_mm256_stream_si256(dst.add(i + 32).cast(), b);
            i += LINE;
        }
    }
}

/// Non-temporal copy with 16-byte SSE2 stores.
///
/// # Safety
/// As [`nt_copy_avx512`], needing only SSE2 (baseline on x86-64).
pub(crate) unsafe fn nt_copy_sse2(dst: *mut u8, src: *const u8, len: usize) {
    debug_assert!((dst as usize).is_multiple_of(LINE) && len.is_multiple_of(LINE));
    let mut i = 0;
    // SAFETY: within the caller's valid ranges; stores 16-byte aligned.
    unsafe {
        while i < len {
            let a = arch::_mm_loadu_si128(src.add(i).cast());
            let b = arch::_mm_loadu_si128(src.add(i + 16).cast());
            let c = arch::_mm_loadu_si128(src.add(i + 32).cast());
            let d = arch::_mm_loadu_si128(src.add(i + 48).cast());
            arch::_mm_stream_si128(dst.add(i).cast(), a);
            arch::_mm_stream_si128(dst.add(i + 16).cast(), b);
            arch::_mm_stream_si128(dst.add(i + 32).cast(), c);
            arch::_mm_stream_si128(dst.add(i + 48).cast(), d);
            i += LINE;
        }
    }
}

/// Non-temporal fill with AVX-512 stores.
///
/// # Safety
/// `dst` 64-byte aligned, `len` a multiple of 64, range valid, AVX-512F.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn nt_set_avx512(dst: *mut u8, byte: u8, len: usize) {
    let v = arch::_mm512_set1_epi8(byte as i8);
    let mut i = 0;
    while i < len {
        // SAFETY: aligned store inside the caller's range.
        unsafe { arch::_mm512_stream_si512(dst.add(i).cast(), v) };
        i += LINE;
    }
}

/// Non-temporal fill with AVX2 stores.
///
/// # Safety
/// As [`nt_set_avx512`], with AVX2.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn nt_set_avx2(dst: *mut u8, byte: u8, len: usize) {
    let v = arch::_mm256_set1_epi8(byte as i8);
    let mut i = 0;
    while i < len {
        // SAFETY: aligned stores inside the caller's range.
        unsafe {
            arch::_mm256_stream_si256(dst.add(i).cast(), v);
            arch::_mm256_stream_si256(dst.add(i + 32).cast(), v);
        }
        i += LINE;
    }
}

/// Non-temporal fill with SSE2 stores.
///
/// # Safety
/// As [`nt_set_avx512`], needing only SSE2.
pub(crate) unsafe fn nt_set_sse2(dst: *mut u8, byte: u8, len: usize) {
    // SAFETY: SSE2 is baseline on x86-64.
    let v = unsafe { arch::_mm_set1_epi8(byte as i8) };
    let mut i = 0;
    while i < len {
        // SAFETY: aligned stores inside the caller's range.
        unsafe {
            arch::_mm_stream_si128(dst.add(i).cast(), v);
            arch::_mm_stream_si128(dst.add(i + 16).cast(), v);
            arch::_mm_stream_si128(dst.add(i + 32).cast(), v);
            arch::_mm_stream_si128(dst.add(i + 48).cast(), v);
        }
        i += LINE;
    }
}
