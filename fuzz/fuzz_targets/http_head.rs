//! Request heads and request-line detection on arbitrary bytes: never panic; a parsed head never
//! claims more bytes than it was given and never carries an ambiguous framing.
#![no_main]

use dataplane::detect::http::detect;
use dataplane::http::head::{Framing, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = detect(data);
    if let Ok(Some(head)) = parse(data) {
        assert!(head.head_len <= data.len());
        assert!(!head.authority.is_empty());
        let te = head
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"));
        let cl = head
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .count();
        assert!(!(te && cl > 0), "both framings accepted");
        assert!(cl <= 1, "two Content-Lengths accepted");
        if head.framing == Framing::Chunked {
            assert!(te);
        }
    }
});
