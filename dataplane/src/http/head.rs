//! Request heads: parsed with httparse within limits, checked for the framing ambiguities that
//! enable request smuggling, and reduced to what routing and forwarding need.

/// Largest request head accepted (Decisions 9).
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header fields accepted.
pub const MAX_HEADERS: usize = 100;

/// How the request body is delimited (RFC 9112 §6).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    #[default]
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
}

/// A parsed request head. Its method, target, authority, path and field names are kept in one
/// string and its field values in one buffer; parsed into again ([`RequestHead::parse_into`]),
/// it reuses them, so the requests of a keep-alive connection allocate nothing for their heads
/// once these have grown to fit (before: two allocations a field and five more a request).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestHead {
    /// HTTP/1.0 or HTTP/1.1.
    pub minor_version: u8,
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
    /// Method, target, authority, path (where not a part of the target) and field names.
    text: String,
    /// Field values, one after the other.
    values: Vec<u8>,
    method: Span,
    target: Span,
    authority: Span,
    path: Span,
    /// Each field's name (in `text`) and value (in `values`), in order.
    fields: Vec<(Span, Span)>,
}

/// A byte range of `RequestHead::text` or `RequestHead::values`.
type Span = (u32, u32);

/// Append `s` to `text`; where it went.
fn push(text: &mut String, s: &str) -> Span {
    let start = text.len() as u32;
    text.push_str(s);
    (start, text.len() as u32)
}

impl RequestHead {
    /// Method.
    pub fn method(&self) -> &str {
        self.str(self.method)
    }

    /// Request target as sent.
    pub fn target(&self) -> &str {
        self.str(self.target)
    }

    /// The authority to route by: the absolute-form target's, else Host (RFC 9112 §3.2.2).
    pub fn authority(&self) -> &str {
        self.str(self.authority)
    }

    /// Path and query (absolute-form reduced to origin-form; empty for CONNECT).
    pub fn path(&self) -> &str {
        self.str(self.path)
    }

    /// Header fields in order (names as sent).
    pub fn headers(&self) -> impl ExactSizeIterator<Item = (&str, &[u8])> + Clone {
        self.fields.iter().map(|&(name, (start, end))| {
            (
                self.str(name),
                self.values
                    .get(start as usize..end as usize)
                    .unwrap_or_default(),
            )
        })
    }

    /// The values of every header field named `name` (case-insensitive), in order.
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.headers()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    fn str(&self, (start, end): Span) -> &str {
        self.text
            .get(start as usize..end as usize)
            .unwrap_or_default()
    }

    /// Parse the head at the start of `buf` into `self`, reusing its storage. `Ok(false)`:
    /// incomplete, read more (`self` is then unchanged). After an error `self` holds parts of
    /// the refused head: its accessors read something, never out of bounds.
    pub fn parse_into(&mut self, buf: &[u8]) -> Result<bool, Reject> {
        // Left uninitialised: httparse writes the ones it returns (zeroing all 100 was a tenth
        // of the parse).
        let mut fields = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut []);
        let head_len = match req.parse_with_uninit_headers(buf, &mut fields) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => return Err(Reject::TooLarge),
            Ok(httparse::Status::Partial) => return Ok(false),
            Err(httparse::Error::TooManyHeaders) => return Err(Reject::TooLarge),
            Err(_) => return Err(Reject::BadRequest("malformed request head")),
        };
        if head_len > MAX_HEAD {
            return Err(Reject::TooLarge);
        }
        let method = req.method.unwrap_or_default();
        let target = req.path.unwrap_or_default();
        let minor_version = req.version.unwrap_or(1);
        let text = &mut self.text;
        text.clear();
        self.values.clear();
        self.fields.clear();
        self.method = push(text, method);
        self.target = push(text, target);

        // One pass records each field and what routing and framing read: Host (exactly one,
        // RFC 9112 §3.2), the transfer codings, the Content-Lengths and the Connection, Upgrade
        // and Expect tokens.
        let mut host: Option<&[u8]> = None;
        let mut hosts = 0;
        let (mut te_fields, mut te_codings, mut last_coding) = (0, 0, &b""[..]);
        let (mut cl, mut cls) = (&b""[..], 0);
        let (mut conn_close, mut conn_keep_alive, mut conn_upgrade) = (false, false, false);
        let (mut upgrade_field, mut expect_continue) = (false, false);
        for h in req.headers.iter() {
            let name = push(text, h.name);
            let start = self.values.len() as u32;
            self.values.extend_from_slice(h.value);
            self.fields.push((name, (start, self.values.len() as u32)));
            let is = |want: &str| h.name.eq_ignore_ascii_case(want);
            match h.name.len() {
                4 if is("host") => {
                    hosts += 1;
                    host = Some(h.value);
                }
                17 if is("transfer-encoding") => {
                    te_fields += 1;
                    for t in tokens(h.value) {
                        te_codings += 1;
                        last_coding = t;
                    }
                }
                14 if is("content-length") => {
                    cls += 1;
                    cl = h.value;
                }
                10 if is("connection") => {
                    for t in tokens(h.value) {
                        conn_close |= t.eq_ignore_ascii_case(b"close");
                        conn_keep_alive |= t.eq_ignore_ascii_case(b"keep-alive");
                        conn_upgrade |= t.eq_ignore_ascii_case(b"upgrade");
                    }
                }
                7 if is("upgrade") => upgrade_field = true,
                6 if is("expect") => {
                    expect_continue |=
                        tokens(h.value).any(|t| t.eq_ignore_ascii_case(b"100-continue"));
                }
                _ => {}
            }
        }
        if hosts > 1 {
            return Err(Reject::BadRequest("more than one Host header"));
        }
        let host = host.map(|h| String::from_utf8_lossy(h));
        let host = host.as_deref().map(str::trim);
        let empty = (text.len() as u32, text.len() as u32);
        (self.authority, self.path) = if method == "CONNECT" {
            (self.target, empty)
        } else if let Some(rest) = target
            .strip_prefix("http://")
            .or_else(|| target.strip_prefix("https://"))
        {
            let (auth, path) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
            // Both are parts of the target, already in `text`.
            let target_at = self.target.0;
            let at = |part: &str| {
                let start = target_at + (part.as_ptr() as usize - target.as_ptr() as usize) as u32;
                (start, start + part.len() as u32)
            };
            let path = if path.is_empty() {
                push(text, "/")
            } else if path.starts_with('?') {
                let start = text.len() as u32;
                text.push('/');
                text.push_str(path);
                (start, text.len() as u32)
            } else {
                at(path)
            };
            (at(auth), path)
        } else if target.starts_with('/') || (target == "*" && method == "OPTIONS") {
            (push(text, host.unwrap_or_default()), self.target)
        } else {
            return Err(Reject::BadRequest(
                "request target is neither origin, absolute nor authority form",
            ));
        };
        let authority = self.str(self.authority);
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
        let framing = match (te_fields > 0, cls) {
            (true, n) if n > 0 => {
                return Err(Reject::BadRequest(
                    "both Transfer-Encoding and Content-Length",
                ));
            }
            (true, _) => {
                if minor_version == 0 {
                    return Err(Reject::BadRequest(
                        "Transfer-Encoding in an HTTP/1.0 request",
                    ));
                }
                match (te_codings, last_coding.eq_ignore_ascii_case(b"chunked")) {
                    (1, true) => Framing::Chunked,
                    (_, true) => {
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
            (false, 0) => Framing::None,
            (false, 1) => {
                let text = std::str::from_utf8(cl)
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
            (false, _) => return Err(Reject::BadRequest("more than one Content-Length")),
        };
        self.minor_version = minor_version;
        self.framing = framing;
        self.close = conn_close || (minor_version == 0 && !conn_keep_alive);
        self.upgrade = conn_upgrade && upgrade_field;
        self.expect_continue = expect_continue;
        self.head_len = head_len;
        Ok(true)
    }
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

/// The comma-separated tokens of one field's value, as received but for the spaces and tabs
/// around them (RFC 9110 section 5.6.1): `keep-alive, Upgrade` gives `keep-alive`, `Upgrade`.
/// Tokens are ASCII, so they are compared as bytes: nothing is decoded or allocated.
pub fn tokens(value: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(<[u8]>::trim_ascii)
}

/// Parse a request head into a new [`RequestHead`]. `Ok(None)`: incomplete, read more.
pub fn parse(buf: &[u8]) -> Result<Option<RequestHead>, Reject> {
    let mut head = RequestHead::default();
    Ok(head.parse_into(buf)?.then_some(head))
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
    pub fn of(head: &RequestHead) -> Self {
        Self::of_fields(head.headers())
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
        for token in tokens(value) {
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
            (h.authority(), h.path(), h.framing),
            ("API.example.com:8080", "/a?b=1", Framing::None)
        );
        let h = ok("GET http://other.example.com/x HTTP/1.1\r\nHost: api.example.com\r\n\r\n");
        assert_eq!(
            (h.authority(), h.path()),
            ("other.example.com", "/x"),
            "absolute-form wins over Host"
        );
        let h = ok("GET http://a.com HTTP/1.1\r\nHost: a.com\r\n\r\n");
        assert_eq!(h.path(), "/");
        let h = ok("CONNECT db.example.com:5432 HTTP/1.1\r\nHost: db.example.com:5432\r\n\r\n");
        assert_eq!(h.authority(), "db.example.com:5432");
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
        let hop = HopByHop::of(&h);
        assert!(hop.contains("X-Custom") && hop.contains("keep-alive") && !hop.contains("host"));
        // Empty tokens, tabs and the framing fields a `Connection` header may not remove.
        let h = ok(
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: ,\tX-A ,Host, content-length,close\r\n\r\n",
        );
        let hop = HopByHop::of(&h);
        assert!(hop.contains("x-a") && hop.contains("Connection"));
        assert!(!hop.contains("host") && !hop.contains("Content-Length") && !hop.contains(""));
        let h =
            ok("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
        assert!(h.upgrade);
        assert!(ok("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").close);
        assert!(!ok("GET / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n").close);
    }
}
