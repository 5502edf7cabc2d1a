//! Writing heads: the request sent upstream (origin-form target, Host, hop-by-hop fields
//! removed, VirtualService header operations, the headers Envoy adds on an outbound route),
//! the response relayed to the client (`x-envoy-upstream-service-time`, Decisions 4) and the
//! replies the proxy makes itself (`server: dataplane`). Pure.

use std::io::Write;

use dataplane_config::spec::HeaderOps;

use super::head::{Framing, HopByHop, RequestHead};
use super::plan::LocalReply;
use super::response::ResponseHead;

/// What the upstream request is made of besides the client's head.
#[derive(Debug, Clone, Copy)]
pub struct Outbound<'a> {
    /// Path and query to send.
    pub path: &'a str,
    /// Host to send.
    pub authority: &'a str,
    /// Header operations in order.
    pub ops: &'a [&'a HeaderOps],
    /// Attempt number (1 for the first try).
    pub attempt: u32,
    /// `x-request-id` to add when the client sent none.
    pub request_id: &'a str,
    /// Room to leave for body bytes sent with the head.
    pub body_room: usize,
}

/// The fields of a head being written, each borrowed from the head it came from, the route's
/// header operations, or a constant: a request or response costs no copy of its fields. Inline
/// up to 16, so the usual head allocates nothing for them.
type Fields<'a> = smallvec::SmallVec<[(&'a str, &'a [u8]); 16]>;

/// Apply header operations in order: remove, then set, then add (as Envoy evaluates them).
fn apply<'a>(fields: &mut Fields<'a>, ops: &[&'a HeaderOps]) {
    for op in ops {
        fields.retain(|(n, _)| !op.remove.iter().any(|r| r.eq_ignore_ascii_case(n)));
        for (name, value) in &op.set {
            let name = if name == ":authority" { "host" } else { name };
            set(fields, name, value.as_bytes());
        }
        for (name, value) in &op.add {
            fields.push((name, value.as_bytes()));
        }
    }
}

fn set<'a>(fields: &mut Fields<'a>, name: &'a str, value: &'a [u8]) {
    fields.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    fields.push((name, value));
}

fn write_fields(out: &mut Vec<u8>, fields: &Fields<'_>) {
    for (n, v) in fields {
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The request head to send upstream, written into `buf` (cleared first, its capacity reused).
pub fn request<'a>(head: &'a RequestHead, out: &Outbound<'a>, mut buf: Vec<u8>) -> Vec<u8> {
    let hop = HopByHop::of(head);
    let mut attempt = itoa::Buffer::new();
    let attempt = attempt.format(out.attempt);
    let mut fields: Fields<'_> = Fields::with_capacity(head.headers().len() + 6);
    fields.push(("host", out.authority.as_bytes()));
    for (n, v) in head.headers() {
        // Host is replaced; hop-by-hop fields go; `Expect: 100-continue` was answered here.
        if n.eq_ignore_ascii_case("host") || n.eq_ignore_ascii_case("expect") || hop.contains(n) {
            continue;
        }
        fields.push((n, v));
    }
    apply(&mut fields, out.ops);
    set(&mut fields, "x-forwarded-proto", b"http");
    if !fields
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("x-request-id"))
    {
        fields.push(("x-request-id", out.request_id.as_bytes()));
    }
    set(&mut fields, "x-envoy-attempt-count", attempt.as_bytes());
    if head.upgrade {
        for v in head.values("upgrade") {
            fields.push(("upgrade", v));
        }
        fields.push(("connection", b"upgrade"));
    }
    if head.framing == Framing::Chunked
        && !fields
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"))
    {
        fields.push(("transfer-encoding", b"chunked"));
    }
    buf.clear();
    buf.reserve(256 + head.head_len + out.body_room);
    buf.extend_from_slice(head.method().as_bytes());
    buf.push(b' ');
    buf.extend_from_slice(out.path.as_bytes());
    buf.extend_from_slice(b" HTTP/1.1\r\n");
    write_fields(&mut buf, &fields);
    buf
}

/// The response head to relay to the client, written into `buf` (cleared first, its capacity
/// reused).
pub fn response(
    resp: &ResponseHead,
    ops: &[&HeaderOps],
    service_time_ms: u128,
    close: bool,
    body_room: usize,
    mut buf: Vec<u8>,
) -> Vec<u8> {
    let hop = resp.hop_by_hop();
    let switching = resp.status == 101;
    let mut service_time = itoa::Buffer::new();
    let service_time = service_time.format(service_time_ms);
    let mut fields: Fields<'_> = Fields::with_capacity(resp.headers().len() + 2);
    for (n, v) in resp.headers() {
        if !hop.contains(n) || (switching && n.eq_ignore_ascii_case("upgrade")) {
            fields.push((n, v));
        }
    }
    apply(&mut fields, ops);
    fields.push(("x-envoy-upstream-service-time", service_time.as_bytes()));
    if switching {
        fields.push(("connection", b"upgrade"));
    } else if close {
        fields.push(("connection", b"close"));
    }
    let mut status = itoa::Buffer::new();
    // The fields as received and the service time, give or take hop-by-hop ones.
    buf.clear();
    buf.reserve(resp.head_len + 64 + body_room);
    buf.extend_from_slice(b"HTTP/1.1 ");
    buf.extend_from_slice(status.format(resp.status).as_bytes());
    buf.push(b' ');
    buf.extend_from_slice(resp.reason().as_bytes());
    buf.extend_from_slice(b"\r\n");
    write_fields(&mut buf, &fields);
    buf
}

/// The standard reason phrase of the statuses the proxy answers with.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        418 => "I'm a teapot",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

/// A reply the proxy makes itself, with its body.
pub fn local(reply: &LocalReply, close: bool) -> Vec<u8> {
    let mut buf = Vec::with_capacity(160 + reply.body.len());
    let _ = write!(
        buf,
        "HTTP/1.1 {} {}\r\nserver: dataplane\r\ncontent-length: {}\r\n",
        reply.status,
        reason_phrase(reply.status),
        reply.body.len()
    );
    if !reply.body.is_empty()
        && !reply
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
    {
        buf.extend_from_slice(b"content-type: text/plain\r\n");
    }
    for (n, v) in &reply.headers {
        let _ = write!(buf, "{n}: {v}\r\n");
    }
    if close {
        buf.extend_from_slice(b"connection: close\r\n");
    }
    buf.extend_from_slice(b"\r\n");
    buf.extend_from_slice(&reply.body);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::parse;

    fn text(b: &[u8]) -> String {
        String::from_utf8_lossy(b).into_owned()
    }

    #[test]
    fn upstream_request_head() {
        let raw = "POST http://a.com/x?y=1 HTTP/1.1\r\nHost: a.com\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: 5\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\nX-Drop: 1\r\nX-Keep: 2\r\n\r\n";
        let head = parse(raw.as_bytes()).unwrap().unwrap();
        let ops = HeaderOps {
            set: vec![("x-keep".into(), "3".into())],
            add: vec![("x-added".into(), "4".into())],
            remove: vec!["X-Drop".into()],
        };
        let out = request(
            &head,
            &Outbound {
                path: head.path(),
                authority: "b.com",
                ops: &[&ops],
                attempt: 2,
                request_id: "id-1",
                body_room: 0,
            },
            Vec::new(),
        );
        assert_eq!(
            text(&out),
            "POST /x?y=1 HTTP/1.1\r\nhost: b.com\r\nTransfer-Encoding: chunked\r\nx-keep: 3\r\nx-added: 4\r\nx-forwarded-proto: http\r\nx-request-id: id-1\r\nx-envoy-attempt-count: 2\r\n\r\n"
        );
    }

    #[test]
    fn connection_cannot_strip_framing_or_host() {
        let raw = "POST / HTTP/1.1\r\nHost: a.com\r\nConnection: content-length, host\r\nContent-Length: 3\r\n\r\n";
        let head = parse(raw.as_bytes()).unwrap().unwrap();
        let out = text(&request(
            &head,
            &Outbound {
                path: "/",
                authority: "a.com",
                ops: &[],
                attempt: 1,
                request_id: "r",
                body_room: 0,
            },
            Vec::new(),
        ));
        assert!(out.contains("Content-Length: 3\r\n"), "{out}");
        assert!(out.contains("host: a.com\r\n"), "{out}");
    }

    #[test]
    fn websocket_upgrade_keeps_its_fields() {
        let raw = "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n";
        let head = parse(raw.as_bytes()).unwrap().unwrap();
        let out = text(&request(
            &head,
            &Outbound {
                path: "/ws",
                authority: "a",
                ops: &[],
                attempt: 1,
                request_id: "r",
                body_room: 0,
            },
            Vec::new(),
        ));
        assert!(
            out.contains("upgrade: websocket\r\nconnection: upgrade\r\n"),
            "{out}"
        );
        let resp = crate::http::response::parse(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            "GET",
        )
        .unwrap()
        .unwrap();
        let out = text(&response(&resp, &[], 1, false, 0, Vec::new()));
        assert_eq!(
            out,
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nx-envoy-upstream-service-time: 1\r\nconnection: upgrade\r\n\r\n"
        );
    }

    #[test]
    fn relayed_response_and_local_reply() {
        let resp = crate::http::response::parse(
            b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 2\r\nKeep-Alive: timeout=5\r\n\r\n",
            "GET",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            text(&response(&resp, &[], 7, true, 0, Vec::new())),
            "HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 2\r\nx-envoy-upstream-service-time: 7\r\nconnection: close\r\n\r\n"
        );
        let reply = LocalReply::new(503, "no healthy upstream", "UH", "x");
        assert_eq!(
            text(&local(&reply, false)),
            "HTTP/1.1 503 Service Unavailable\r\nserver: dataplane\r\ncontent-length: 19\r\ncontent-type: text/plain\r\n\r\nno healthy upstream"
        );
    }
}
