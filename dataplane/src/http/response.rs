//! Response heads from an upstream: parsed with httparse within limits, and reduced to what
//! relaying needs: status, how the body is delimited (RFC 9112 §6.3), and whether the upstream
//! connection can carry another request.

use super::head::{MAX_HEAD, MAX_HEADERS, tokens, values};

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body (HEAD, 1xx, 204, 304, or `Content-Length: 0`).
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the upstream closes.
    UntilClose,
}

/// A parsed response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// Status code.
    pub status: u16,
    /// Reason phrase.
    pub reason: String,
    /// Header fields in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Body delimitation.
    pub framing: BodyFraming,
    /// The upstream will close after this response (or it is delimited by close).
    pub close: bool,
    /// Bytes of head.
    pub head_len: usize,
}

/// Why a response head is unusable (the proxy answers 502).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invalid(pub &'static str);

/// Parse a response head to a request with `method`. `Ok(None)`: incomplete.
pub fn parse(buf: &[u8], method: &str) -> Result<Option<ResponseHead>, Invalid> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut fields);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            return Err(Invalid("response head too large"));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Invalid("too many response headers")),
        Err(_) => return Err(Invalid("malformed response head")),
    };
    let status = resp.code.unwrap_or(0);
    let minor = resp.version.unwrap_or(1);
    let reason = resp.reason.unwrap_or_default().to_owned();
    let headers: Vec<(String, Vec<u8>)> = resp
        .headers
        .iter()
        .map(|h| (h.name.to_owned(), h.value.to_vec()))
        .collect();
    let connection = tokens(&headers, "connection");
    let te = tokens(&headers, "transfer-encoding");
    let cl: Vec<&[u8]> = values(&headers, "content-length").collect();
    let no_body = method == "HEAD"
        || (100..200).contains(&status)
        || status == 204
        || status == 304
        || (method == "CONNECT" && (200..300).contains(&status));
    let framing = if no_body {
        BodyFraming::None
    } else if !te.is_empty() {
        if !cl.is_empty() {
            return Err(Invalid(
                "response with both Transfer-Encoding and Content-Length",
            ));
        }
        if te.last().map(String::as_str) == Some("chunked") {
            BodyFraming::Chunked
        } else {
            BodyFraming::UntilClose
        }
    } else if cl.is_empty() {
        BodyFraming::UntilClose
    } else {
        let first = cl[0];
        if cl.iter().any(|v| *v != first) {
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
    };
    let close = connection.iter().any(|t| t == "close")
        || (minor == 0 && !connection.iter().any(|t| t == "keep-alive"))
        || framing == BodyFraming::UntilClose;
    Ok(Some(ResponseHead {
        status,
        reason,
        headers,
        framing,
        close,
        head_len,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

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
