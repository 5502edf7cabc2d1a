//! `ServiceEntry` spec (istio/api `networking/v1alpha3/service_entry.proto`,
//! `workload_entry.proto`).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::EnumValue;

/// `ServiceEntry.spec`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceEntrySpec {
    /// Hosts (DNS names, optional `*.` prefix).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// VIPs or CIDRs.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Ports.
    #[serde(default)]
    pub ports: Vec<Option<ServicePort>>,
    /// `MESH_EXTERNAL` (default) or `MESH_INTERNAL`.
    pub location: Option<EnumValue>,
    /// `NONE` (default), `STATIC`, `DNS`, `DNS_ROUND_ROBIN`, `DYNAMIC_DNS`.
    pub resolution: Option<EnumValue>,
    /// Endpoints (`WorkloadEntry`).
    #[serde(default)]
    pub endpoints: Vec<Option<WorkloadEntry>>,
    /// Mutually exclusive with `endpoints`.
    pub workload_selector: Option<WorkloadSelector>,
    /// Visibility.
    #[serde(default)]
    pub export_to: Vec<String>,
    /// SANs to verify when a DestinationRule originates TLS without its own.
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
}

/// `ServicePort`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    /// 1..65535
    #[serde(default)]
    pub number: i64,
    /// Protocol name, case-insensitive; empty means auto-detect (or the name prefix).
    #[serde(default)]
    pub protocol: String,
    /// DNS-1123 label, unique within the entry.
    #[serde(default)]
    pub name: String,
    /// Upstream port; defaults to `number`.
    pub target_port: Option<i64>,
}

/// `WorkloadEntry` as used in `ServiceEntry.endpoints`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadEntry {
    /// IP, FQDN (DNS resolutions) or `unix://` path (STATIC).
    #[serde(default)]
    pub address: String,
    /// Port name -> port number overrides.
    #[serde(default)]
    pub ports: BTreeMap<String, i64>,
    /// Labels (used by DestinationRule subsets).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Multi-network id; not used by an egress node.
    #[serde(default)]
    pub network: String,
    /// `region/zone/subzone`; not used.
    #[serde(default)]
    pub locality: String,
    /// Load-balancing weight; 0 means 1.
    pub weight: Option<i64>,
    /// SPIFFE identity; not used.
    #[serde(default)]
    pub service_account: String,
}

/// `WorkloadSelector` (ServiceEntry form: `labels`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSelector {
    /// Label selector.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}
