//! Response heads from an upstream: parsed with httparse within limits, and reduced to what
//! relaying needs: status, how the body is delimited (RFC 9112 §6.3), and whether the upstream
//! connection can carry another request.

use super::head::{HopByHop, MAX_HEAD, MAX_HEADERS, tokens};

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body (HEAD, 1xx, 204, 304, or `Content-Length: 0`).
    #[default]
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the upstream closes.
    UntilClose,
}

/// A parsed response head. Its reason phrase and fields are read from one copy of the head's
/// bytes and one of its field names; parsed into again ([`ResponseHead::parse_into`]), it
/// reuses both, so the responses on one upstream connection allocate nothing for their heads
/// once these have grown to fit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseHead {
    /// Status code.
    pub status: u16,
    /// Body delimitation.
    pub framing: BodyFraming,
    /// The upstream will close after this response (or it is delimited by close).
    pub close: bool,
    /// Bytes of head.
    pub head_len: usize,
    /// The head as received (status line and fields).
    text: Vec<u8>,
    /// The field names, one after the other (each was a `&str`, so this is one too).
    names: String,
    /// The reason phrase in `text`.
    reason: Span,
    /// Each field's name (in `names`) and value (in `text`), in order.
    fields: Vec<(Span, Span)>,
    /// The fields that go no further than this hop (found while parsing).
    hop: HopByHop,
}

/// A byte range of `ResponseHead::text` (or, for a field name, of `names`).
type Span = (u32, u32);

impl ResponseHead {
    /// The reason phrase.
    pub fn reason(&self) -> &str {
        std::str::from_utf8(self.span(self.reason)).unwrap_or_default()
    }

    /// The fields not to relay: the fixed hop-by-hop ones and those `Connection` names.
    pub fn hop_by_hop(&self) -> &HopByHop {
        &self.hop
    }

    /// Header fields in order. Names are tokens (httparse checked them), so ASCII.
    pub fn headers(&self) -> impl ExactSizeIterator<Item = (&str, &[u8])> {
        self.fields.iter().map(|&(name, value)| {
            let name = self.names.get(name.0 as usize..name.1 as usize);
            (name.unwrap_or_default(), self.span(value))
        })
    }

    fn span(&self, (start, end): Span) -> &[u8] {
        &self.text[start as usize..end as usize]
    }
}

/// Why a response head is unusable (the proxy answers 502).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invalid(pub &'static str);

/// Parse a response head to a request with `method` into a new [`ResponseHead`]. `Ok(None)`:
/// incomplete.
pub fn parse(buf: &[u8], method: &str) -> Result<Option<ResponseHead>, Invalid> {
    let mut head = ResponseHead::default();
    Ok(head.parse_into(buf, method)?.then_some(head))
}

impl ResponseHead {
    /// Parse the response head at the start of `buf`, to a request with `method`, into `self`,
    /// reusing its storage. `Ok(false)`: incomplete (`self` is then unchanged). After an error
    /// `self` holds parts of the refused head: its accessors read something, never out of
    /// bounds.
    pub fn parse_into(&mut self, buf: &[u8], method: &str) -> Result<bool, Invalid> {
        // Left uninitialised, as for requests ([`super::head::RequestHead::parse_into`]).
        let mut fields = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut []);
        let head_len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut resp,
            buf,
            &mut fields,
        ) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
                return Err(Invalid("response head too large"));
            }
            Ok(httparse::Status::Partial) => return Ok(false),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(Invalid("too many response headers"));
            }
            Err(_) => return Err(Invalid("malformed response head")),
        };
        let status = resp.code.unwrap_or(0);
        let minor = resp.version.unwrap_or(1);
        // Where a slice httparse returned lies in `buf` (every one of them lies inside it).
        let span = |part: &[u8]| -> Span {
            let start = (part.as_ptr() as usize).saturating_sub(buf.as_ptr() as usize);
            (start as u32, (start + part.len()) as u32)
        };
        let reason = resp.reason.map_or((0, 0), |r| span(r.as_bytes()));
        self.text.clear();
        self.text.extend_from_slice(&buf[..head_len]);
        // With the text it points into: after an error below, no span left from the last head
        // may outlive it.
        self.reason = reason;
        self.names.clear();
        self.fields.clear();
        let names = &mut self.names;
        let spans = &mut self.fields;
        // One pass over the fields records each one and everything framing and reuse depend on:
        // the last transfer coding (`None`: no Transfer-Encoding field at all), the first
        // Content-Length and whether another differs from it, the Connection tokens, and the fields
        // they make hop-by-hop.
        let mut last_coding: Option<&[u8]> = None;
        let mut cl: Option<&[u8]> = None;
        let mut cl_conflict = false;
        let (mut conn_close, mut conn_keep_alive) = (false, false);
        let mut hop = HopByHop::default();
        for h in resp.headers.iter() {
            let start = names.len() as u32;
            names.push_str(h.name);
            spans.push(((start, names.len() as u32), span(h.value)));
            match h.name.len() {
                17 if h.name.eq_ignore_ascii_case("transfer-encoding") => {
                    last_coding = tokens(h.value).next_back();
                }
                14 if h.name.eq_ignore_ascii_case("content-length") => match cl {
                    None => cl = Some(h.value),
                    Some(first) => cl_conflict |= first != h.value,
                },
                10 if h.name.eq_ignore_ascii_case("connection") => {
                    for t in tokens(h.value) {
                        conn_close |= t.eq_ignore_ascii_case(b"close");
                        conn_keep_alive |= t.eq_ignore_ascii_case(b"keep-alive");
                    }
                    hop.add_connection(h.value);
                }
                _ => {}
            }
        }
        let te = last_coding.is_some();
        let no_body = method == "HEAD"
            || (100..200).contains(&status)
            || status == 204
            || status == 304
            || (method == "CONNECT" && (200..300).contains(&status));
        let framing = if no_body {
            BodyFraming::None
        } else if te {
            if cl.is_some() {
                return Err(Invalid(
                    "response with both Transfer-Encoding and Content-Length",
                ));
            }
            if last_coding.is_some_and(|t| t.eq_ignore_ascii_case(b"chunked")) {
                BodyFraming::Chunked
            } else {
                BodyFraming::UntilClose
            }
        } else if let Some(first) = cl {
            if cl_conflict {
                return Err(Invalid("conflicting Content-Length in the response"));
            }
            let text = std::str::from_utf8(first)
                .map_err(|_| Invalid("bad Content-Length in the response"))?
                .trim();
            if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Invalid("bad Content-Length in the response"));
            }
            match text.parse::<u64>() {
                Ok(0) => BodyFraming::None,
                Ok(n) => BodyFraming::Length(n),
                Err(_) => return Err(Invalid("bad Content-Length in the response")),
            }
        } else {
            BodyFraming::UntilClose
        };
        let close =
            conn_close || (minor == 0 && !conn_keep_alive) || framing == BodyFraming::UntilClose;
        self.status = status;
        self.framing = framing;
        self.close = close;
        self.head_len = head_len;
        self.hop = hop;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_head_parsed_into_a_used_one_reads_back_within_its_bytes() {
        let mut head = ok(
            "HTTP/1.1 503 A Reason Phrase That Runs Well Past The End Of The Next, Shorter Head\r\nServer: x\r\nContent-Length: 0\r\n\r\n",
            "GET",
        );
        let refused = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
        assert!(head.parse_into(refused.as_bytes(), "GET").is_err());
        // Whatever it holds now lies in the refused head's bytes (this read panicked when the
        // last head's reason span outlived its text).
        assert!(refused.contains(head.reason()));
        for (name, value) in head.headers() {
            assert!(refused.contains(name), "{name}");
            assert!(refused.as_bytes().windows(value.len()).any(|w| w == value));
        }
    }

    fn ok(raw: &str, method: &str) -> ResponseHead {
        parse(raw.as_bytes(), method)
            .expect("valid")
            .expect("complete")
    }

    #[test]
    fn framing_table() {
        let cases: &[(&str, &str, BodyFraming, bool)] = &[
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                "GET",
                BodyFraming::Length(5),
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n",
                "GET",
                BodyFraming::Length(5),
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                "HEAD",
                BodyFraming::None,
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                "GET",
                BodyFraming::None,
                false,
            ),
            (
                "HTTP/1.1 204 No Content\r\n\r\n",
                "GET",
                BodyFraming::None,
                false,
            ),
            (
                "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
                "GET",
                BodyFraming::None,
                false,
            ),
            (
                "HTTP/1.1 100 Continue\r\n\r\n",
                "POST",
                BodyFraming::None,
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                "GET",
                BodyFraming::Chunked,
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                "GET",
                BodyFraming::Chunked,
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
                "GET",
                BodyFraming::UntilClose,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\n\r\n",
                "GET",
                BodyFraming::UntilClose,
                true,
            ),
            (
                "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n",
                "GET",
                BodyFraming::Length(1),
                true,
            ),
            (
                "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n",
                "GET",
                BodyFraming::Length(1),
                true,
            ),
            (
                "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n",
                "GET",
                BodyFraming::Length(1),
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
                "GET",
                BodyFraming::Length(3),
                false,
            ),
        ];
        for (raw, method, framing, close) in cases {
            let h = ok(raw, method);
            assert_eq!(
                (h.framing, h.close),
                (*framing, *close),
                "{raw:?} to {method}"
            );
        }
    }

    #[test]
    fn fields_and_reason_are_read_back_as_received() {
        let raw = "HTTP/1.1 404 Not Found Here\r\nServer: nginx\r\nX-Empty:\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\nContent-Length: 0\r\n\r\nbody";
        let h = ok(raw, "GET");
        assert_eq!(h.reason(), "Not Found Here");
        let fields: Vec<(&str, &[u8])> = h.headers().collect();
        let want: [(&str, &[u8]); 5] = [
            ("Server", b"nginx"),
            ("X-Empty", b""),
            ("Set-Cookie", b"a=1"),
            ("set-cookie", b"b=2"),
            ("Content-Length", b"0"),
        ];
        assert_eq!(fields, want);
        assert_eq!(h.head_len, raw.len() - "body".len());
        assert_eq!(
            ok("HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", "GET").reason(),
            ""
        );
    }

    #[test]
    fn hop_by_hop_fields_are_found_while_parsing() {
        let cases: [(&str, &[&str], &[&str]); 5] = [
            ("", &[], &["x-private"]),
            ("Connection: keep-alive", &["keep-alive"], &["x-private"]),
            (
                "Connection: Keep-Alive, X-Private\r\nX-Private: 1",
                &["x-private", "X-PRIVATE"],
                &["x-other"],
            ),
            (
                "connection: x-a\r\nX-B: 2\r\nCONNECTION: x-b, content-length, , host",
                &["x-a", "x-b"],
                &["content-length", "host", "x-c"],
            ),
            ("X-Connection: x-c", &[], &["x-c"]),
        ];
        for (fields, hop, kept) in cases {
            let raw = format!("HTTP/1.1 200 OK\r\n{fields}\r\nContent-Length: 0\r\n\r\n");
            let h = ok(&raw, "GET");
            for name in hop {
                assert!(h.hop_by_hop().contains(name), "{name} in {raw:?}");
            }
            for name in kept {
                assert!(!h.hop_by_hop().contains(name), "{name} in {raw:?}");
            }
            // The same as the general rule over the parsed fields.
            assert_eq!(h.hop_by_hop(), &HopByHop::of_fields(h.headers()), "{raw:?}");
        }
    }

    #[test]
    fn connection_tokens_decide_reuse() {
        let cases = [
            ("HTTP/1.1", "Connection: Keep-Alive, CLOSE", true),
            ("HTTP/1.1", "Connection: upgrade,close ", true),
            ("HTTP/1.1", "Connection: closed", false),
            ("HTTP/1.1", "X-Connection: close", false),
            ("HTTP/1.0", "Connection: foo, keep-alive", false),
            ("HTTP/1.0", "Connection: foo", true),
        ];
        for (version, field, close) in cases {
            let raw = format!("{version} 200 OK\r\n{field}\r\nContent-Length: 1\r\n\r\n");
            assert_eq!(ok(&raw, "GET").close, close, "{raw:?}");
        }
    }

    #[test]
    fn ambiguous_or_malformed_heads_are_refused() {
        for raw in [
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            "HTTX/1.1 200 OK\r\n\r\n",
        ] {
            assert!(parse(raw.as_bytes(), "GET").is_err(), "{raw:?}");
        }
        assert_eq!(parse(b"HTTP/1.1 200 OK\r\nA: b", "GET"), Ok(None));
    }
}
