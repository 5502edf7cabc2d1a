//! Port protocols (spec §4) and the port-name prefix convention (Decisions 1).

use std::fmt;

/// A port's protocol, as Istio parses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// `HTTP`
    Http,
    /// `HTTP2`
    Http2,
    /// `GRPC`
    Grpc,
    /// `GRPC-Web`
    GrpcWeb,
    /// `HTTP_PROXY`
    HttpProxy,
    /// `HTTPS` (TLS passthrough, routed by SNI)
    Https,
    /// `TLS`
    Tls,
    /// `TCP`
    Tcp,
    /// `Mongo` (opaque TCP)
    Mongo,
    /// `MySQL` (opaque TCP)
    Mysql,
    /// `Redis` (opaque TCP)
    Redis,
    /// `UDP`: validates, never proxied.
    Udp,
    /// Unset: detect TLS / HTTP from the first bytes, else TCP.
    Auto,
}

/// How the proxy handles a port's traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProtocolClass {
    /// Routed per request by Host.
    Http,
    /// Passed through, routed by SNI (or VIP).
    Tls,
    /// Opaque bytes, routed by destination address.
    Tcp,
    /// Detected per connection.
    Auto,
    /// Not proxied.
    Udp,
}

impl Protocol {
    /// Parse a `protocol` field (case-insensitive, spec §4.1). `None` = unsupported.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "" => Self::Auto,
            "http" => Self::Http,
            "http2" => Self::Http2,
            "grpc" => Self::Grpc,
            "grpc-web" => Self::GrpcWeb,
            "http_proxy" => Self::HttpProxy,
            "https" => Self::Https,
            "tls" => Self::Tls,
            "tcp" => Self::Tcp,
            "mongo" => Self::Mongo,
            "mysql" => Self::Mysql,
            "redis" => Self::Redis,
            "udp" => Self::Udp,
            _ => return None,
        })
    }

    /// The protocol a port name announces (`http`, `http-api`, `grpc-web-x`, ...), if any
    /// (Decisions 1; the convention the seed documents give, case-insensitive).
    pub fn from_port_name(name: &str) -> Option<Self> {
        let lower = name.to_ascii_lowercase();
        let prefixed =
            |p: &str| lower == p || lower.strip_prefix(p).is_some_and(|r| r.starts_with('-'));
        if prefixed("grpc-web") {
            return Some(Self::GrpcWeb);
        }
        const NAMED: &[(&str, Protocol)] = &[
            ("http", Protocol::Http),
            ("http2", Protocol::Http2),
            ("https", Protocol::Https),
            ("grpc", Protocol::Grpc),
            ("tls", Protocol::Tls),
            ("tcp", Protocol::Tcp),
            ("udp", Protocol::Udp),
            ("mongo", Protocol::Mongo),
            ("mysql", Protocol::Mysql),
            ("redis", Protocol::Redis),
        ];
        NAMED
            .iter()
            .find(|(p, _)| prefixed(p))
            .map(|&(_, proto)| proto)
    }

    /// How the proxy handles it.
    pub fn class(self) -> ProtocolClass {
        match self {
            Self::Http | Self::Http2 | Self::Grpc | Self::GrpcWeb | Self::HttpProxy => {
                ProtocolClass::Http
            }
            Self::Https | Self::Tls => ProtocolClass::Tls,
            Self::Tcp | Self::Mongo | Self::Mysql | Self::Redis => ProtocolClass::Tcp,
            Self::Udp => ProtocolClass::Udp,
            Self::Auto => ProtocolClass::Auto,
        }
    }

    /// Istio's `IsHTTP`.
    pub fn is_http(self) -> bool {
        self.class() == ProtocolClass::Http
    }

    /// Istio's `IsTLS`.
    pub fn is_tls(self) -> bool {
        self.class() == ProtocolClass::Tls
    }

    /// Istio's `IsTCP`: TCP, HTTPS, TLS, Mongo, Redis, MySQL.
    pub fn is_tcp(self) -> bool {
        matches!(self.class(), ProtocolClass::Tcp | ProtocolClass::Tls)
    }

    /// Istio's `IsHTTP2`: upstream speaks h2.
    pub fn is_http2(self) -> bool {
        matches!(self, Self::Http2 | Self::Grpc | Self::GrpcWeb)
    }

    /// Istio's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "HTTP",
            Self::Http2 => "HTTP2",
            Self::Grpc => "GRPC",
            Self::GrpcWeb => "GRPC-Web",
            Self::HttpProxy => "HTTP_PROXY",
            Self::Https => "HTTPS",
            Self::Tls => "TLS",
            Self::Tcp => "TCP",
            Self::Mongo => "Mongo",
            Self::Mysql => "MySQL",
            Self::Redis => "Redis",
            Self::Udp => "UDP",
            Self::Auto => "auto",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ProtocolClass {
    /// Lower-case name for tables and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Tls => "tls",
            Self::Tcp => "tcp",
            Self::Auto => "auto",
            Self::Udp => "udp",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        let cases: &[(&str, Option<Protocol>)] = &[
            ("", Some(Protocol::Auto)),
            ("HTTP", Some(Protocol::Http)),
            ("http", Some(Protocol::Http)),
            ("Https", Some(Protocol::Https)),
            ("grpc-web", Some(Protocol::GrpcWeb)),
            ("TCP", Some(Protocol::Tcp)),
            ("MySQL", Some(Protocol::Mysql)),
            ("udp", Some(Protocol::Udp)),
            ("h2", None),
            ("h2c", None),
            ("websocket", None),
            ("kafka", None),
        ];
        for (s, want) in cases {
            assert_eq!(Protocol::parse(s), *want, "{s:?}");
        }
    }

    #[test]
    fn port_name_prefix_table() {
        let cases: &[(&str, Option<Protocol>)] = &[
            ("http", Some(Protocol::Http)),
            ("http-api", Some(Protocol::Http)),
            ("HTTP", Some(Protocol::Http)),
            ("http2", Some(Protocol::Http2)),
            ("http2-x", Some(Protocol::Http2)),
            ("https", Some(Protocol::Https)),
            ("https-443", Some(Protocol::Https)),
            ("grpc", Some(Protocol::Grpc)),
            ("grpc-web", Some(Protocol::GrpcWeb)),
            ("grpc-web-ui", Some(Protocol::GrpcWeb)),
            ("grpc-x", Some(Protocol::Grpc)),
            ("tls", Some(Protocol::Tls)),
            ("TCP", Some(Protocol::Tcp)),
            ("tcp-db", Some(Protocol::Tcp)),
            ("mysql", Some(Protocol::Mysql)),
            ("redis-cache", Some(Protocol::Redis)),
            ("mongo", Some(Protocol::Mongo)),
            ("udp-dns", Some(Protocol::Udp)),
            ("httpx", None),
            ("web", None),
            ("db", None),
            ("tcpx", None),
        ];
        for (s, want) in cases {
            assert_eq!(Protocol::from_port_name(s), *want, "{s:?}");
        }
    }

    #[test]
    fn classes() {
        assert!(Protocol::Grpc.is_http() && Protocol::Grpc.is_http2());
        assert!(Protocol::Https.is_tls() && Protocol::Https.is_tcp());
        assert!(Protocol::Redis.is_tcp() && !Protocol::Redis.is_tls());
        assert!(!Protocol::Auto.is_tcp() && !Protocol::Udp.is_tcp());
    }
}
