//! Reply encoding, RESP2 or RESP3 (after `HELLO 3`), straight into the
//! connection's output buffer.

/// An output buffer that knows the protocol version of its client.
#[derive(Debug, Default)]
pub struct Out {
    /// Encoded bytes waiting to be sent.
    pub buf: Vec<u8>,
    /// RESP3 (`HELLO 3`) rather than RESP2.
    pub resp3: bool,
}

impl Out {
    /// An empty RESP2 buffer.
    pub fn new() -> Out {
        Out::default()
    }

    /// `prefix`, the decimal `n`, CRLF: no allocation.
    fn header(&mut self, prefix: u8, n: i64) {
        let mut digits = [0u8; 24];
        let mut i = digits.len();
        let mut m = n.unsigned_abs();
        loop {
            i -= 1;
            digits[i] = b'0' + (m % 10) as u8;
            m /= 10;
            if m == 0 {
                break;
            }
        }
        if n < 0 {
            i -= 1;
            digits[i] = b'-';
        }
        self.buf.push(prefix);
        self.buf.extend_from_slice(&digits[i..]);
        self.buf.extend_from_slice(b"\r\n");
    }

    fn line(&mut self, prefix: u8, body: &[u8]) {
        self.buf.push(prefix);
        // A reply line cannot carry a line break: Redis maps them to spaces.
        self.buf.extend(body.iter().map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }));
        self.buf.extend_from_slice(b"\r\n");
    }

    /// `+text`
    pub fn simple(&mut self, s: &str) {
        self.line(b'+', s.as_bytes());
    }

    /// `+OK`
    pub fn ok(&mut self) {
        self.buf.extend_from_slice(b"+OK\r\n");
    }

    /// An error reply; `msg` starts with its code (`ERR`, `NOAUTH`, ...).
    pub fn error(&mut self, msg: &str) {
        self.error_bytes(msg.as_bytes());
    }

    /// An error reply from bytes (which may quote a client's arguments).
    /// Line breaks at the end are dropped, and those inside become spaces,
    /// as Redis does with the errors it formats (`Unsupported option a\r`
    /// answers `-ERR Unsupported option a`).
    pub fn error_bytes(&mut self, msg: &[u8]) {
        let end = msg.iter().rposition(|&b| b != b'\r' && b != b'\n').map_or(0, |i| i + 1);
        self.line(b'-', &msg[..end]);
    }

    /// `:n`
    pub fn int(&mut self, n: i64) {
        self.header(b':', n);
    }

    /// `$len\r\nbytes\r\n`
    pub fn bulk(&mut self, b: &[u8]) {
        self.buf.reserve(b.len() + 16);
        self.header(b'$', b.len() as i64);
        self.buf.extend_from_slice(b);
        self.buf.extend_from_slice(b"\r\n");
    }

    /// A bulk, or the null bulk.
    pub fn opt_bulk(&mut self, b: Option<&[u8]>) {
        match b {
            Some(b) => self.bulk(b),
            None => self.null(),
        }
    }

    /// The null bulk string (`$-1`; RESP3 `_`).
    pub fn null(&mut self) {
        self.buf.extend_from_slice(if self.resp3 { b"_\r\n" } else { b"$-1\r\n" });
    }

    /// The null array (`*-1`; RESP3 `_`), as EXEC answers an aborted
    /// transaction.
    pub fn null_array(&mut self) {
        self.buf.extend_from_slice(if self.resp3 { b"_\r\n" } else { b"*-1\r\n" });
    }

    /// Array header for `n` elements.
    pub fn array(&mut self, n: usize) {
        self.header(b'*', n as i64);
    }

    /// Map header for `n` pairs (RESP2: an array of 2n elements).
    pub fn map(&mut self, n: usize) {
        if self.resp3 {
            self.header(b'%', n as i64);
        } else {
            self.array(2 * n);
        }
    }

    /// Set header for `n` elements (RESP2: an array).
    pub fn set(&mut self, n: usize) {
        if self.resp3 {
            self.header(b'~', n as i64);
        } else {
            self.array(n);
        }
    }

    /// Verbatim text (INFO): RESP3 `=len\r\ntxt:...`, RESP2 a bulk.
    pub fn verbatim(&mut self, text: &str) {
        if self.resp3 {
            self.buf.push(b'=');
            self.buf.extend_from_slice((text.len() + 4).to_string().as_bytes());
            self.buf.extend_from_slice(b"\r\ntxt:");
            self.buf.extend_from_slice(text.as_bytes());
            self.buf.extend_from_slice(b"\r\n");
        } else {
            self.bulk(text.as_bytes());
        }
    }

    /// Bytes encoded so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Nothing encoded.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp2_and_resp3() {
        let mut o = Out::new();
        o.ok();
        o.int(-3);
        o.int(i64::MIN);
        o.int(0);
        o.bulk(b"a\r\nb");
        o.null();
        o.null_array();
        o.map(1);
        o.error("ERR bad\r\nthing");
        assert_eq!(
            o.buf,
            b"+OK\r\n:-3\r\n:-9223372036854775808\r\n:0\r\n$4\r\na\r\nb\r\n$-1\r\n*-1\r\n*2\r\n-ERR bad  thing\r\n"
        );
        let mut o = Out { resp3: true, ..Out::new() };
        o.null();
        o.null_array();
        o.map(2);
        o.set(0);
        o.verbatim("x");
        assert_eq!(o.buf, b"_\r\n_\r\n%2\r\n~0\r\n=5\r\ntxt:x\r\n");
    }
}
