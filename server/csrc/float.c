/*
 * INCRBYFLOAT's arithmetic in the C `long double` (x87 80-bit extended
 * precision on x86-64), which Rust does not have: Redis parses both
 * operands with strtold, adds them in long double, and prints the sum with
 * "%.17Lf" less its trailing zeros, so a byte-exact answer needs the same
 * type, the same parser and the same printf. Called from
 * server/src/float.rs, which holds the only `unsafe` around it.
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Longest operand accepted, and room for any finite long double printed
 * with 17 decimals (the largest has 4,933 integer digits). */
#define DAXKV_LD_CHARS 5120

/* Parse `len` bytes as a long double the way Redis accepts one: the whole
 * text (no leading space, nothing after), not empty, not NaN, not out of
 * range (overflow to infinity or underflow to zero). 1 on success. */
static int parse_ld(const char *s, size_t len, long double *out) {
    char buf[DAXKV_LD_CHARS];
    char *end;
    long double v;
    if (len == 0 || len >= sizeof(buf)) return 0;
    memcpy(buf, s, len);
    buf[len] = '\0';
    errno = 0;
    v = strtold(buf, &end);
    if (isspace((unsigned char)buf[0])) return 0;
    if (*end != '\0' || (size_t)(end - buf) != len) return 0;
    if (errno == EINVAL || isnan(v)) return 0;
    if (errno == ERANGE && (v == HUGE_VALL || v == -HUGE_VALL || fpclassify(v) == FP_ZERO)) return 0;
    *out = v;
    return 1;
}

/*
 * cur (has_cur = 0: the key is absent, counts as 0) + inc, written to out
 * (capacity DAXKV_LD_CHARS) as Redis writes it; *out_len its length.
 * Returns 0 on success, 1 if an operand is not a valid float, 2 if the
 * sum is NaN or infinite.
 */
int daxkv_incrbyfloat(const char *cur, size_t cur_len, int has_cur, const char *inc, size_t inc_len,
                      char *out, size_t *out_len) {
    long double a = 0, b, sum;
    int n;
    char *dot;
    if (has_cur && !parse_ld(cur, cur_len, &a)) return 1;
    if (!parse_ld(inc, inc_len, &b)) return 1;
    sum = a + b;
    if (isnan(sum) || isinf(sum)) return 2;
    n = snprintf(out, DAXKV_LD_CHARS, "%.17Lf", sum);
    if (n <= 0 || n >= DAXKV_LD_CHARS) return 2;
    /* Trailing zeros after the point go, then a bare point; "-0" is "0". */
    dot = memchr(out, '.', (size_t)n);
    if (dot != NULL) {
        while (out[n - 1] == '0') n--;
        if (out[n - 1] == '.') n--;
    }
    if (n == 2 && out[0] == '-' && out[1] == '0') {
        out[0] = '0';
        n = 1;
    }
    *out_len = (size_t)n;
    return 0;
}
