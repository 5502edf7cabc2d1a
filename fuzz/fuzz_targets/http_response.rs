//! Response heads from an upstream, and the head the proxy renders from them, on arbitrary
//! bytes: never panic; a parsed head never claims more bytes than it was given, never carries
//! both framings, reads back the fields and reason httparse finds, and the relayed head parses
//! back to the same status and framing; the hop-by-hop fields found while parsing are the
//! ones the general rule finds in the parsed fields.
#![no_main]

use dataplane::http::render;
use dataplane::http::response::{BodyFraming, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let method = if data.first().is_some_and(|b| b & 1 == 1) {
        "HEAD"
    } else {
        "GET"
    };
    if let Ok(Some(head)) = parse(data, method) {
        assert!(head.head_len <= data.len());
        // The fields and reason read back are the ones httparse finds in the bytes.
        let mut fields = [httparse::EMPTY_HEADER; dataplane::http::head::MAX_HEADERS];
        let mut direct = httparse::Response::new(&mut fields);
        if let Ok(httparse::Status::Complete(_)) = direct.parse(data) {
            assert_eq!(head.reason(), direct.reason.unwrap_or_default());
            let want: Vec<(&str, &[u8])> =
                direct.headers.iter().map(|h| (h.name, h.value)).collect();
            assert_eq!(head.headers().collect::<Vec<_>>(), want);
        }
        let te = head
            .headers()
            .any(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"));
        let cl = head
            .headers()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-length"));
        if head.framing != BodyFraming::None && method == "GET" && (100..200).contains(&head.status)
        {
            panic!("an interim response with a body");
        }
        assert!(
            !(te && cl && head.framing != BodyFraming::None),
            "both framings"
        );
        // The hop-by-hop fields found in the parsing pass are the general rule's.
        assert_eq!(
            head.hop_by_hop(),
            &dataplane::http::head::HopByHop::of_fields(head.headers())
        );
        let relayed = render::response(&head, &[], 1, head.close, 0, Vec::new());
        if let Ok(Some(again)) = parse(&relayed, method) {
            assert_eq!(again.status, head.status);
            assert_eq!(again.framing, head.framing);
        }
    }
});
