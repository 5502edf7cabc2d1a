//! `DestinationRule` spec (istio/api `networking/v1alpha3/destination_rule.proto`).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{EnumValue, PortSelector, Raw};

/// `DestinationRule.spec`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationRuleSpec {
    /// Service host (wildcards allowed).
    #[serde(default)]
    pub host: String,
    /// Policy for every port and subset.
    pub traffic_policy: Option<TrafficPolicy>,
    /// Named endpoint subsets.
    #[serde(default)]
    pub subsets: Vec<Subset>,
    /// Visibility.
    #[serde(default)]
    pub export_to: Vec<String>,
    /// Workload selector (`matchLabels`); an egress node has no workloads.
    pub workload_selector: Option<Raw>,
}

/// `TrafficPolicy`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrafficPolicy {
    /// Load balancing.
    pub load_balancer: Option<LoadBalancerSettings>,
    /// Connection pool limits.
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// Outlier detection.
    pub outlier_detection: Option<OutlierDetection>,
    /// TLS origination.
    pub tls: Option<ClientTlsSettings>,
    /// Per-port overrides.
    #[serde(default)]
    pub port_level_settings: Vec<PortTrafficPolicy>,
    /// HTTP CONNECT tunnelling; accepted, ignored.
    pub tunnel: Option<Raw>,
    /// PROXY protocol; accepted, ignored.
    pub proxy_protocol: Option<Raw>,
    /// Retry budget; accepted, ignored.
    pub retry_budget: Option<Raw>,
}

/// `TrafficPolicy.PortTrafficPolicy`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortTrafficPolicy {
    /// The service port this applies to.
    pub port: Option<PortSelector>,
    /// Load balancing.
    pub load_balancer: Option<LoadBalancerSettings>,
    /// Connection pool limits.
    pub connection_pool: Option<ConnectionPoolSettings>,
    /// Outlier detection.
    pub outlier_detection: Option<OutlierDetection>,
    /// TLS origination.
    pub tls: Option<ClientTlsSettings>,
}

/// `Subset`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subset {
    /// DNS-1123 label, unique.
    #[serde(default)]
    pub name: String,
    /// Endpoint labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Overrides for this subset.
    pub traffic_policy: Option<TrafficPolicy>,
}

/// `LoadBalancerSettings`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancerSettings {
    /// `UNSPECIFIED`, `LEAST_CONN`, `RANDOM`, `PASSTHROUGH`, `ROUND_ROBIN`, `LEAST_REQUEST`.
    pub simple: Option<EnumValue>,
    /// Consistent hashing; accepted, ignored.
    pub consistent_hash: Option<ConsistentHash>,
    /// Locality LB; accepted, ignored.
    pub locality_lb_setting: Option<Raw>,
    /// Slow start; accepted, ignored.
    pub warmup_duration_secs: Option<Raw>,
    /// Slow start; accepted, ignored.
    pub warmup: Option<Raw>,
}

/// `LoadBalancerSettings.ConsistentHashLB` (validated, not used).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConsistentHash {
    /// Hash key.
    pub http_header_name: Option<String>,
    /// Hash key.
    pub http_cookie: Option<Raw>,
    /// Hash key.
    pub use_source_ip: Option<bool>,
    /// Hash key.
    pub http_query_parameter_name: Option<String>,
    /// Ring hash.
    pub ring_hash: Option<Raw>,
    /// Maglev.
    pub maglev: Option<Maglev>,
    /// Deprecated ring size.
    pub minimum_ring_size: Option<Raw>,
}

/// `ConsistentHashLB.MagLev`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Maglev {
    /// Must be a prime below 5000011.
    pub table_size: Option<i64>,
}

/// `ConnectionPoolSettings`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionPoolSettings {
    /// TCP limits.
    pub tcp: Option<TcpSettings>,
    /// HTTP limits.
    pub http: Option<HttpSettings>,
}

/// `ConnectionPoolSettings.TCPSettings`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TcpSettings {
    /// Maximum upstream connections.
    pub max_connections: Option<i64>,
    /// Connect timeout.
    pub connect_timeout: Option<String>,
    /// Keep-alive probes.
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// Maximum connection lifetime.
    pub max_connection_duration: Option<String>,
    /// Idle timeout (default 1h).
    pub idle_timeout: Option<String>,
}

/// `TCPSettings.TcpKeepalive`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TcpKeepalive {
    /// Probes before the connection is dead.
    pub probes: Option<i64>,
    /// Idle time before probing.
    pub time: Option<String>,
    /// Interval between probes.
    pub interval: Option<String>,
}

/// `ConnectionPoolSettings.HTTPSettings`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpSettings {
    /// Queued requests.
    pub http1_max_pending_requests: Option<i64>,
    /// Concurrent HTTP/2 requests.
    pub http2_max_requests: Option<i64>,
    /// Requests per upstream connection (0 unlimited).
    pub max_requests_per_connection: Option<i64>,
    /// Concurrent retries.
    pub max_retries: Option<i64>,
    /// Idle timeout for upstream connections.
    pub idle_timeout: Option<String>,
    /// `DEFAULT`, `DO_NOT_UPGRADE`, `UPGRADE`.
    pub h2_upgrade_policy: Option<EnumValue>,
    /// Use the downstream protocol upstream.
    pub use_client_protocol: Option<bool>,
    /// HTTP/2 streams per connection.
    pub max_concurrent_streams: Option<i64>,
}

/// `OutlierDetection`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutlierDetection {
    /// Separate local-origin errors.
    pub split_external_local_origin_errors: Option<bool>,
    /// Local-origin failures before ejection.
    pub consecutive_local_origin_failures: Option<i64>,
    /// 502/503/504 before ejection.
    pub consecutive_gateway_errors: Option<i64>,
    /// 5xx before ejection (default 5).
    pub consecutive_5xx_errors: Option<i64>,
    /// Deprecated alias of consecutive5xxErrors.
    pub consecutive_errors: Option<i64>,
    /// Sweep interval (default 10s).
    pub interval: Option<String>,
    /// Base ejection time (default 30s).
    pub base_ejection_time: Option<String>,
    /// Maximum ejected percent (default 10).
    pub max_ejection_percent: Option<i64>,
    /// Minimum healthy percent (default 0).
    pub min_health_percent: Option<i64>,
}

/// `ClientTLSSettings`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientTlsSettings {
    /// `DISABLE`, `SIMPLE`, `MUTUAL`, `ISTIO_MUTUAL`.
    pub mode: Option<EnumValue>,
    /// Client certificate file (MUTUAL).
    #[serde(default)]
    pub client_certificate: String,
    /// Client key file (MUTUAL).
    #[serde(default)]
    pub private_key: String,
    /// CA bundle file; the system trust store when empty.
    #[serde(default)]
    pub ca_certificates: String,
    /// Kubernetes secret name; not available on an egress node.
    #[serde(default)]
    pub credential_name: String,
    /// SANs to verify.
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
    /// SNI to send.
    #[serde(default)]
    pub sni: String,
    /// Skip verification.
    pub insecure_skip_verify: Option<bool>,
    /// CRL file.
    #[serde(default)]
    pub ca_crl: String,
}
