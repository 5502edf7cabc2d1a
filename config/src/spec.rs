//! Validated, typed configuration: what validation produces and compilation consumes.
//!
//! Every value here has passed its rule: hosts are lower-cased and grammatical, ports are in
//! range, durations parsed, regexes compiled. Holding one of these is proof it is valid.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;

use crate::finding::ObjectKey;
use crate::protocol::Protocol;

/// Who may see an object (spec §8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportTo {
    /// `*`
    All,
    /// `~`: dropped from every proxy's view.
    Nobody,
    /// Listed namespaces (`.` already replaced by the object's own).
    Namespaces(Vec<String>),
}

impl ExportTo {
    /// Whether a proxy in `namespace` sees the object.
    pub fn visible_to(&self, namespace: &str) -> bool {
        match self {
            Self::All => true,
            Self::Nobody => false,
            Self::Namespaces(list) => list.iter().any(|n| n == namespace),
        }
    }
}

/// `resolution`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resolution {
    /// Original destination.
    None,
    /// Listed endpoints.
    Static,
    /// Resolve the host (or endpoint names); every address used.
    Dns,
    /// Resolve; first address used.
    DnsRoundRobin,
    /// Resolve the name the client asked for (SNI/Host).
    DynamicDns,
}

impl Resolution {
    /// Istio's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "NONE",
            Self::Static => "STATIC",
            Self::Dns => "DNS",
            Self::DnsRoundRobin => "DNS_ROUND_ROBIN",
            Self::DynamicDns => "DYNAMIC_DNS",
        }
    }
}

/// `location`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Location {
    /// Default.
    MeshExternal,
    /// Informational only on an egress node.
    MeshInternal,
}

/// An entry of `addresses`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Address {
    /// A single IP (a /32 or /128 CIDR is normalised to this).
    Ip(IpAddr),
    /// A CIDR block.
    Cidr(IpNet),
}

/// A service port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    /// 1..65535
    pub number: u16,
    /// Name (endpoint port maps refer to it).
    pub name: String,
    /// The effective protocol: explicit, else from the name prefix, else auto.
    pub protocol: Protocol,
    /// `targetPort`, if set.
    pub target_port: Option<u16>,
}

/// Where an endpoint is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EndpointAddress {
    /// An IP.
    Ip(IpAddr),
    /// A DNS name to resolve (DNS resolutions).
    Dns(String),
    /// A unix socket path (`unix:///path` or `unix://@abstract`).
    Unix(String),
}

/// One endpoint of a STATIC or DNS entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Address.
    pub address: EndpointAddress,
    /// Port name -> port.
    pub ports: BTreeMap<String, u16>,
    /// Labels (for DestinationRule subsets).
    pub labels: BTreeMap<String, String>,
    /// Load-balancing weight (0 in YAML becomes 1).
    pub weight: u32,
}

/// A valid ServiceEntry.
#[derive(Debug, Clone)]
pub struct ServiceEntry {
    /// Identity.
    pub key: ObjectKey,
    /// Lower-cased hosts, trailing dot removed.
    pub hosts: Vec<String>,
    /// VIPs and CIDRs.
    pub addresses: Vec<Address>,
    /// Ports.
    pub ports: Vec<Port>,
    /// Location.
    pub location: Location,
    /// Resolution.
    pub resolution: Resolution,
    /// Endpoints (empty for NONE, DYNAMIC_DNS, or a workload selector).
    pub endpoints: Vec<Endpoint>,
    /// A workload selector was given (the entry has no endpoints on an egress node).
    pub workload_selector: bool,
    /// Visibility.
    pub export_to: ExportTo,
    /// SANs to verify when originating TLS.
    pub subject_alt_names: Vec<String>,
}

/// A string matcher (`StringMatch`).
#[derive(Debug, Clone)]
pub enum StringMatch {
    /// Equal.
    Exact(String),
    /// Starts with.
    Prefix(String),
    /// The whole value matches (RE2 semantics).
    Regex(regex::Regex),
    /// Any value (an empty `StringMatch` on a header: presence).
    Present,
}

impl StringMatch {
    /// Whether `value` matches.
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Self::Exact(s) => value == s,
            Self::Prefix(p) => value.starts_with(p.as_str()),
            Self::Regex(re) => re.is_match(value),
            Self::Present => true,
        }
    }
}

/// One `match` block of an HTTP route (all conditions must hold).
#[derive(Debug, Clone, Default)]
pub struct HttpMatch {
    /// Path match (`ignoreUriCase` already folded in).
    pub uri: Option<StringMatch>,
    /// Lower-case exact/prefix uri matching.
    pub ignore_uri_case: bool,
    /// Scheme.
    pub scheme: Option<StringMatch>,
    /// Method.
    pub method: Option<StringMatch>,
    /// Authority.
    pub authority: Option<StringMatch>,
    /// Headers that must match (lower-case names).
    pub headers: Vec<(String, StringMatch)>,
    /// Headers that must not match.
    pub without_headers: Vec<(String, StringMatch)>,
    /// Query parameters.
    pub query_params: Vec<(String, StringMatch)>,
    /// Listener port.
    pub port: Option<u16>,
}

/// A route destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// Service host (lower-cased).
    pub host: String,
    /// Subset name.
    pub subset: Option<String>,
    /// Service port.
    pub port: Option<u16>,
    /// Relative weight (0 = no traffic when others exist).
    pub weight: u32,
}

/// Header operations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderOps {
    /// Overwrite.
    pub set: Vec<(String, String)>,
    /// Append.
    pub add: Vec<(String, String)>,
    /// Remove.
    pub remove: Vec<String>,
}

/// Request and response header operations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderRules {
    /// On the request.
    pub request: HeaderOps,
    /// On the response.
    pub response: HeaderOps,
}

/// What a matching HTTP route does.
#[derive(Debug, Clone)]
pub enum HttpAction {
    /// Forward to weighted destinations (with their own header rules).
    Route(Vec<(Destination, HeaderRules)>),
    /// Reply with a redirect.
    Redirect {
        /// New path.
        uri: Option<String>,
        /// New authority.
        authority: Option<String>,
        /// New port.
        port: Option<u16>,
        /// New scheme.
        scheme: Option<String>,
        /// Take the port from the request (`FROM_REQUEST_PORT`) instead of the scheme default.
        port_from_request: bool,
        /// Status.
        code: u16,
    },
    /// Reply directly.
    DirectResponse {
        /// Status.
        status: u16,
        /// Body.
        body: Vec<u8>,
    },
}

/// `retryOn` conditions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetryOn {
    /// Condition names (`5xx`, `connect-failure`, ...).
    pub conditions: Vec<String>,
    /// Status codes to retry (implies `retriable-status-codes`).
    pub status_codes: Vec<u16>,
}

/// Retry policy (spec §9.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub attempts: u32,
    /// Per-attempt timeout.
    pub per_try_timeout: Option<Duration>,
    /// When to retry.
    pub retry_on: RetryOn,
    /// Prefer hosts not tried before.
    pub retry_ignore_previous_hosts: bool,
    /// Base back-off.
    pub backoff: Duration,
}

impl RetryPolicy {
    /// Istio's mesh default: 2 retries on connect-failure, refused-stream, unavailable,
    /// cancelled, retriable-status-codes (with no codes).
    pub fn istio_default() -> Self {
        Self {
            attempts: 2,
            per_try_timeout: None,
            retry_on: RetryOn {
                conditions: [
                    "connect-failure",
                    "refused-stream",
                    "unavailable",
                    "cancelled",
                    "retriable-status-codes",
                ]
                .map(String::from)
                .to_vec(),
                status_codes: Vec::new(),
            },
            retry_ignore_previous_hosts: true,
            backoff: Duration::from_millis(25),
        }
    }

    /// No retries.
    pub fn disabled() -> Self {
        Self {
            attempts: 0,
            ..Self::istio_default()
        }
    }
}

/// What an abort returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AbortStatus {
    /// HTTP status.
    Http(u16),
    /// gRPC status name.
    Grpc(String),
}

/// Fault injection; a fault whose percentage is 0 never fires.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fault {
    /// Delay and the percentage of requests delayed.
    pub delay: Option<(Duration, f64)>,
    /// Abort and the percentage of requests aborted.
    pub abort: Option<(AbortStatus, f64)>,
}

/// Path rewrite.
#[derive(Debug, Clone)]
pub enum UriRewrite {
    /// Replace the matched prefix (or the whole path).
    Prefix(String),
    /// Regex replace.
    Regex(regex::Regex, String),
}

/// A valid HTTP route.
#[derive(Debug, Clone)]
pub struct HttpRoute {
    /// Name.
    pub name: String,
    /// OR of match blocks; empty matches everything.
    pub matches: Vec<HttpMatch>,
    /// What to do.
    pub action: HttpAction,
    /// Whole-exchange timeout (None = disabled).
    pub timeout: Option<Duration>,
    /// Retry policy (the mesh default when the route gives none).
    pub retries: RetryPolicy,
    /// Fault injection.
    pub fault: Option<Fault>,
    /// Path rewrite.
    pub uri_rewrite: Option<UriRewrite>,
    /// Authority rewrite.
    pub authority_rewrite: Option<String>,
    /// Route-level header rules.
    pub headers: HeaderRules,
}

/// A TLS route rule.
#[derive(Debug, Clone)]
pub struct TlsRoute {
    /// OR of matches.
    pub matches: Vec<TlsMatch>,
    /// Weighted destinations.
    pub route: Vec<Destination>,
}

/// A TLS match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsMatch {
    /// SNI names (lower-cased; may be wildcards).
    pub sni_hosts: Vec<String>,
    /// Destination CIDRs.
    pub destination_subnets: Vec<IpNet>,
    /// Listener port.
    pub port: Option<u16>,
}

/// A TCP route rule.
#[derive(Debug, Clone)]
pub struct TcpRoute {
    /// OR of matches; empty matches everything.
    pub matches: Vec<L4Match>,
    /// Weighted destinations.
    pub route: Vec<Destination>,
}

/// A TCP match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct L4Match {
    /// Destination CIDRs.
    pub destination_subnets: Vec<IpNet>,
    /// Listener port.
    pub port: Option<u16>,
}

/// A valid VirtualService that applies to this proxy (bound to `mesh`).
#[derive(Debug, Clone)]
pub struct VirtualService {
    /// Identity.
    pub key: ObjectKey,
    /// Lower-cased hosts.
    pub hosts: Vec<String>,
    /// HTTP rules.
    pub http: Vec<HttpRoute>,
    /// TLS rules.
    pub tls: Vec<TlsRoute>,
    /// TCP rules.
    pub tcp: Vec<TcpRoute>,
    /// Visibility.
    pub export_to: ExportTo,
}

/// TLS origination mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plaintext.
    Disable,
    /// Server-authenticated TLS.
    Simple,
    /// Mutual TLS with files.
    Mutual,
    /// Istio certificates: unsupported on an egress node (connections fail).
    IstioMutual,
}

/// TLS origination settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTls {
    /// Mode.
    pub mode: TlsMode,
    /// Client certificate file.
    pub client_certificate: Option<String>,
    /// Client key file.
    pub private_key: Option<String>,
    /// CA file (system trust store when None).
    pub ca_certificates: Option<String>,
    /// CRL file.
    pub ca_crl: Option<String>,
    /// SANs.
    pub subject_alt_names: Vec<String>,
    /// SNI (auto from Host when None).
    pub sni: Option<String>,
    /// Skip verification.
    pub insecure_skip_verify: bool,
    /// Kubernetes secret (not available here; connections fail).
    pub credential_name: Option<String>,
}

/// Load balancer (`simple`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadBalancer {
    /// Istio's default.
    LeastRequest,
    /// Round robin.
    RoundRobin,
    /// Random.
    Random,
    /// Original destination.
    Passthrough,
}

/// Connection pool limits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionPool {
    /// `tcp.maxConnections`
    pub max_connections: Option<u32>,
    /// `tcp.connectTimeout`
    pub connect_timeout: Option<Duration>,
    /// `tcp.idleTimeout`
    pub tcp_idle_timeout: Option<Duration>,
    /// `tcp.maxConnectionDuration`
    pub max_connection_duration: Option<Duration>,
    /// `http.http1MaxPendingRequests`
    pub http1_max_pending_requests: Option<u32>,
    /// `http.maxRequestsPerConnection`
    pub max_requests_per_connection: Option<u32>,
    /// `http.maxRetries`
    pub max_retries: Option<u32>,
    /// `http.idleTimeout`
    pub http_idle_timeout: Option<Duration>,
}

/// Outlier detection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlierDetection {
    /// Consecutive 5xx before ejection (0 disables).
    pub consecutive_5xx_errors: u32,
    /// Consecutive 502/503/504 before ejection (0 disables).
    pub consecutive_gateway_errors: u32,
    /// Sweep interval.
    pub interval: Duration,
    /// Base ejection time, multiplied by the number of ejections.
    pub base_ejection_time: Duration,
    /// Maximum percent of endpoints ejected.
    pub max_ejection_percent: u32,
    /// Minimum healthy percent for ejection to apply.
    pub min_health_percent: u32,
}

/// A traffic policy (top-level, port-level or subset).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicySettings {
    /// Load balancer.
    pub load_balancer: Option<LoadBalancer>,
    /// Connection pool.
    pub connection_pool: Option<ConnectionPool>,
    /// Outlier detection.
    pub outlier_detection: Option<OutlierDetection>,
    /// TLS origination.
    pub tls: Option<ClientTls>,
}

/// A traffic policy with its port-level overrides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrafficPolicy {
    /// Applies to every port.
    pub default: PolicySettings,
    /// Per service port; each field present replaces the default's.
    pub ports: Vec<(u16, PolicySettings)>,
}

impl TrafficPolicy {
    /// The settings for `port`: port-level fields over the top-level ones.
    pub fn for_port(&self, port: u16) -> PolicySettings {
        let mut out = self.default.clone();
        if let Some((_, p)) = self.ports.iter().find(|(n, _)| *n == port) {
            if p.load_balancer.is_some() {
                out.load_balancer = p.load_balancer;
            }
            if p.connection_pool.is_some() {
                out.connection_pool.clone_from(&p.connection_pool);
            }
            if p.outlier_detection.is_some() {
                out.outlier_detection.clone_from(&p.outlier_detection);
            }
            if p.tls.is_some() {
                out.tls.clone_from(&p.tls);
            }
        }
        out
    }
}

/// A named subset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subset {
    /// Name.
    pub name: String,
    /// Endpoint labels.
    pub labels: BTreeMap<String, String>,
    /// Overrides.
    pub traffic_policy: Option<TrafficPolicy>,
}

/// A valid DestinationRule.
#[derive(Debug, Clone)]
pub struct DestinationRule {
    /// Identity.
    pub key: ObjectKey,
    /// Lower-cased host (may be a wildcard).
    pub host: String,
    /// Policy.
    pub traffic_policy: Option<TrafficPolicy>,
    /// Subsets.
    pub subsets: Vec<Subset>,
    /// Visibility.
    pub export_to: ExportTo,
}

/// The outbound traffic policy (spec §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutboundPolicy {
    /// Unregistered destinations pass through (Istio's default).
    AllowAny,
    /// Unregistered destinations are refused.
    RegistryOnly,
}

impl OutboundPolicy {
    /// Istio's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AllowAny => "ALLOW_ANY",
            Self::RegistryOnly => "REGISTRY_ONLY",
        }
    }
}

/// The mesh settings the proxy uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mesh {
    /// Fallthrough policy.
    pub outbound_policy: OutboundPolicy,
    /// Default exportTo of ServiceEntries, as written (`.` resolved per object).
    pub default_service_export_to: Vec<String>,
    /// Default exportTo of VirtualServices.
    pub default_virtual_service_export_to: Vec<String>,
    /// Default exportTo of DestinationRules.
    pub default_destination_rule_export_to: Vec<String>,
    /// Upstream connect timeout.
    pub connect_timeout: Duration,
    /// Namespace whose DestinationRules apply everywhere.
    pub root_namespace: String,
    /// Refresh rate for failed DNS queries.
    pub dns_refresh_rate: Duration,
}

impl Default for Mesh {
    fn default() -> Self {
        Self {
            outbound_policy: OutboundPolicy::AllowAny,
            default_service_export_to: vec!["*".into()],
            default_virtual_service_export_to: vec!["*".into()],
            default_destination_rule_export_to: vec!["*".into()],
            connect_timeout: Duration::from_secs(10),
            root_namespace: "istio-system".into(),
            dns_refresh_rate: Duration::from_secs(60),
        }
    }
}
