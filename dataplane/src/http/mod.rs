//! The HTTP/1.1 router. Pure, sans-io pieces: the request head with its limits and framing
//! rules ([`head`]), response heads ([`response`]), chunked framing ([`chunked`]),
//! VirtualService rule matching ([`matching`]), per-request planning ([`plan`]) and head
//! rendering ([`render`]). I/O: buffered streams and body relaying ([`io`]), the per-worker
//! upstream connection pool ([`pool`]) and the connection loop ([`proxy`]).

pub mod chunked;
pub mod head;
pub mod io;
pub mod matching;
pub mod plan;
pub mod pool;
pub mod proxy;
pub mod render;
pub mod response;
