//! Request parsing: RESP multibulk (`*N\r\n$len\r\narg\r\n...`) and inline
//! commands (`SET a b\r\n`, as telnet sends them).
//!
//! Like mini-redis's `frame.rs`, parsing first checks that a whole request
//! is in the buffer and only then hands out its arguments, as ranges into the
//! buffer so that no byte is copied. The error texts are Redis's own
//! (`networking.c`); the connection replies `-ERR <text>` and closes.

use std::ops::Range;

/// Limits a request must respect.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest bulk string (`proto-max-bulk-len`).
    pub max_bulk_len: usize,
    /// Largest number of arguments in one multibulk request.
    pub max_multibulk_len: usize,
    /// Largest inline request, and largest `*N`/`$N` header line.
    pub max_inline_len: usize,
    /// Clients that must still AUTH get Redis's small limits (10 arguments,
    /// 16 KiB bulks) so that an unauthenticated peer cannot make the server
    /// buffer much.
    pub unauthenticated: bool,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_bulk_len: 64 << 20,
            max_multibulk_len: 1024 * 1024,
            max_inline_len: 64 * 1024,
            unauthenticated: false,
        }
    }
}

/// A complete request: its argument ranges in the buffer and the number of
/// bytes it used. An empty `args` (an empty line, `*0`) is to be skipped.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    /// Each argument, as a range of the buffer.
    pub args: Vec<Range<usize>>,
    /// Bytes consumed from the start of the buffer.
    pub consumed: usize,
    /// Inline arguments are unquoted into `owned` (they may differ from the
    /// buffer's bytes); `args` then index into `owned` instead.
    pub owned: Option<Vec<u8>>,
}

impl Request {
    /// The arguments as slices, given the buffer the request was parsed from.
    pub fn argv<'a>(&'a self, buf: &'a [u8]) -> Vec<&'a [u8]> {
        let src = self.owned.as_deref().unwrap_or(buf);
        self.args.iter().map(|r| &src[r.clone()]).collect()
    }
}

/// A malformed request; the text follows `-ERR ` in the reply.
#[derive(Debug, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn perr<T>(msg: impl Into<String>) -> Result<T, ProtocolError> {
    Err(ProtocolError(format!("Protocol error: {}", msg.into())))
}

/// Parses one request from the start of `buf`: `Ok(None)` when it is not
/// complete yet (read more), `Ok(Some(req))` when it is, an error when the
/// bytes cannot be a request (or break a limit) whatever follows.
pub fn parse(buf: &[u8], limits: &Limits) -> Result<Option<Request>, ProtocolError> {
    match buf.first() {
        None => Ok(None),
        Some(b'*') => parse_multibulk(buf, limits),
        Some(_) => parse_inline(buf, limits),
    }
}

/// Position of the `\r` of the first `\r\n` at or after `from`; `None` if
/// not there yet. A `\r` must be followed by `\n`: Redis only looks for `\r`
/// and then reads the number up to it, so a lone `\r` makes the number
/// invalid; we do the same by returning the `\r` position.
fn find_cr(buf: &[u8], from: usize) -> Option<usize> {
    buf[from..].iter().position(|&b| b == b'\r').map(|p| from + p)
}

/// Redis's `string2ll`: optional `-`, digits, no leading zeros or `+`, no
/// spaces, fits in an i64.
pub fn parse_i64(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    if s == b"0" {
        return Some(0);
    }
    let (neg, digits) = if s[0] == b'-' { (true, &s[1..]) } else { (false, s) };
    if digits.is_empty() || digits[0] == b'0' {
        return None;
    }
    let mut v: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    if neg {
        if v > i64::MAX as u64 + 1 { None } else { Some((v as i64).wrapping_neg()) }
    } else {
        i64::try_from(v).ok()
    }
}

fn parse_multibulk(buf: &[u8], limits: &Limits) -> Result<Option<Request>, ProtocolError> {
    let Some(cr) = find_cr(buf, 0) else {
        if buf.len() > limits.max_inline_len {
            return perr("too big mbulk count string");
        }
        return Ok(None);
    };
    if cr + 1 >= buf.len() {
        return Ok(None);
    }
    let count = match parse_i64(&buf[1..cr]) {
        Some(n) if n <= i64::from(i32::MAX) && (n < 0 || n as usize <= limits.max_multibulk_len) => n,
        _ => return perr("invalid multibulk length"),
    };
    if count > 10 && limits.unauthenticated {
        return perr("unauthenticated multibulk length");
    }
    let mut pos = cr + 2;
    if count <= 0 {
        return Ok(Some(Request { args: Vec::new(), consumed: pos, owned: None }));
    }
    let count = count as usize;
    let mut args = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        if pos >= buf.len() {
            return Ok(None);
        }
        let Some(cr) = find_cr(buf, pos) else {
            if buf.len() - pos > limits.max_inline_len {
                return perr("too big bulk count string");
            }
            return Ok(None);
        };
        if cr + 1 >= buf.len() {
            return Ok(None);
        }
        if buf[pos] != b'$' {
            return perr(format!("expected '$', got '{}'", printable(buf[pos])));
        }
        let len = match parse_i64(&buf[pos + 1..cr]) {
            Some(n) if n >= 0 && n as u64 <= limits.max_bulk_len as u64 => n as usize,
            _ => return perr("invalid bulk length"),
        };
        if len > 16384 && limits.unauthenticated {
            return perr("unauthenticated bulk length");
        }
        let start = cr + 2;
        let end = start + len;
        if buf.len() < end + 2 {
            return Ok(None);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return perr("expected '\\r\\n' after bulk string");
        }
        args.push(start..end);
        pos = end + 2;
    }
    Ok(Some(Request { args, consumed: pos, owned: None }))
}

/// The byte as Redis's `%c` would show it, kept on one line.
fn printable(b: u8) -> char {
    if b.is_ascii_graphic() || b == b' ' { b as char } else { ' ' }
}

fn parse_inline(buf: &[u8], limits: &Limits) -> Result<Option<Request>, ProtocolError> {
    let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
        if buf.len() > limits.max_inline_len {
            return perr("too big inline request");
        }
        return Ok(None);
    };
    if nl > limits.max_inline_len {
        return perr("too big inline request");
    }
    let line_end = if nl > 0 && buf[nl - 1] == b'\r' { nl - 1 } else { nl };
    // Redis looks for the end of an inline request with strchr, so a NUL
    // byte hides the newline and it waits for ever; binary data belongs in
    // the multibulk form. Say so instead.
    if buf[..line_end].contains(&0) {
        return perr("NUL byte in inline request (send binary data as a multibulk)");
    }
    let Some(words) = split_args(&buf[..line_end]) else {
        return perr("unbalanced quotes in request");
    };
    if words.len() > limits.max_multibulk_len {
        return perr("invalid multibulk length");
    }
    let mut owned = Vec::with_capacity(line_end);
    let mut args = Vec::with_capacity(words.len());
    for w in words {
        let start = owned.len();
        owned.extend_from_slice(&w);
        args.push(start..owned.len());
    }
    Ok(Some(Request { args, consumed: nl + 1, owned: Some(owned) }))
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Redis's `sdssplitargs`: words separated by blanks; `"..."` with
/// `\n \r \t \b \a \\ \" \xHH` escapes; `'...'` with `\'`; a closing quote
/// must be followed by a blank or the end. `None` on unbalanced quotes.
/// A NUL byte is an ordinary byte here (the parser refuses inline
/// requests holding one before splitting them).
pub fn split_args(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let mut i = 0;
    let n = line.len();
    loop {
        while i < n && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= n {
            return Some(out);
        }
        let mut cur = Vec::new();
        let (mut inq, mut insq) = (false, false);
        loop {
            if inq {
                if i >= n {
                    return None;
                }
                if line[i] == b'\\'
                    && i + 3 < n
                    && line[i + 1] == b'x'
                    && hex(line[i + 2]).is_some()
                    && hex(line[i + 3]).is_some()
                {
                    cur.push(hex(line[i + 2])? * 16 + hex(line[i + 3])?);
                    i += 3;
                } else if line[i] == b'\\' && i + 1 < n {
                    i += 1;
                    cur.push(match line[i] {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 8,
                        b'a' => 7,
                        c => c,
                    });
                } else if line[i] == b'"' {
                    if i + 1 < n && !line[i + 1].is_ascii_whitespace() {
                        return None;
                    }
                    i += 1;
                    break;
                } else {
                    cur.push(line[i]);
                }
            } else if insq {
                if i >= n {
                    return None;
                }
                if line[i] == b'\\' && i + 1 < n && line[i + 1] == b'\'' {
                    i += 1;
                    cur.push(b'\'');
                } else if line[i] == b'\'' {
                    if i + 1 < n && !line[i + 1].is_ascii_whitespace() {
                        return None;
                    }
                    i += 1;
                    break;
                } else {
                    cur.push(line[i]);
                }
            } else {
                if i >= n {
                    break;
                }
                match line[i] {
                    b' ' | b'\n' | b'\r' | b'\t' => break,
                    b'"' => inq = true,
                    b'\'' => insq = true,
                    c => cur.push(c),
                }
            }
            i += 1;
        }
        out.push(cur);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(buf: &[u8]) -> Vec<Vec<u8>> {
        let req = parse(buf, &Limits::default()).unwrap().unwrap();
        req.argv(buf).into_iter().map(|a| a.to_vec()).collect()
    }

    fn err(buf: &[u8], limits: &Limits) -> String {
        parse(buf, limits).unwrap_err().0
    }

    #[test]
    fn multibulk_complete_and_each_prefix_incomplete() {
        let buf = b"*3\r\n$3\r\nSET\r\n$1\r\na\r\n$0\r\n\r\n";
        assert_eq!(args(buf), vec![b"SET".to_vec(), b"a".to_vec(), b"".to_vec()]);
        assert_eq!(parse(buf, &Limits::default()).unwrap().unwrap().consumed, buf.len());
        for i in 0..buf.len() {
            assert_eq!(parse(&buf[..i], &Limits::default()).unwrap(), None, "prefix {i}");
        }
    }

    #[test]
    fn binary_safe_bulk() {
        let buf = b"*2\r\n$3\r\nGET\r\n$4\r\n\r\n\0\xff\r\n*1\r\n";
        let req = parse(buf, &Limits::default()).unwrap().unwrap();
        assert_eq!(req.argv(buf), vec![&b"GET"[..], &b"\r\n\0\xff"[..]]);
        assert_eq!(&buf[req.consumed..], b"*1\r\n");
    }

    #[test]
    fn empty_multibulk_is_skipped() {
        let req = parse(b"*0\r\nPING", &Limits::default()).unwrap().unwrap();
        assert!(req.args.is_empty());
        assert_eq!(req.consumed, 4);
        assert!(parse(b"*-1\r\n", &Limits::default()).unwrap().unwrap().args.is_empty());
    }

    #[test]
    fn malformed_multibulk() {
        let l = Limits::default();
        assert_eq!(err(b"*x\r\n", &l), "Protocol error: invalid multibulk length");
        assert_eq!(err(b"*3000000000\r\n", &l), "Protocol error: invalid multibulk length");
        assert_eq!(err(b"*2000000\r\n", &l), "Protocol error: invalid multibulk length");
        assert_eq!(err(b"*1\r\n+OK\r\n", &l), "Protocol error: expected '$', got '+'");
        assert_eq!(err(b"*1\r\n$-1\r\n", &l), "Protocol error: invalid bulk length");
        assert_eq!(err(b"*1\r\n$x\r\n", &l), "Protocol error: invalid bulk length");
        assert_eq!(err(b"*1\r\n$67108865\r\n", &l), "Protocol error: invalid bulk length");
        assert_eq!(err(b"*1\r\n$1\r\nabc\r\n", &l), "Protocol error: expected '\\r\\n' after bulk string");
        let long = vec![b'1'; 70000];
        assert_eq!(err(&[b"*".as_slice(), &long].concat(), &l), "Protocol error: too big mbulk count string");
        assert_eq!(err(&[b"*1\r\n$".as_slice(), &long].concat(), &l), "Protocol error: too big bulk count string");
    }

    #[test]
    fn unauthenticated_limits() {
        let l = Limits { unauthenticated: true, ..Limits::default() };
        assert_eq!(err(b"*11\r\n", &l), "Protocol error: unauthenticated multibulk length");
        assert_eq!(err(b"*1\r\n$16385\r\n", &l), "Protocol error: unauthenticated bulk length");
        assert!(parse(b"*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n", &l).unwrap().is_some());
    }

    #[test]
    fn configured_limits() {
        let l = Limits { max_bulk_len: 10, max_multibulk_len: 2, max_inline_len: 16, unauthenticated: false };
        assert_eq!(err(b"*1\r\n$11\r\n", &l), "Protocol error: invalid bulk length");
        assert_eq!(err(b"*3\r\n", &l), "Protocol error: invalid multibulk length");
        assert_eq!(err(b"GET aaaaaaaaaaaaaaaaaaaaaaaaa", &l), "Protocol error: too big inline request");
        assert_eq!(err(b"GET aaaaaaaaaaaaaaaaaaaaaaaaa\r\n", &l), "Protocol error: too big inline request");
    }

    #[test]
    fn inline_commands() {
        assert_eq!(args(b"SET a b\r\n"), vec![b"SET".to_vec(), b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(args(b"  PING\n"), vec![b"PING".to_vec()]);
        assert_eq!(
            args(b"SET \"a b\" '\\'x' \"\\x41\\n\"\r\n"),
            vec![b"SET".to_vec(), b"a b".to_vec(), b"'x".to_vec(), b"A\n".to_vec()]
        );
        assert!(parse(b"\r\n", &Limits::default()).unwrap().unwrap().args.is_empty());
        assert_eq!(parse(b"PING", &Limits::default()).unwrap(), None);
        assert_eq!(err(b"SET \"a\r\n", &Limits::default()), "Protocol error: unbalanced quotes in request");
        assert_eq!(err(b"SET \"a\"b\r\n", &Limits::default()), "Protocol error: unbalanced quotes in request");
        // A NUL byte in an inline request is an error (splitting one used
        // to loop for ever, adding empty arguments); to `split_args` itself
        // it is an ordinary byte.
        let nul = "Protocol error: NUL byte in inline request (send binary data as a multibulk)";
        for bad in [&b"\0\r\n"[..], b"GET a\0b c\r\n", b"GET \0\n", b"SET \"a\0\" x\r\n"] {
            assert_eq!(err(bad, &Limits::default()), nul, "{bad:?}");
        }
        assert_eq!(split_args(b"\0"), Some(vec![b"\0".to_vec()]));
        assert_eq!(split_args(b"GET a\0b \0"), Some(vec![b"GET".to_vec(), b"a\0b".to_vec(), b"\0".to_vec()]));
        assert_eq!(split_args(b"SET \"a\0\" x"), Some(vec![b"SET".to_vec(), b"a\0".to_vec(), b"x".to_vec()]));
    }

    #[test]
    fn integers_like_redis() {
        assert_eq!(parse_i64(b"0"), Some(0));
        assert_eq!(parse_i64(b"-12"), Some(-12));
        assert_eq!(parse_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [&b""[..], b"-", b"01", b"+1", b" 1", b"1 ", b"-0", b"9223372036854775808", b"1a"] {
            assert_eq!(parse_i64(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x1234_5678_9abc_def0u64;
        let alphabet = b"*$\r\n0123456789-abc \"'\\x\0\t\xff";
        for _ in 0..20000 {
            let len = (seed % 24) as usize;
            let mut buf = Vec::with_capacity(len);
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                buf.push(alphabet[(seed % alphabet.len() as u64) as usize]);
            }
            if let Ok(Some(req)) = parse(&buf, &Limits::default()) {
                assert!(req.consumed <= buf.len());
                let _ = req.argv(&buf);
            }
        }
    }
}
