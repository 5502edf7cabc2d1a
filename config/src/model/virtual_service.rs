//! `VirtualService` spec (istio/api `networking/v1alpha3/virtual_service.proto`).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{EnumValue, Percent, PortSelector, Raw};

/// `VirtualService.spec`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualServiceSpec {
    /// Hosts the rules apply to.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Gateways; empty or containing `mesh` binds the rules to sidecars (and to this proxy).
    #[serde(default)]
    pub gateways: Vec<String>,
    /// HTTP rules, in order.
    #[serde(default)]
    pub http: Vec<HttpRoute>,
    /// TLS passthrough rules.
    #[serde(default)]
    pub tls: Vec<TlsRoute>,
    /// Opaque TCP rules.
    #[serde(default)]
    pub tcp: Vec<TcpRoute>,
    /// Visibility.
    #[serde(default)]
    pub export_to: Vec<String>,
}

/// `HTTPRoute`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRoute {
    /// Name, for logs.
    #[serde(default)]
    pub name: String,
    /// Match blocks: OR across blocks, AND within one.
    #[serde(default, rename = "match")]
    pub matches: Vec<HttpMatchRequest>,
    /// Weighted destinations.
    #[serde(default)]
    pub route: Vec<HttpRouteDestination>,
    /// Redirect instead of route.
    pub redirect: Option<HttpRedirect>,
    /// Direct response instead of route.
    pub direct_response: Option<HttpDirectResponse>,
    /// Delegation (gateways only); accepted, ignored.
    pub delegate: Option<Raw>,
    /// URI / authority rewrite.
    pub rewrite: Option<HttpRewrite>,
    /// Whole-exchange timeout; disabled by default.
    pub timeout: Option<String>,
    /// Retry policy; the mesh default applies when absent.
    pub retries: Option<HttpRetry>,
    /// Fault injection.
    pub fault: Option<HttpFaultInjection>,
    /// Mirroring; accepted, ignored.
    pub mirror: Option<Raw>,
    /// Mirroring; accepted, ignored.
    pub mirrors: Option<Raw>,
    /// Mirroring; accepted, ignored.
    pub mirror_percentage: Option<Raw>,
    /// Deprecated mirroring; accepted, ignored.
    pub mirror_percent: Option<Raw>,
    /// CORS; accepted, ignored.
    pub cors_policy: Option<Raw>,
    /// Header manipulation.
    pub headers: Option<Headers>,
}

/// `StringMatch`: exactly one of the three.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StringMatch {
    /// Exact, case-sensitive.
    pub exact: Option<String>,
    /// Prefix, case-sensitive.
    pub prefix: Option<String>,
    /// RE2 regular expression, matched against the whole value.
    pub regex: Option<String>,
}

/// `HTTPMatchRequest`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpMatchRequest {
    /// Name, for logs.
    #[serde(default)]
    pub name: String,
    /// Path (and query) match.
    pub uri: Option<StringMatch>,
    /// Scheme match.
    pub scheme: Option<StringMatch>,
    /// Method match.
    pub method: Option<StringMatch>,
    /// Host/:authority match.
    pub authority: Option<StringMatch>,
    /// Header matches (lower-case keys; an empty match means presence).
    #[serde(default)]
    pub headers: BTreeMap<String, StringMatch>,
    /// Listener port restriction.
    pub port: Option<i64>,
    /// Sidecar workload labels; an egress node has no source workloads.
    #[serde(default)]
    pub source_labels: BTreeMap<String, String>,
    /// Gateways restriction.
    #[serde(default)]
    pub gateways: Vec<String>,
    /// Query parameter matches.
    #[serde(default)]
    pub query_params: BTreeMap<String, StringMatch>,
    /// Case-insensitive uri exact/prefix.
    #[serde(default)]
    pub ignore_uri_case: bool,
    /// Headers that must not match.
    #[serde(default)]
    pub without_headers: BTreeMap<String, StringMatch>,
    /// Source namespace restriction; an egress node has no source workloads.
    #[serde(default)]
    pub source_namespace: String,
    /// Stats prefix; accepted, ignored.
    #[serde(default)]
    pub stat_prefix: String,
}

/// `Destination`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Destination {
    /// Service host (a ServiceEntry host).
    #[serde(default)]
    pub host: String,
    /// DestinationRule subset.
    #[serde(default)]
    pub subset: String,
    /// Service port.
    pub port: Option<PortSelector>,
}

/// `HTTPRouteDestination`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteDestination {
    /// Where to send.
    pub destination: Option<Destination>,
    /// Relative weight.
    #[serde(default)]
    pub weight: i64,
    /// Per-destination header manipulation.
    pub headers: Option<Headers>,
}

/// `RouteDestination` (tls and tcp routes)
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteDestination {
    /// Where to send.
    pub destination: Option<Destination>,
    /// Relative weight.
    #[serde(default)]
    pub weight: i64,
}

/// `HTTPRedirect`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRedirect {
    /// New path.
    #[serde(default)]
    pub uri: String,
    /// New authority.
    #[serde(default)]
    pub authority: String,
    /// New port.
    pub port: Option<i64>,
    /// `FROM_PROTOCOL_DEFAULT` or `FROM_REQUEST_PORT`.
    pub derive_port: Option<EnumValue>,
    /// New scheme.
    #[serde(default)]
    pub scheme: String,
    /// Status (default 301).
    pub redirect_code: Option<i64>,
}

/// `HTTPDirectResponse`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpDirectResponse {
    /// Status code.
    #[serde(default)]
    pub status: i64,
    /// Body.
    pub body: Option<HttpBody>,
}

/// `HTTPBody`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpBody {
    /// Text body.
    pub string: Option<String>,
    /// Base64 body.
    pub bytes: Option<String>,
}

/// `HTTPRewrite`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRewrite {
    /// Replaces the matched uri prefix (or the whole path for exact matches).
    #[serde(default)]
    pub uri: String,
    /// Replaces Host/:authority.
    #[serde(default)]
    pub authority: String,
    /// Regex rewrite of the path.
    pub uri_regex_rewrite: Option<RegexRewrite>,
}

/// `RegexRewrite`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegexRewrite {
    /// RE2 pattern.
    #[serde(default, rename = "match")]
    pub pattern: String,
    /// Replacement with `\1` groups.
    #[serde(default)]
    pub rewrite: String,
}

/// `HTTPRetry`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRetry {
    /// Number of retries; 0 disables.
    #[serde(default)]
    pub attempts: i64,
    /// Timeout per attempt.
    pub per_try_timeout: Option<String>,
    /// Comma-separated retry conditions and status codes.
    #[serde(default)]
    pub retry_on: String,
    /// Locality retry; accepted, ignored.
    pub retry_remote_localities: Option<bool>,
    /// Avoid previous hosts (default true).
    pub retry_ignore_previous_hosts: Option<bool>,
    /// Base back-off (default 25ms).
    pub backoff: Option<String>,
}

/// `HTTPFaultInjection`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpFaultInjection {
    /// Delay.
    pub delay: Option<FaultDelay>,
    /// Abort.
    pub abort: Option<FaultAbort>,
}

/// `HTTPFaultInjection.Delay`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultDelay {
    /// Fixed delay.
    pub fixed_delay: Option<String>,
    /// Unsupported by Istio.
    pub exponential_delay: Option<String>,
    /// Fraction of requests delayed.
    pub percentage: Option<Percent>,
    /// Deprecated integer percent.
    pub percent: Option<i64>,
}

/// `HTTPFaultInjection.Abort`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultAbort {
    /// HTTP status to return.
    pub http_status: Option<i64>,
    /// gRPC status name.
    pub grpc_status: Option<String>,
    /// Unsupported by Istio.
    pub http2_error: Option<String>,
    /// Fraction of requests aborted.
    pub percentage: Option<Percent>,
}

/// `Headers`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Headers {
    /// Request header operations.
    pub request: Option<HeaderOperations>,
    /// Response header operations.
    pub response: Option<HeaderOperations>,
}

/// `Headers.HeaderOperations`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeaderOperations {
    /// Overwrite.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Append.
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    /// Remove.
    #[serde(default)]
    pub remove: Vec<String>,
}

/// `TLSRoute`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsRoute {
    /// At least one match.
    #[serde(default, rename = "match")]
    pub matches: Vec<TlsMatchAttributes>,
    /// Weighted destinations.
    #[serde(default)]
    pub route: Vec<RouteDestination>,
}

/// `TLSMatchAttributes`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsMatchAttributes {
    /// SNI names (subsets of the VirtualService hosts).
    #[serde(default)]
    pub sni_hosts: Vec<String>,
    /// Destination CIDRs.
    #[serde(default)]
    pub destination_subnets: Vec<String>,
    /// Listener port.
    pub port: Option<i64>,
    /// Sidecar workload labels; not applicable.
    #[serde(default)]
    pub source_labels: BTreeMap<String, String>,
    /// Gateways restriction.
    #[serde(default)]
    pub gateways: Vec<String>,
    /// Source namespace; not applicable.
    #[serde(default)]
    pub source_namespace: String,
}

/// `TCPRoute`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TcpRoute {
    /// Optional matches.
    #[serde(default, rename = "match")]
    pub matches: Vec<L4MatchAttributes>,
    /// Weighted destinations.
    #[serde(default)]
    pub route: Vec<RouteDestination>,
}

/// `L4MatchAttributes`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct L4MatchAttributes {
    /// Destination CIDRs.
    #[serde(default)]
    pub destination_subnets: Vec<String>,
    /// Listener port.
    pub port: Option<i64>,
    /// Source subnet; not applicable to a shared egress node.
    #[serde(default)]
    pub source_subnet: String,
    /// Sidecar workload labels; not applicable.
    #[serde(default)]
    pub source_labels: BTreeMap<String, String>,
    /// Gateways restriction.
    #[serde(default)]
    pub gateways: Vec<String>,
    /// Source namespace; not applicable.
    #[serde(default)]
    pub source_namespace: String,
}
