//! DNS answers on arbitrary bytes (the id taken from the bytes so answers can match): never
//! panics; addresses and TTLs stay within their bounds.
#![no_main]

use dataplane::dns::message::{Answer, MAX_ADDRESSES, MAX_TTL, MIN_TTL, answer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let id = data
        .get(..2)
        .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
    if let Ok(Answer::Addresses { addrs, ttl }) = answer(data, id, "a.example.com") {
        assert!(!addrs.is_empty() && addrs.len() <= MAX_ADDRESSES);
        assert!((MIN_TTL..=MAX_TTL).contains(&ttl));
    }
});
