//! Request heads: parsed with httparse within limits, checked for the framing ambiguities that
//! enable request smuggling, and reduced to what routing and forwarding need.

/// Largest request head accepted (Decisions 9).
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header fields accepted.
pub const MAX_HEADERS: usize = 100;

/// How the request body is delimited (RFC 9112 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
}

/// A parsed request head; positions refer to the parsed buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// Method.
    pub method: String,
    /// Request target as sent.
    pub target: String,
    /// HTTP/1.0 or HTTP/1.1.
    pub minor_version: u8,
    /// Header fields in order (names as sent).
    pub headers: Vec<(String, Vec<u8>)>,
    /// The authority to route by: the absolute-form target's, else Host (RFC 9112 §3.2.2).
    pub authority: String,
    /// Path and query (absolute-form reduced to origin-form).
    pub path: String,
    /// Body delimitation.
    pub framing: Framing,
    /// The client asked for `Expect: 100-continue`.
    pub expect_continue: bool,
    /// The client wants the connection closed after this exchange.
    pub close: bool,
    /// An `Upgrade` request (WebSocket and friends).
    pub upgrade: bool,
    /// Bytes of head consumed.
    pub head_len: usize,
}

/// Why a head is refused, with the status the proxy answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reject {
    /// 400 Bad Request.
    BadRequest(&'static str),
    /// 431 Request Header Fields Too Large.
    TooLarge,
    /// 501 Not Implemented (a transfer coding the proxy does not understand).
    NotImplemented(&'static str),
}

impl Reject {
    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            Self::BadRequest(_) => 400,
            Self::TooLarge => 431,
            Self::NotImplemented(_) => 501,
        }
    }
}

/// The values of every header field named `name` (case-insensitive), in order.
pub fn values<'a>(
    headers: &'a [(String, Vec<u8>)],
    name: &'a str,
) -> impl Iterator<Item = &'a [u8]> + 'a {
    headers
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

/// The comma-separated tokens of every field named `name` (case-insensitive), as received
/// but for the spaces and tabs around them (RFC 9110 section 5.6.1): `Connection: keep-alive,
/// Upgrade` gives `keep-alive`, `Upgrade`. Tokens are ASCII, so they are compared as bytes:
/// nothing is decoded or allocated.
pub fn tokens<'h>(
    headers: impl Iterator<Item = (&'h str, &'h [u8])>,
    name: &str,
) -> impl Iterator<Item = &'h [u8]> {
    headers
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .flat_map(|(_, v)| v.split(|&b| b == b',').map(<[u8]>::trim_ascii))
}

/// Whether any token of the fields named `name` is `token`, ASCII case aside.
pub fn has_token<'h>(
    headers: impl Iterator<Item = (&'h str, &'h [u8])>,
    name: &str,
    token: &str,
) -> bool {
    tokens(headers, name).any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
}

/// A request head's fields as borrowed pairs, the form [`tokens`] reads.
fn pairs(headers: &[(String, Vec<u8>)]) -> impl Iterator<Item = (&str, &[u8])> {
    headers.iter().map(|(n, v)| (n.as_str(), v.as_slice()))
}

/// Parse a request head. `Ok(None)`: incomplete, read more.
pub fn parse(buf: &[u8]) -> Result<Option<RequestHead>, Reject> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut fields);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => return Err(Reject::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Reject::TooLarge),
        Err(_) => return Err(Reject::BadRequest("malformed request head")),
    };
    if head_len > MAX_HEAD {
        return Err(Reject::TooLarge);
    }
    let method = req.method.unwrap_or_default().to_owned();
    let target = req.path.unwrap_or_default().to_owned();
    let minor_version = req.version.unwrap_or(1);
    let headers: Vec<(String, Vec<u8>)> = req
        .headers
        .iter()
        .map(|h| (h.name.to_owned(), h.value.to_vec()))
        .collect();
    let values = |name: &'static str| values(&headers, name);

    // Host: exactly one (RFC 9112 §3.2); required (Decisions 3).
    let host = {
        let mut hosts = values("host");
        let host = hosts.next();
        if hosts.next().is_some() {
            return Err(Reject::BadRequest("more than one Host header"));
        }
        host.map(|h| String::from_utf8_lossy(h).trim().to_owned())
    };
    let (authority, path) = if method == "CONNECT" {
        (target.clone(), String::new())
    } else if let Some(rest) = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
    {
        let (auth, path) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
        let path = if path.is_empty() {
            "/".to_owned()
        } else if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_owned()
        };
        (auth.to_owned(), path)
    } else if target.starts_with('/') || (target == "*" && method == "OPTIONS") {
        (host.unwrap_or_default(), target.clone())
    } else {
        return Err(Reject::BadRequest(
            "request target is neither origin, absolute nor authority form",
        ));
    };
    if authority.is_empty() {
        return Err(Reject::BadRequest("no Host"));
    }
    if authority.contains('@') {
        return Err(Reject::BadRequest("userinfo in the authority"));
    }
    if authority
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(Reject::BadRequest("malformed authority"));
    }

    // Framing (RFC 9112 §6.1-6.3): refuse every ambiguity.
    let te: Vec<&[u8]> = values("transfer-encoding").collect();
    let cl: Vec<&[u8]> = values("content-length").collect();
    let framing = match (te.is_empty(), cl.len()) {
        (false, n) if n > 0 => {
            return Err(Reject::BadRequest(
                "both Transfer-Encoding and Content-Length",
            ));
        }
        (false, _) => {
            if minor_version == 0 {
                return Err(Reject::BadRequest(
                    "Transfer-Encoding in an HTTP/1.0 request",
                ));
            }
            let codings: Vec<String> = te
                .iter()
                .flat_map(|v| {
                    String::from_utf8_lossy(v)
                        .split(',')
                        .map(|c| c.trim().to_ascii_lowercase())
                        .collect::<Vec<_>>()
                })
                .collect();
            match codings.as_slice() {
                [only] if only == "chunked" => Framing::Chunked,
                [.., last] if last == "chunked" => {
                    return Err(Reject::NotImplemented(
                        "transfer codings other than chunked",
                    ));
                }
                _ => {
                    return Err(Reject::BadRequest(
                        "Transfer-Encoding without a final chunked",
                    ));
                }
            }
        }
        (true, 0) => Framing::None,
        (true, 1) => {
            let text = std::str::from_utf8(cl[0])
                .map_err(|_| Reject::BadRequest("bad Content-Length"))?
                .trim();
            if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Reject::BadRequest("bad Content-Length"));
            }
            match text.parse::<u64>() {
                Ok(0) => Framing::None,
                Ok(n) => Framing::Length(n),
                Err(_) => return Err(Reject::BadRequest("bad Content-Length")),
            }
        }
        (true, _) => return Err(Reject::BadRequest("more than one Content-Length")),
    };
    let has = |name, token| has_token(pairs(&headers), name, token);
    let close =
        has("connection", "close") || (minor_version == 0 && !has("connection", "keep-alive"));
    let upgrade = has("connection", "upgrade") && values("upgrade").next().is_some();
    let expect_continue = has("expect", "100-continue");
    Ok(Some(RequestHead {
        method,
        target,
        minor_version,
        headers,
        authority,
        path,
        framing,
        expect_continue,
        close,
        upgrade,
        head_len,
    }))
}

/// Header fields that apply to one connection only (RFC 9110 §7.6.1). `Transfer-Encoding` is
/// not among them: bodies are relayed with their framing unchanged, so it stays true.
const HOP_BY_HOP: [&str; 5] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "upgrade",
];

/// The hop-by-hop fields of one message: the fixed ones, plus every field its `Connection`
/// header names. Nothing is allocated unless `Connection` names fields.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HopByHop {
    named: Vec<String>,
}

impl HopByHop {
    /// The hop-by-hop fields of a message with `headers`. A `Connection` header never removes
    /// the fields that frame or route a message (`Transfer-Encoding`, `Content-Length`,
    /// `Host`).
    pub fn of(headers: &[(String, Vec<u8>)]) -> Self {
        Self::of_fields(pairs(headers))
    }

    /// [`HopByHop::of`] a message whose fields are given one by one.
    pub fn of_fields<'h>(headers: impl Iterator<Item = (&'h str, &'h [u8])>) -> Self {
        let mut hop = Self::default();
        for (_, value) in headers.filter(|(n, _)| n.eq_ignore_ascii_case("connection")) {
            hop.add_connection(value);
        }
        hop
    }

    /// Add the fields one `Connection` field's `value` names.
    pub fn add_connection(&mut self, value: &[u8]) {
        for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            // Only a token naming another field allocates.
            if !token.is_empty() && !is_fixed_hop_by_hop(token) && !frames_or_routes(token) {
                self.named
                    .push(String::from_utf8_lossy(token).to_ascii_lowercase());
            }
        }
    }

    /// Whether `name` is removed before forwarding. Asked of every field of every message.
    pub fn contains(&self, name: &str) -> bool {
        is_fixed_hop_by_hop(name.as_bytes())
            || self.named.iter().any(|h| h.eq_ignore_ascii_case(name))
    }
}

/// Whether `name` is one of [`HOP_BY_HOP`], ASCII case aside, told apart by length first.
fn is_fixed_hop_by_hop(name: &[u8]) -> bool {
    let is = |i: usize| name.eq_ignore_ascii_case(HOP_BY_HOP[i].as_bytes());
    match name.len() {
        2 => is(3),
        7 => is(4),
        10 => is(0) || is(1),
        16 => is(2),
        _ => false,
    }
}

/// Whether `name` is a field that frames or routes a message, which a `Connection` header
/// never removes.
fn frames_or_routes(name: &[u8]) -> bool {
    match name.len() {
        4 => name.eq_ignore_ascii_case(b"host"),
        14 => name.eq_ignore_ascii_case(b"content-length"),
        17 => name.eq_ignore_ascii_case(b"transfer-encoding"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> RequestHead {
        parse(raw.as_bytes()).expect("valid").expect("complete")
    }

    fn rejected(raw: &str) -> u16 {
        parse(raw.as_bytes()).expect_err("refused").status()
    }

    #[test]
    fn fixed_hop_by_hop_names_in_any_case_and_nothing_else() {
        let none = HopByHop::default();
        for name in HOP_BY_HOP {
            assert!(none.contains(name), "{name}");
            assert!(none.contains(&name.to_ascii_uppercase()), "{name}");
        }
        // Same lengths as the fixed names, and fields a proxy must keep.
        for name in [
            "tx",
            "upgrad",
            "upgradee",
            "connectiox",
            "keep-alivf",
            "proxy-connectiom",
        ] {
            assert!(!none.contains(name), "{name}");
        }
        for name in [
            "host",
            "content-length",
            "transfer-encoding",
            "x-upgrade",
            "",
        ] {
            assert!(!none.contains(name), "{name}");
        }
    }

    #[test]
    fn origin_absolute_and_authority_forms() {
        let h = ok("GET /a?b=1 HTTP/1.1\r\nHost: API.example.com:8080\r\n\r\n");
        assert_eq!(
            (h.authority.as_str(), h.path.as_str(), h.framing),
            ("API.example.com:8080", "/a?b=1", Framing::None)
        );
        let h = ok("GET http://other.example.com/x HTTP/1.1\r\nHost: api.example.com\r\n\r\n");
        assert_eq!(
            (h.authority.as_str(), h.path.as_str()),
            ("other.example.com", "/x"),
            "absolute-form wins over Host"
        );
        let h = ok("GET http://a.com HTTP/1.1\r\nHost: a.com\r\n\r\n");
        assert_eq!(h.path, "/");
        let h = ok("CONNECT db.example.com:5432 HTTP/1.1\r\nHost: db.example.com:5432\r\n\r\n");
        assert_eq!(h.authority, "db.example.com:5432");
        let h = ok("GET / HTTP/1.0\r\nHost: a.com\r\n\r\n");
        assert!(
            h.close && h.minor_version == 0,
            "HTTP/1.0 with Host is routed (Decisions 3)"
        );
        assert_eq!(parse(b"GET / HTTP/1.1\r\nHost: a"), Ok(None));
    }

    #[test]
    fn host_rules() {
        assert_eq!(rejected("GET / HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(
            rejected("GET / HTTP/1.0\r\n\r\n"),
            400,
            "HTTP/1.0 without Host"
        );
        assert_eq!(
            rejected("GET / HTTP/1.1\r\nHost: a.com\r\nHost: b.com\r\n\r\n"),
            400
        );
        assert_eq!(
            rejected("GET / HTTP/1.1\r\nHost: user@evil.com\r\n\r\n"),
            400
        );
        assert_eq!(
            rejected("GET http://user@a.com/ HTTP/1.1\r\nHost: a.com\r\n\r\n"),
            400
        );
        assert_eq!(rejected("GET a.com/x HTTP/1.1\r\nHost: a.com\r\n\r\n"), 400);
    }

    #[test]
    fn smuggling_attempts_are_refused() {
        let cases = [
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
                400,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                501,
            ),
            (
                "POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
                400,
            ),
            ("GET / HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n", 400),
        ];
        for (raw, status) in cases {
            assert_eq!(rejected(raw), status, "{raw:?}");
        }
        assert_eq!(
            ok("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n").framing,
            Framing::Chunked
        );
        assert_eq!(
            ok("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n").framing,
            Framing::Length(12)
        );
    }

    #[test]
    fn limits() {
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("x-{i}: v\r\n"))
            .collect();
        assert_eq!(
            rejected(&format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n")),
            431
        );
        let big = format!("GET / HTTP/1.1\r\nHost: a\r\nx: {}", "a".repeat(MAX_HEAD));
        assert_eq!(
            parse(big.as_bytes()).unwrap_err(),
            Reject::TooLarge,
            "over the cap without an end"
        );
    }

    #[test]
    fn connection_semantics() {
        let h = ok(
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Custom\r\nX-Custom: 1\r\nExpect: 100-continue\r\n\r\n",
        );
        assert!(!h.close && h.expect_continue && !h.upgrade);
        let hop = HopByHop::of(&h.headers);
        assert!(hop.contains("X-Custom") && hop.contains("keep-alive") && !hop.contains("host"));
        // Empty tokens, tabs and the framing fields a `Connection` header may not remove.
        let h = ok(
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: ,\tX-A ,Host, content-length,close\r\n\r\n",
        );
        let hop = HopByHop::of(&h.headers);
        assert!(hop.contains("x-a") && hop.contains("Connection"));
        assert!(!hop.contains("host") && !hop.contains("Content-Length") && !hop.contains(""));
        let h =
            ok("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
        assert!(h.upgrade);
        assert!(ok("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").close);
        assert!(!ok("GET / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n").close);
    }
}
