//! HTTP/1.1 routing pieces, pure and sans-io: the request head with its limits and framing
//! rules ([`head`]), chunked body framing ([`chunked`]), and VirtualService rule matching
//! ([`matching`]). The connection loop that drives them (keep-alive, pools, retries, timeouts)
//! builds on these.

pub mod chunked;
pub mod head;
pub mod matching;
