//! The compiled route table: immutable, built once per configuration generation for one proxy
//! namespace, and read by the workers without locks or allocation.
//!
//! Its shape mirrors Envoy's listener model as Istio programs it (spec §5):
//! - per port, **VIP listeners** (an exact destination IP bound to one service: TCP and TLS
//!   services with a single address, auto services with one), and a **wildcard listener**;
//! - the wildcard listener's filter chains are grouped by destination: the longest matching
//!   CIDR selects a [`ChainGroup`], otherwise the group of chains with no address. Inside a
//!   group: SNI chains (exact, then longest `*.` suffix), then the chains without server names
//!   (the HTTP chain for plaintext HTTP, the match-all TCP chain for anything else). Envoy does
//!   not backtrack: a connection that matches no chain of its group takes the fallthrough;
//! - the fallthrough is the outbound traffic policy: passthrough (ALLOW_ANY) or close
//!   (REGISTRY_ONLY).
//!
//! A connection is decided in two pure steps: [`RouteTable::listener`] on the original
//! destination says what to detect ([`Detect`]); [`RouteTable::decide`] with what was detected
//! gives a [`Decision`]. HTTP requests are then routed per request with
//! [`HttpRouteConfig::route`].

mod build;
pub mod cidr;
pub mod host;
mod rule_index;
mod view;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rustc_hash::FxHashMap;

pub use build::{CompileOptions, compile};
pub use view::{RoutesView, render_text};

use crate::finding::ObjectKey;
use crate::protocol::Protocol;
use crate::spec::{self, OutboundPolicy, PolicySettings, Resolution};
use cidr::CidrMap;
use host::HostMatcher;

/// Index of a [`Cluster`] in [`RouteTable::clusters`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClusterId(pub u32);

/// Index of an [`HttpRouteConfig`] in [`RouteTable::http_configs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HttpConfigId(pub u32);

/// The compiled configuration for one proxy namespace.
#[derive(Debug, Clone)]
pub struct RouteTable {
    /// The namespace this table was compiled for.
    pub namespace: String,
    /// The fallthrough policy.
    pub policy: OutboundPolicy,
    /// Mesh connect timeout (DestinationRules may override it per cluster).
    pub connect_timeout: Duration,
    /// Upstream clusters (`outbound|port|subset|host`).
    pub clusters: Vec<Cluster>,
    /// HTTP route tables.
    pub http_configs: Vec<HttpRouteConfig>,
    /// Per destination port.
    ports: FxHashMap<u16, PortRoutes>,
    /// What compilation noticed and resolved (shadowed entries, conflicts), for operators.
    pub notes: Vec<String>,
    /// Every object the table was built from.
    pub objects: Arc<[ObjectKey]>,
}

/// Where a routed connection or request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One cluster.
    Cluster(ClusterId),
    /// Weighted clusters (VirtualService tls/tcp routes).
    Weighted(Box<[WeightedCluster]>),
    /// VirtualService tcp rules, tried in order on the destination address; none matching
    /// means the service's own cluster.
    TcpRules(Box<[TcpRule]>, ClusterId),
}

/// A weighted destination. `cluster` is `None` when the destination host is not a known
/// service (Envoy's "cluster not found": 503 for HTTP, close for TCP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedCluster {
    /// The cluster, if the destination resolved to one.
    pub cluster: Option<ClusterId>,
    /// Relative weight.
    pub weight: u32,
    /// The destination host as written.
    pub host: String,
}

/// A VirtualService tcp rule on one port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpRule {
    /// Destination CIDRs; empty matches every destination.
    pub subnets: Vec<ipnet::IpNet>,
    /// Where to send.
    pub route: Box<[WeightedCluster]>,
}

/// An upstream cluster: one service host and port, with its endpoints and policy.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// `outbound|<port>|<subset>|<host>`
    pub name: String,
    /// The ServiceEntry the service view comes from (the oldest, spec §7.2), shared with the
    /// registry; its `subject_alt_names` are used when the DestinationRule gives none.
    pub service: Arc<spec::ServiceEntry>,
    /// Service port number.
    pub port: u16,
    /// Port protocol.
    pub protocol: Protocol,
    /// Resolution.
    pub resolution: Resolution,
    /// How to find upstream addresses.
    pub upstream: Upstream,
    /// DestinationRule settings for this port (and subset); clusters without any share one.
    pub policy: Arc<PolicySettings>,
    /// The DestinationRule applied, if any.
    pub destination_rule: Option<Arc<spec::DestinationRule>>,
    /// Connect timeout.
    pub connect_timeout: Duration,
}

impl Cluster {
    /// The service host: the last part of the name (hosts never contain `|`).
    pub fn host(&self) -> &str {
        self.name.rsplit('|').next().unwrap_or_default()
    }
}

/// How a cluster finds its upstream addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// Resolution NONE: the client's original destination, optionally on another port.
    OriginalDestination {
        /// `targetPort` override.
        port: Option<u16>,
    },
    /// Fixed endpoints (STATIC, or DNS entries whose endpoints are IPs).
    Static(Vec<StaticEndpoint>),
    /// Names to resolve (DNS, DNS_ROUND_ROBIN).
    Dns {
        /// Names (or IPs) with their ports and weights.
        targets: Vec<DnsTarget>,
        /// DNS_ROUND_ROBIN: use only the first address of each answer.
        first_address_only: bool,
    },
    /// Resolve the name the client asked for (SNI or Host): DYNAMIC_DNS, and DNS with a
    /// wildcard host and no endpoints (Decisions 13).
    RequestedName {
        /// Upstream port.
        port: u16,
        /// First address only (DNS_ROUND_ROBIN semantics are never used here; kept for
        /// symmetry).
        first_address_only: bool,
    },
    /// No endpoints: connections fail (503 / close).
    Empty,
}

/// A fixed endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticEndpoint {
    /// Address.
    pub address: EndpointSocket,
    /// Weight (at least 1).
    pub weight: u32,
}

/// A fixed endpoint's socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointSocket {
    /// TCP.
    Inet(SocketAddr),
    /// Unix socket path (`@name` for abstract).
    Unix(String),
}

/// A name to resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsTarget {
    /// DNS name.
    pub name: String,
    /// Port.
    pub port: u16,
    /// Weight (at least 1).
    pub weight: u32,
}

/// One destination port's listeners.
#[derive(Debug, Clone, Default)]
struct PortRoutes {
    vips: FxHashMap<IpAddr, VipListener>,
    cidr_groups: CidrMap<u32>,
    groups: Vec<ChainGroup>,
    /// Index in `groups` of the chains without addresses.
    any: u32,
}

/// A listener bound to one VIP and port: one service, no SNI check (spec §5.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VipListener {
    /// Opaque TCP, dialled at once (server-first protocols work).
    Tcp(Target),
    /// TLS passthrough; SNI is not looked at.
    Tls(Target),
    /// Protocol unset: plaintext HTTP goes to the HTTP route table (only this service, any
    /// Host), everything else to the TCP target.
    Auto {
        /// Non-HTTP traffic.
        tcp: Target,
        /// HTTP traffic.
        http: HttpConfigId,
    },
}

/// The filter chains of a wildcard listener that share one destination match.
#[derive(Debug, Clone, Default)]
pub struct ChainGroup {
    sni: HostMatcher<Target>,
    http: Option<HttpConfigId>,
    tcp: Option<Target>,
}

/// What a connection must be inspected for before it can be decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Detect {
    /// Read a TLS ClientHello for SNI.
    pub tls: bool,
    /// Read an HTTP/1.x request line.
    pub http: bool,
}

/// The listener a connection lands on.
#[derive(Debug, Clone, Copy)]
pub enum Listener<'a> {
    /// No service on this port (or a reserved port): the fallthrough, without detection.
    Fallthrough,
    /// A VIP listener.
    Vip(&'a VipListener),
    /// The chains of the wildcard listener for this destination.
    Chains(&'a ChainGroup),
}

impl Listener<'_> {
    /// What to inspect.
    pub fn detect(&self) -> Detect {
        match self {
            Self::Fallthrough | Self::Vip(VipListener::Tcp(_) | VipListener::Tls(_)) => {
                Detect::default()
            }
            Self::Vip(VipListener::Auto { .. }) => Detect {
                tls: false,
                http: true,
            },
            Self::Chains(g) => Detect {
                tls: !g.sni.is_empty(),
                http: g.http.is_some(),
            },
        }
    }
}

/// What detection found. `Other` covers "neither", a timeout, and "nothing was asked for".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected<'a> {
    /// A TLS ClientHello, with its SNI if it had one.
    Tls {
        /// Server name as sent.
        sni: Option<&'a [u8]>,
    },
    /// A plaintext HTTP/1.x request line.
    Http,
    /// Anything else.
    Other,
}

/// The outcome for a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision<'a> {
    /// Forward the bytes (L4) to this target.
    Forward(&'a Target),
    /// Serve with the HTTP router, per request.
    Http(HttpConfigId),
    /// Forward to the original destination (ALLOW_ANY fallthrough).
    Passthrough,
    /// Close without a byte (REGISTRY_ONLY fallthrough).
    Deny,
}

impl RouteTable {
    /// The listener for a connection to `dst` (its original destination).
    pub fn listener(&self, dst: SocketAddr) -> Listener<'_> {
        let Some(port) = self.ports.get(&dst.port()) else {
            return Listener::Fallthrough;
        };
        let ip = match dst.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or_else(|| dst.ip(), IpAddr::V4),
            ip => ip,
        };
        if let Some(vip) = port.vips.get(&ip) {
            return Listener::Vip(vip);
        }
        let group = port.cidr_groups.find(ip).map_or(port.any, |(g, _)| *g);
        match port.groups.get(group as usize) {
            Some(g) => Listener::Chains(g),
            None => Listener::Fallthrough,
        }
    }

    /// Decide a connection on `listener` given what detection found.
    pub fn decide<'a>(&'a self, listener: Listener<'a>, detected: Detected<'_>) -> Decision<'a> {
        match listener {
            Listener::Fallthrough => self.fallthrough(),
            Listener::Vip(VipListener::Tcp(t) | VipListener::Tls(t)) => Decision::Forward(t),
            Listener::Vip(VipListener::Auto { tcp, http }) => match detected {
                Detected::Http => Decision::Http(*http),
                _ => Decision::Forward(tcp),
            },
            Listener::Chains(g) => {
                if let Detected::Tls { sni: Some(sni) } = detected {
                    // SNI is compared as sent (lower-cased); a trailing dot matches nothing.
                    if let Some(m) = g.sni.find(sni) {
                        return Decision::Forward(m.value());
                    }
                }
                match (detected, g.http, &g.tcp) {
                    (Detected::Http, Some(http), _) => Decision::Http(http),
                    (_, _, Some(tcp)) => Decision::Forward(tcp),
                    _ => self.fallthrough(),
                }
            }
        }
    }

    /// What unmatched traffic gets.
    pub fn fallthrough(&self) -> Decision<'static> {
        match self.policy {
            OutboundPolicy::AllowAny => Decision::Passthrough,
            OutboundPolicy::RegistryOnly => Decision::Deny,
        }
    }

    /// A cluster by id.
    pub fn cluster(&self, id: ClusterId) -> &Cluster {
        &self.clusters[id.0 as usize]
    }

    /// An HTTP route table by id.
    pub fn http_config(&self, id: HttpConfigId) -> &HttpRouteConfig {
        &self.http_configs[id.0 as usize]
    }

    /// Whether some service is on `port`.
    pub fn serves_port(&self, port: u16) -> bool {
        self.ports.contains_key(&port)
    }

    /// Ports that have at least one service, sorted.
    pub fn ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self.ports.keys().copied().collect();
        ports.sort_unstable();
        ports
    }
}

/// One port's HTTP route table (Envoy route configuration), shared by every HTTP service on
/// the port.
#[derive(Debug, Clone)]
pub struct HttpRouteConfig {
    /// The listener port.
    pub port: u16,
    /// Virtual hosts.
    pub virtual_hosts: Vec<VirtualHost>,
    domains: HostMatcher<u32>,
    /// What a Host matching no domain gets.
    pub catch_all: CatchAll,
}

/// The catch-all virtual host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatchAll {
    /// `allow_any`: proxy to the original destination, no timeout, no retries.
    AllowAny,
    /// `block_all`: local 502.
    BlockAll,
    /// A VIP-bound auto listener's only service (domain `*`).
    VirtualHost(u32),
}

/// The result of routing one request's Host.
#[derive(Debug, Clone, Copy)]
pub enum HostRoute<'a> {
    /// A virtual host.
    VirtualHost(&'a VirtualHost),
    /// Proxy to the original destination.
    Passthrough,
    /// Local 502.
    Block,
}

impl HttpRouteConfig {
    /// Route by `Host`/`:authority` (port ignored, case-insensitive, one trailing dot ignored):
    /// exact, longest wildcard, then the catch-all (spec §5.2).
    pub fn route(&self, authority: &[u8]) -> HostRoute<'_> {
        if let Some(host) = host::http_host(authority)
            && let Some(m) = self.domains.find(host)
        {
            return HostRoute::VirtualHost(&self.virtual_hosts[*m.value() as usize]);
        }
        match self.catch_all {
            CatchAll::AllowAny => HostRoute::Passthrough,
            CatchAll::BlockAll => HostRoute::Block,
            CatchAll::VirtualHost(i) => HostRoute::VirtualHost(&self.virtual_hosts[i as usize]),
        }
    }
}

/// A virtual host: one service host on this port.
#[derive(Debug, Clone)]
pub struct VirtualHost {
    /// `host:port`
    pub name: String,
    /// Domains matched (host, its addresses).
    pub domains: Vec<String>,
    /// The service's cluster: the default route. `None` for a VirtualService wildcard host.
    pub cluster: Option<ClusterId>,
    /// VirtualService rules for this port; `None` means the default route (prefix `/` to the
    /// cluster, no timeout, Istio's default retries). `Some(empty)` cannot happen: a
    /// VirtualService with no rule for this port leaves the default route.
    pub routes: Option<Vec<CompiledHttpRoute>>,
    /// The VirtualService the rules came from.
    pub virtual_service: Option<ObjectKey>,
}

/// A VirtualService HTTP rule with its destinations resolved to clusters.
#[derive(Debug, Clone)]
pub struct CompiledHttpRoute {
    /// The validated rule.
    pub rule: spec::HttpRoute,
    /// For `HttpAction::Route`: one entry per destination, in order.
    pub destinations: Vec<WeightedCluster>,
}

#[cfg(test)]
mod tests;
