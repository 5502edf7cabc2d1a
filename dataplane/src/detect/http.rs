//! HTTP/1.x request-line detection (Envoy's http_inspector): is this plaintext HTTP? Pure and
//! bounded. Only the request line is looked at; the router parses the whole head.

/// Longest request line considered (the request head cap, Decisions 9).
pub const MAX_REQUEST_LINE: usize = 64 * 1024;

/// The HTTP/2 prior-knowledge connection preface.
const H2C_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The outcome of looking at a connection's first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detect {
    /// An HTTP/1.x request line; `minor` is 0 or 1.
    Http1 {
        /// Minor version.
        minor: u8,
    },
    /// The h2c prior-knowledge preface.
    H2c,
    /// Not HTTP/1.x (or h2c).
    NotHttp,
    /// So far it could be; more bytes are needed.
    NeedMore,
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Look at the first bytes of a connection.
pub fn detect(buf: &[u8]) -> Detect {
    let n = buf.len().min(H2C_PREFACE.len());
    if buf[..n] == H2C_PREFACE[..n] {
        return if buf.len() >= H2C_PREFACE.len() {
            Detect::H2c
        } else {
            Detect::NeedMore
        };
    }
    // method SP
    let method_len = buf.iter().take_while(|&&b| is_tchar(b)).count();
    match buf.get(method_len) {
        None if method_len < 32 => return Detect::NeedMore,
        Some(b' ') if method_len > 0 => {}
        _ => return Detect::NotHttp,
    }
    // request-target SP: visible characters (and obs-text), no controls
    let target = &buf[method_len + 1..];
    let target_len = target
        .iter()
        .take_while(|&&b| b > b' ' && b != 0x7f)
        .count();
    if method_len + 1 + target_len > MAX_REQUEST_LINE {
        return Detect::NotHttp;
    }
    match target.get(target_len) {
        None => return Detect::NeedMore,
        Some(b' ') if target_len > 0 => {}
        _ => return Detect::NotHttp,
    }
    // HTTP-version CRLF (a bare LF is tolerated, as Envoy's parser does)
    let version = &target[target_len + 1..];
    const PREFIX: &[u8] = b"HTTP/1.";
    let n = version.len().min(PREFIX.len());
    if version[..n] != PREFIX[..n] {
        return Detect::NotHttp;
    }
    let minor = match version.get(PREFIX.len()) {
        None => return Detect::NeedMore,
        Some(b'0') => 0,
        Some(b'1') => 1,
        Some(_) => return Detect::NotHttp,
    };
    match version.get(PREFIX.len() + 1..).unwrap_or_default() {
        [] | [b'\r'] => Detect::NeedMore,
        [b'\r', b'\n', ..] | [b'\n', ..] => Detect::Http1 { minor },
        _ => Detect::NotHttp,
    }
}

#[cfg(test)]
mod tests {
    use super::{Detect, detect};

    #[test]
    fn table() {
        let cases: &[(&[u8], Detect)] = &[
            (
                b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
                Detect::Http1 { minor: 1 },
            ),
            (b"POST /x?y=1 HTTP/1.0\r\n", Detect::Http1 { minor: 0 }),
            (b"GET http://a.com/ HTTP/1.1\n", Detect::Http1 { minor: 1 }),
            (
                b"CONNECT a.com:443 HTTP/1.1\r\n",
                Detect::Http1 { minor: 1 },
            ),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Detect::H2c),
            (b"PRI * HTTP/2.0\r\n", Detect::NeedMore),
            (b"GET / HTTP/2.0\r\n", Detect::NotHttp),
            (b"GET / HTTP/1.1x", Detect::NotHttp),
            (b"GET  / HTTP/1.1\r\n", Detect::NotHttp),
            (b" GET / HTTP/1.1\r\n", Detect::NotHttp),
            (b"\x16\x03\x01\x02\x00", Detect::NotHttp),
            (b"SSH-2.0-OpenSSH_9.2\r\n", Detect::NotHttp),
            (b"*2\r\n$4\r\nPING\r\n", Detect::NotHttp),
            (b"GET /\x01 HTTP/1.1\r\n", Detect::NotHttp),
            (b"", Detect::NeedMore),
            (b"GE", Detect::NeedMore),
            (b"GET /path", Detect::NeedMore),
            (b"GET / HTTP/1.1\r", Detect::NeedMore),
        ];
        for (input, want) in cases {
            assert_eq!(detect(input), *want, "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn every_prefix_of_a_request_needs_more() {
        let req = b"GET /a/b?c=d HTTP/1.1\r\n";
        for cut in 0..req.len() - 1 {
            assert_eq!(detect(&req[..cut]), Detect::NeedMore, "cut at {cut}");
        }
    }

    #[test]
    fn a_long_method_is_not_http() {
        assert_eq!(detect(&[b'A'; 40]), Detect::NotHttp);
    }
}
