//! INCRBYFLOAT's sum, computed as Redis computes it: both operands parsed
//! with `strtold`, added in the C `long double` (80-bit extended precision
//! on x86-64), printed with `%.17Lf` less trailing zeros. Rust has no such
//! type, so the arithmetic is a small C function (`csrc/float.c`); this
//! module is its safe face.

use std::ffi::{c_char, c_int};

/// Room for any finite long double printed with 17 decimals (the C side's
/// `DAXKV_LD_CHARS`).
const LD_CHARS: usize = 5120;

unsafe extern "C" {
    fn daxkv_incrbyfloat(
        cur: *const c_char,
        cur_len: usize,
        has_cur: c_int,
        inc: *const c_char,
        inc_len: usize,
        out: *mut c_char,
        out_len: *mut usize,
    ) -> c_int;
}

/// Why INCRBYFLOAT refused.
#[derive(Debug, PartialEq, Eq)]
pub enum FloatError {
    /// An operand is not a float Redis accepts.
    NotAFloat,
    /// The sum is NaN or infinite.
    NanOrInfinity,
}

/// `current` (`None`: 0) plus `increment`, as the text Redis stores and
/// answers.
pub fn incr_by_float(current: Option<&[u8]>, increment: &[u8]) -> Result<Vec<u8>, FloatError> {
    let mut out = vec![0u8; LD_CHARS];
    let mut len = 0usize;
    let cur = current.unwrap_or_default();
    // The C side reads exactly `cur_len` and `inc_len` bytes (it copies them
    // before parsing: no NUL terminator needed), bounds its output with
    // snprintf to `LD_CHARS` bytes, and keeps no pointer past the call.
    // SAFETY: both inputs are live slices of the lengths passed, `out` is
    // `LD_CHARS` bytes long and `len` a live `usize`.
    let rc = unsafe {
        daxkv_incrbyfloat(
            cur.as_ptr().cast(),
            cur.len(),
            c_int::from(current.is_some()),
            increment.as_ptr().cast(),
            increment.len(),
            out.as_mut_ptr().cast(),
            &mut len,
        )
    };
    match rc {
        0 => {
            out.truncate(len.min(LD_CHARS));
            Ok(out)
        }
        1 => Err(FloatError::NotAFloat),
        _ => Err(FloatError::NanOrInfinity),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(cur: Option<&str>, inc: &str) -> Result<String, FloatError> {
        incr_by_float(cur.map(str::as_bytes), inc.as_bytes()).map(|v| String::from_utf8(v).unwrap())
    }

    /// Answers checked against redis-server 7.0.15 by hand.
    #[test]
    fn sums_print_as_redis_prints_them() {
        assert_eq!(add(Some("10.5"), "0.1").unwrap(), "10.6");
        assert_eq!(add(None, "3").unwrap(), "3");
        assert_eq!(add(Some("5.0e3"), "2.0e2").unwrap(), "5200");
        assert_eq!(add(Some("1"), "-1").unwrap(), "0");
        assert_eq!(add(Some("-0"), "-0").unwrap(), "0");
        assert_eq!(add(Some("0.1"), "0.2").unwrap(), "0.3");
        assert_eq!(add(Some("1e-20"), "0").unwrap(), "0");
        assert_eq!(add(Some("0x10"), "1").unwrap(), "17");
        assert_eq!(add(Some("abc"), "1"), Err(FloatError::NotAFloat));
        assert_eq!(add(Some("1"), " 1"), Err(FloatError::NotAFloat));
        assert_eq!(add(Some("1"), "1 "), Err(FloatError::NotAFloat));
        assert_eq!(add(Some("1"), ""), Err(FloatError::NotAFloat));
        assert_eq!(add(Some("1"), "nan"), Err(FloatError::NotAFloat));
        assert_eq!(add(Some("1"), "1e99999"), Err(FloatError::NotAFloat));
        assert_eq!(add(Some("1\0"), "1"), Err(FloatError::NotAFloat));
        assert_eq!(add(Some("1"), "inf"), Err(FloatError::NanOrInfinity));
        assert_eq!(add(Some("inf"), "1"), Err(FloatError::NanOrInfinity));
        assert_eq!(add(Some("1.5"), "1e-5000"), Err(FloatError::NotAFloat));
        // 1e4000 is not exact in 64 bits of mantissa: all its digits print.
        let big = add(None, "1e4000").unwrap();
        assert!(big.starts_with("99999999999999999999654638730996237849") && big.len() == 4000, "{}", big.len());
    }
}
