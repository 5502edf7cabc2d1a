//! The MeshConfig document given with `--mesh` (istio/api `mesh/v1alpha1/config.proto`).
//!
//! The fields the proxy uses are typed; every other MeshConfig field is accepted and reported
//! as ignored, so a full `meshConfig` copied from an Istio installation loads.

use serde::Deserialize;

use super::{EnumValue, Raw};

/// MeshConfig. Field names are MeshConfig's own.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshConfig {
    /// `outboundTrafficPolicy.mode`
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
    /// Default exportTo for ServiceEntries (default `["*"]`).
    pub default_service_export_to: Option<Vec<String>>,
    /// Default exportTo for VirtualServices (default `["*"]`).
    pub default_virtual_service_export_to: Option<Vec<String>>,
    /// Default exportTo for DestinationRules (default `["*"]`).
    pub default_destination_rule_export_to: Option<Vec<String>>,
    /// Upstream connect timeout (default 10s).
    pub connect_timeout: Option<String>,
    /// Namespace whose DestinationRules apply to every namespace (default `istio-system`).
    pub root_namespace: Option<String>,
    /// Retry refresh rate for failed DNS queries (default 60s).
    pub dns_refresh_rate: Option<String>,
    /// Protocol sniffing timeout; the proxy's own `--detect-timeout` governs, this is reported.
    pub protocol_detection_timeout: Option<Raw>,
    /// The remaining MeshConfig fields: accepted, not used by an egress node.
    #[serde(flatten)]
    pub other: std::collections::BTreeMap<String, Raw>,
}

/// `outboundTrafficPolicy`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboundTrafficPolicy {
    /// `ALLOW_ANY` (default) or `REGISTRY_ONLY`.
    pub mode: Option<EnumValue>,
    /// Sidecar-only field; accepted, not used.
    pub egress_proxy: Option<Raw>,
}

/// Every MeshConfig field name in istio/api `config.proto`, so that a full mesh configuration
/// loads with its unused fields reported as ignored while a typo is still reported as unknown.
pub const MESH_CONFIG_FIELDS: &[&str] = &[
    "proxyListenPort",
    "proxyInboundListenPort",
    "proxyHttpPort",
    "connectTimeout",
    "protocolDetectionTimeout",
    "tcpKeepalive",
    "ingressClass",
    "ingressService",
    "ingressControllerMode",
    "ingressSelector",
    "enableTracing",
    "accessLogFile",
    "accessLogFormat",
    "accessLogEncoding",
    "enableEnvoyAccessLogService",
    "disableEnvoyListenerLog",
    "defaultConfig",
    "outboundTrafficPolicy",
    "inboundTrafficPolicy",
    "configSources",
    "enableAutoMtls",
    "trustDomain",
    "trustDomainAliases",
    "caCertificates",
    "defaultServiceExportTo",
    "defaultVirtualServiceExportTo",
    "defaultDestinationRuleExportTo",
    "rootNamespace",
    "localityLbSetting",
    "dnsRefreshRate",
    "h2UpgradePolicy",
    "inboundClusterStatName",
    "outboundClusterStatName",
    "certificates",
    "thriftConfig",
    "serviceSettings",
    "enablePrometheusMerge",
    "verifyCertificateAtClient",
    "ca",
    "extensionProviders",
    "defaultProviders",
    "discoverySelectors",
    "pathNormalization",
    "defaultHttpRetryPolicy",
    "meshMTLS",
    "tlsDefaults",
    "serviceScopeConfigs",
    "serviceEntryVisibility",
    "mixerCheckServer",
    "mixerReportServer",
    "disablePolicyChecks",
    "policyCheckFailOpen",
    "sidecarToTelemetrySessionAffinity",
    "authPolicy",
    "rdsRefreshDelay",
    "enableClientSidePolicyCheck",
    "sdsUdsPath",
    "sdsRefreshDelay",
    "enableSdsTokenMount",
    "trustDomainAliases",
    "gatewayTopology",
    "enableBuiltinMetrics",
];
