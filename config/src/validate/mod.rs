//! Validation: decoded objects -> typed, valid objects ([`crate::spec`]) plus every finding.
//!
//! Each validator reports all it finds (never only the first) and returns a typed object only
//! when the object has no errors. Warnings never reject.

mod destination_rule;
mod export_to;
pub mod http_route;
pub mod names;
mod service_entry;
mod virtual_service;

use crate::duration;
use crate::finding::{Code, Finding, Findings, ObjectKey};
use crate::load::{Object, Spec};
use crate::model::{EnumValue, MeshConfig};
use crate::spec::{DestinationRule, Mesh, OutboundPolicy, ServiceEntry, VirtualService};
use rustc_hash::FxHashMap;
use std::cell::Cell;
use std::sync::Arc;

/// The proxy's own ports, which ServiceEntries should not use (Decisions 2).
pub const RESERVED_PORTS: &[u16] = &[15000, 15001, 15006, 15020, 15021, 15090];

/// What validation needs to know about the proxy.
pub struct Context<'a> {
    /// Mesh settings (defaults for exportTo).
    pub mesh: &'a Mesh,
    /// The namespace the proxy serves (for `sourceNamespace` matches).
    pub namespace: &'a str,
    /// Ports the proxy uses itself.
    pub reserved_ports: &'a [u16],
    /// Whether a file exists (certificate paths); `None` skips the check.
    pub file_exists: Option<&'a dyn Fn(&str) -> bool>,
}

/// Every valid object of one load, in load order.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    /// Mesh settings.
    pub mesh: Mesh,
    /// ServiceEntries.
    pub service_entries: Vec<Arc<ServiceEntry>>,
    /// VirtualServices bound to `mesh`.
    pub virtual_services: Vec<Arc<VirtualService>>,
    /// DestinationRules that apply to this proxy.
    pub destination_rules: Vec<Arc<DestinationRule>>,
    /// Every object loaded (valid or not, applicable or not), for config dumps.
    pub objects: Arc<[ObjectKey]>,
}

/// Validate the mesh document.
pub fn mesh(config: &MeshConfig, out: &mut Findings<'_>) -> Mesh {
    let mut mesh = Mesh::default();
    if let Some(p) = &config.outbound_traffic_policy {
        match &p.mode {
            None => {}
            Some(EnumValue::Name(n)) if n == "REGISTRY_ONLY" => {
                mesh.outbound_policy = OutboundPolicy::RegistryOnly
            }
            Some(EnumValue::Number(0)) => mesh.outbound_policy = OutboundPolicy::RegistryOnly,
            Some(EnumValue::Name(n)) if n == "ALLOW_ANY" => {
                mesh.outbound_policy = OutboundPolicy::AllowAny
            }
            Some(EnumValue::Number(1)) => mesh.outbound_policy = OutboundPolicy::AllowAny,
            Some(EnumValue::Name(n)) if n == "ALLOW_ANY_DYNAMIC_DNS" => {
                out.push(Code::IGNORED_FIELD, "outboundTrafficPolicy.mode", "ALLOW_ANY_DYNAMIC_DNS is served as ALLOW_ANY (passthrough to the original destination)");
            }
            Some(_) => out.push(
                Code::MESH_POLICY_INVALID,
                "outboundTrafficPolicy.mode",
                "unsupported outboundTrafficPolicy mode (one of ALLOW_ANY, REGISTRY_ONLY)",
            ),
        }
        if p.egress_proxy.is_some() {
            out.push(
                Code::IGNORED_FIELD,
                "outboundTrafficPolicy.egressProxy",
                "egressProxy is a Sidecar setting; ignored",
            );
        }
    }
    let lists = [
        (
            "defaultServiceExportTo",
            &config.default_service_export_to,
            true,
            &mut mesh.default_service_export_to,
        ),
        (
            "defaultVirtualServiceExportTo",
            &config.default_virtual_service_export_to,
            false,
            &mut mesh.default_virtual_service_export_to,
        ),
        (
            "defaultDestinationRuleExportTo",
            &config.default_destination_rule_export_to,
            false,
            &mut mesh.default_destination_rule_export_to,
        ),
    ];
    for (field, given, allow_none, target) in lists {
        if let Some(list) = given
            && export_to::check(list, &[], "", allow_none, field, out).is_some()
        {
            target.clone_from(list);
        }
    }
    for (field, given, target) in [
        (
            "connectTimeout",
            &config.connect_timeout,
            &mut mesh.connect_timeout,
        ),
        (
            "dnsRefreshRate",
            &config.dns_refresh_rate,
            &mut mesh.dns_refresh_rate,
        ),
    ] {
        if let Some(s) = given {
            match duration::parse_istio(s) {
                Ok(d) => *target = d,
                Err(e) => out.push(Code::MESH_DURATION_INVALID, field, e),
            }
        }
    }
    if let Some(ns) = &config.root_namespace {
        if names::is_dns1123_label(ns) {
            mesh.root_namespace.clone_from(ns);
        } else {
            out.push(
                Code::MESH_INVALID,
                "rootNamespace",
                format!("rootNamespace {ns:?} is not a valid namespace name"),
            );
        }
    }
    if config.protocol_detection_timeout.is_some() {
        out.push(
            Code::IGNORED_FIELD,
            "protocolDetectionTimeout",
            "the proxy's --detect-timeout governs detection; ignored",
        );
    }
    mesh
}

/// What validation decides about one object on its own: its typed form when it is valid and
/// applies to this proxy, and its findings. The typed form is shared, so a result kept from an
/// earlier load costs a reference count to reuse.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The typed object; `None` when the object has errors or does not apply (a
    /// VirtualService not bound to `mesh`, a DestinationRule for another workload).
    pub valid: Option<Valid>,
    /// Everything validation found in the object.
    pub findings: Vec<Finding>,
    /// Whether the outcome depends on the object and the context alone: `false` when
    /// validation looked for files the object names (certificates), which may appear or
    /// vanish between loads.
    pub reusable: bool,
}

/// A valid object of one of the kinds the proxy serves.
#[derive(Debug, Clone)]
pub enum Valid {
    /// A ServiceEntry.
    ServiceEntry(Arc<ServiceEntry>),
    /// A VirtualService bound to `mesh`.
    VirtualService(Arc<VirtualService>),
    /// A DestinationRule that applies to this proxy.
    DestinationRule(Arc<DestinationRule>),
}

/// Validate one object, as `kubectl apply` would: alone, against the context.
pub fn check(o: &Object, ctx: &Context<'_>) -> Checked {
    let consulted = Cell::new(false);
    let probe = |path: &str| {
        consulted.set(true);
        ctx.file_exists.is_some_and(|exists| exists(path))
    };
    let ctx = Context {
        mesh: ctx.mesh,
        namespace: ctx.namespace,
        reserved_ports: ctx.reserved_ports,
        file_exists: ctx.file_exists.map(|_| &probe as &dyn Fn(&str) -> bool),
    };
    let mut findings = Vec::new();
    let mut out = Findings::new(&mut findings, &o.file, o.origin, Some(&o.key));
    let valid = match &o.spec {
        Spec::ServiceEntry(se) => service_entry::validate(&o.key, se, &ctx, &mut out)
            .map(|se| Valid::ServiceEntry(Arc::new(se))),
        Spec::VirtualService(vs) => virtual_service::validate(&o.key, vs, &ctx, &mut out)
            .ok()
            .flatten()
            .map(|vs| Valid::VirtualService(Arc::new(vs))),
        Spec::DestinationRule(dr) => destination_rule::validate(&o.key, dr, &ctx, &mut out)
            .ok()
            .flatten()
            .map(|dr| Valid::DestinationRule(Arc::new(dr))),
    };
    Checked {
        valid,
        findings,
        reusable: !consulted.get(),
    }
}

/// The registry of `objects`, each already checked (`checked[i]` is `objects[i]`'s outcome):
/// every definition's findings are reported, and only the latest definition of a name enters
/// the registry. Duplicates (same kind/namespace/name) get a warning.
pub fn assemble(
    objects: &[&Object],
    checked: &[&Checked],
    mesh: &Mesh,
    findings: &mut Vec<Finding>,
) -> Registry {
    debug_assert_eq!(objects.len(), checked.len());
    let mut latest: FxHashMap<&ObjectKey, usize> = FxHashMap::default();
    latest.reserve(objects.len());
    for (i, o) in objects.iter().enumerate() {
        if let Some(prev) = latest.insert(&o.key, i) {
            let p = &objects[prev];
            Findings::new(findings, &o.file, o.origin, Some(&o.key)).push(
                Code::DUPLICATE_OBJECT,
                "metadata.name",
                format!(
                    "{} is defined again; this definition replaces the one in {} (document {})",
                    o.key,
                    p.file,
                    p.origin.doc + 1
                ),
            );
        }
    }
    let count = |f: fn(&Spec) -> bool| objects.iter().filter(|o| f(&o.spec)).count();
    let mut registry = Registry {
        mesh: mesh.clone(),
        service_entries: Vec::with_capacity(count(|s| matches!(s, Spec::ServiceEntry(_)))),
        virtual_services: Vec::with_capacity(count(|s| matches!(s, Spec::VirtualService(_)))),
        destination_rules: Vec::with_capacity(count(|s| matches!(s, Spec::DestinationRule(_)))),
        objects: Arc::from([]),
    };
    let mut keys = Vec::with_capacity(objects.len());
    for (i, (o, c)) in objects.iter().zip(checked).enumerate() {
        findings.extend(c.findings.iter().cloned());
        if latest.get(&o.key) != Some(&i) {
            continue;
        }
        keys.push(o.key.clone());
        match &c.valid {
            Some(Valid::ServiceEntry(se)) => registry.service_entries.push(se.clone()),
            Some(Valid::VirtualService(vs)) => registry.virtual_services.push(vs.clone()),
            Some(Valid::DestinationRule(dr)) => registry.destination_rules.push(dr.clone()),
            None => {}
        }
    }
    registry.objects = keys.into();
    registry
}

#[cfg(test)]
mod tests;
