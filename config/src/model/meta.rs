//! The Kubernetes object envelope: `apiVersion`, `kind`, `metadata`, `spec`, `status`.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::Raw;

/// One Kubernetes-style object whose `spec` is `S`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resource<S> {
    /// e.g. `networking.istio.io/v1`
    #[serde(default)]
    pub api_version: String,
    /// e.g. `ServiceEntry`
    #[serde(default)]
    pub kind: String,
    /// Name, namespace, labels...
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The object's specification; required.
    #[serde(default = "none")]
    pub spec: Option<S>,
    /// Written by controllers (`kubectl get -o yaml` prints it); never read.
    #[serde(default)]
    pub status: Option<Raw>,
}

/// Kubernetes `ObjectMeta`. Every field kubectl prints is known, so that a typo such as
/// `namepsace:` is reported instead of silently putting the object in `default`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    /// Object name (required).
    pub name: Option<String>,
    /// Namespace; `default` when absent.
    pub namespace: Option<String>,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Accepted, unused.
    pub generate_name: Option<Raw>,
    /// Accepted, unused.
    pub self_link: Option<Raw>,
    /// Accepted, unused.
    pub uid: Option<Raw>,
    /// Accepted, unused.
    pub resource_version: Option<Raw>,
    /// Accepted, unused.
    pub generation: Option<Raw>,
    /// Accepted, unused: precedence uses the reload in which the object first appeared.
    pub creation_timestamp: Option<Raw>,
    /// Accepted, unused.
    pub deletion_timestamp: Option<Raw>,
    /// Accepted, unused.
    pub deletion_grace_period_seconds: Option<Raw>,
    /// Accepted, unused.
    pub owner_references: Option<Raw>,
    /// Accepted, unused.
    pub finalizers: Option<Raw>,
    /// Accepted, unused.
    pub managed_fields: Option<Raw>,
}

fn none<S>() -> Option<S> {
    None
}
