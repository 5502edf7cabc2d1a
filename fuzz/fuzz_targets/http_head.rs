//! Request heads and request-line detection on arbitrary bytes: never panic; a parsed head never
//! claims more bytes than it was given, never carries an ambiguous framing, reads back the
//! method, target and fields httparse finds, and parses the same into a head reused from
//! another parse.
#![no_main]

use dataplane::detect::http::detect;
use dataplane::http::head::{Framing, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = detect(data);
    if let Ok(Some(head)) = parse(data) {
        assert!(head.head_len <= data.len());
        assert!(!head.authority().is_empty());
        let te = head
            .headers()
            .any(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"));
        let cl = head
            .headers()
            .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .count();
        assert!(!(te && cl > 0), "both framings accepted");
        assert!(cl <= 1, "two Content-Lengths accepted");
        if head.framing == Framing::Chunked {
            assert!(te);
        }
        let mut fields = [httparse::EMPTY_HEADER; dataplane::http::head::MAX_HEADERS];
        let mut direct = httparse::Request::new(&mut fields);
        if let Ok(httparse::Status::Complete(_)) = direct.parse(data) {
            assert_eq!(head.method(), direct.method.unwrap_or_default());
            assert_eq!(head.target(), direct.path.unwrap_or_default());
            let want: Vec<(&str, &[u8])> =
                direct.headers.iter().map(|h| (h.name, h.value)).collect();
            assert_eq!(head.headers().collect::<Vec<_>>(), want);
        }
        // Parsed into a head that held another request, the result is the same.
        let mut reused = parse(b"POST http://x.example/?q HTTP/1.1\r\nHost: y\r\nA: b\r\nContent-Length: 3\r\n\r\n")
            .ok()
            .flatten()
            .unwrap_or_default();
        assert_eq!(reused.parse_into(data), Ok(true));
        assert_eq!(
            (reused.method(), reused.target(), reused.authority(), reused.path()),
            (head.method(), head.target(), head.authority(), head.path())
        );
        assert!(reused.headers().eq(head.headers()));
        assert_eq!(
            (reused.framing, reused.close, reused.upgrade, reused.expect_continue, reused.head_len),
            (head.framing, head.close, head.upgrade, head.expect_continue, head.head_len)
        );
    }
});
