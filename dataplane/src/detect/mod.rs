//! Protocol detection on a connection's first bytes, as pure functions: TLS ClientHello (SNI,
//! ALPN) and the HTTP/1.x request line. Each answers found / not this protocol / need more
//! bytes; the caller bounds the bytes and the time (Decisions 9).

pub mod http;
pub mod tls;
