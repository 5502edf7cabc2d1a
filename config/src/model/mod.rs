//! Wire model: serde mirrors of the Istio YAML objects, field for field, with no logic.
//!
//! Every struct rejects nothing by itself: unknown keys are collected by the loader
//! (`serde_ignored`) and reported as `UNKNOWN_FIELD`, numbers are `i64` and enums are strings so
//! that out-of-range values and bad enum names reach validation and get a precise reason code
//! instead of a generic decode error. Field names follow the protobuf JSON names (camelCase).

mod destination_rule;
mod mesh;
mod meta;
mod service_entry;
mod virtual_service;

pub use destination_rule::*;
pub use mesh::*;
pub use meta::*;
pub use service_entry::*;
pub use virtual_service::*;

use serde::Deserialize;

/// A protobuf enum as written in YAML: its name, or (rarely) its number.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum EnumValue {
    /// `resolution: DNS`
    Name(String),
    /// `resolution: 2`
    Number(i64),
}

/// `percentage: {value: 12.5}`
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Percent {
    /// 0.0 ..= 100.0
    #[serde(default)]
    pub value: f64,
}

/// `port: {number: 443}` as used by destinations and DestinationRule port-level settings.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortSelector {
    /// The port number.
    #[serde(default)]
    pub number: i64,
}

/// Any YAML value kept verbatim (fields the proxy accepts but does not interpret).
pub type Raw = serde_yaml::Value;
