//! Response heads from an upstream, and the head the proxy renders from them, on arbitrary
//! bytes: never panic; a parsed head never claims more bytes than it was given, never carries
//! both framings, and the relayed head parses back to the same status and framing.
#![no_main]

use dataplane::http::render;
use dataplane::http::response::{BodyFraming, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let method = if data.first().is_some_and(|b| b & 1 == 1) { "HEAD" } else { "GET" };
    if let Ok(Some(head)) = parse(data, method) {
        assert!(head.head_len <= data.len());
        let te = head
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"));
        let cl = head
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-length"));
        if head.framing != BodyFraming::None && method == "GET" && (100..200).contains(&head.status) {
            panic!("an interim response with a body");
        }
        assert!(!(te && cl && head.framing != BodyFraming::None), "both framings");
        let relayed = render::response(&head, &[], 1, head.close);
        if let Ok(Some(again)) = parse(&relayed, method) {
            assert_eq!(again.status, head.status);
            assert_eq!(again.framing, head.framing);
        }
    }
});
