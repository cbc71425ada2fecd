//! Vector search helpers for the index's separator arrays.

/// How many elements of `xs` are less than `q`.
///
/// The index counts separator prefixes below a key instead of binary
/// searching them: the loads are independent (their cache misses overlap
/// instead of following one another) and there is no branch to mispredict.
/// With AVX2 the loop runs four lanes at a time.
#[inline]
pub fn count_less(xs: &[u64], q: u64) -> usize {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above), the one
        // requirement of a `target_feature(enable = "avx2")` function.
        return unsafe { count_less_avx2(xs, q) };
    }
    count_less_plain(xs, q)
}

#[inline(always)]
fn count_less_plain(xs: &[u64], q: u64) -> usize {
    xs.iter().map(|&x| usize::from(x < q)).sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn count_less_avx2(xs: &[u64], q: u64) -> usize {
    count_less_plain(xs, q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_like_a_filter() {
        let mut s = 0x1234_5678_9abc_def0u64;
        for n in [0usize, 1, 3, 4, 7, 8, 63, 64, 65, 200] {
            let mut xs: Vec<u64> = (0..n)
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    // Both halves of the unsigned range, and repeats.
                    if s.is_multiple_of(5) { u64::MAX - (s % 3) } else { s % 1000 }
                })
                .collect();
            xs.sort_unstable();
            for q in [0, 1, 500, 999, 1000, u64::MAX - 2, u64::MAX - 1, u64::MAX] {
                assert_eq!(count_less(&xs, q), xs.iter().filter(|&&x| x < q).count(), "n={n} q={q}");
                assert_eq!(count_less_plain(&xs, q), xs.partition_point(|&x| x < q));
            }
        }
    }
}
