//! ServiceEntry validation: every check of Istio's `ValidateServiceEntry` (spec §3.1, in its
//! order), the CRD limits (§3.5), and the project's Decisions 1, 2 and 13.

use std::collections::BTreeMap;

use crate::finding::{Code, Findings};
use crate::model::{EnumValue, ServiceEntrySpec, WorkloadEntry};
use crate::protocol::Protocol;
use crate::spec::{Address, Endpoint, EndpointAddress, Location, Port, Resolution, ServiceEntry};

use super::names::{self, truncate};
use super::{Context, export_to};

/// Validate one ServiceEntry; `None` when it has errors (all of them reported).
pub(super) fn validate(
    key: &crate::ObjectKey,
    se: &ServiceEntrySpec,
    ctx: &Context<'_>,
    out: &mut Findings<'_>,
) -> Option<ServiceEntry> {
    let errors = out.errors();
    let resolution = resolution(se.resolution.as_ref(), out);
    let location = match &se.location {
        None => Some(Location::MeshExternal),
        Some(EnumValue::Name(n)) if n == "MESH_EXTERNAL" => Some(Location::MeshExternal),
        Some(EnumValue::Name(n)) if n == "MESH_INTERNAL" => Some(Location::MeshInternal),
        Some(EnumValue::Number(0)) => Some(Location::MeshExternal),
        Some(EnumValue::Number(1)) => Some(Location::MeshInternal),
        Some(other) => {
            out.push(
                Code::SE_LOCATION_UNSUPPORTED,
                "spec.location",
                format!("unsupported location {}", enum_text(other)),
            );
            None
        }
    };
    limits(se, out);

    // Rows 1-4: workload selector.
    if let Some(selector) = &se.workload_selector {
        for (k, v) in &selector.labels {
            let at = format!("spec.workloadSelector.labels.{k}");
            if k.is_empty() {
                out.push(
                    Code::SE_SELECTOR_EMPTY_KEY,
                    &at,
                    "empty key is not supported in selector",
                );
            }
            if k.contains('*') || v.contains('*') {
                out.push(
                    Code::SE_SELECTOR_WILDCARD,
                    &at,
                    "wildcard is not supported in selector",
                );
            }
        }
        if selector.labels.is_empty() {
            out.push(
                Code::SE_SELECTOR_NO_LABELS,
                "spec.workloadSelector",
                "service entry: workload selector specified without labels, will be applied to all services in namespace",
            );
        }
        if !se.endpoints.is_empty() {
            out.push(
                Code::SE_SELECTOR_AND_ENDPOINTS,
                "spec.workloadSelector",
                "only one of WorkloadSelector or Endpoints is allowed in Service Entry",
            );
        } else {
            out.push(
                Code::IGNORED_FIELD,
                "spec.workloadSelector",
                "an egress node has no workloads to select: the service has no endpoints",
            );
        }
    }

    // Rows 5-8: hosts.
    if se.hosts.is_empty() {
        out.push(
            Code::SE_NO_HOSTS,
            "spec.hosts",
            "service entry must have at least one host",
        );
    }
    let mut hosts = Vec::with_capacity(se.hosts.len());
    for (i, host) in se.hosts.iter().enumerate() {
        let at = format!("spec.hosts[{i}]");
        if host == "*" {
            out.push(Code::SE_HOST_FULL_WILDCARD, &at, "invalid host *");
            continue;
        }
        if let Err(e) = names::wildcard_domain(host) {
            out.push(Code::SE_HOST_INVALID, &at, e);
            continue;
        }
        if names::is_partial_wildcard(host) && resolution != Some(Resolution::DynamicDns) {
            out.push(
                Code::SE_HOST_PARTIAL_WILDCARD,
                &at,
                format!("partial wildcard {host:?} not allowed"),
            );
        }
        hosts.push(names::normalize_host(host));
    }

    // Rows 9-10: addresses.
    let mut addresses = Vec::with_capacity(se.addresses.len());
    for (i, a) in se.addresses.iter().enumerate() {
        match names::address(a) {
            Ok(addr) => addresses.push(addr),
            Err(e) => out.push(Code::SE_ADDRESS_INVALID, format!("spec.addresses[{i}]"), e),
        }
    }
    let has_cidr = addresses.iter().any(|a| matches!(a, Address::Cidr(_)));
    if has_cidr
        && !matches!(
            resolution,
            Some(Resolution::None | Resolution::Static) | None
        )
    {
        out.push(
            Code::SE_CIDR_RESOLUTION,
            "spec.addresses",
            "CIDR addresses are allowed only for NONE/STATIC resolution types",
        );
    }

    // Rows 11-18: ports.
    let ports = ports(se, ctx, out);

    // Rows 19-33: resolution-specific checks and endpoints.
    let mut endpoints = Vec::new();
    match resolution {
        Some(Resolution::None) => {
            if !se.endpoints.is_empty() {
                out.push(
                    Code::SE_NONE_WITH_ENDPOINTS,
                    "spec.endpoints",
                    "no endpoints should be provided for resolution type none",
                );
            }
            if se.workload_selector.is_some() {
                out.push(
                    Code::SE_NONE_WITH_SELECTOR,
                    "spec.workloadSelector",
                    "workloadSelector should not be set when resolution mode is NONE",
                );
            }
        }
        Some(Resolution::Static) => {
            for (i, ep) in se.endpoints.iter().enumerate() {
                let at = format!("spec.endpoints[{i}]");
                let Some(ep) = ep else {
                    out.push(Code::SE_ENDPOINT_NULL, &at, "endpoint cannot be nil");
                    continue;
                };
                if let Some(e) = static_endpoint(ep, &at, &ports, se.ports.len(), out) {
                    endpoints.push(e);
                }
            }
        }
        Some(r @ (Resolution::Dns | Resolution::DnsRoundRobin)) => {
            if se.endpoints.is_empty() {
                for (i, host) in se.hosts.iter().enumerate() {
                    if names::fqdn(host).is_ok()
                        || host == "*"
                        || names::wildcard_domain(host).is_err()
                    {
                        continue;
                    }
                    let at = format!("spec.hosts[{i}]");
                    if r == Resolution::Dns && host.starts_with("*.") {
                        out.push(
                            Code::SE_DNS_WILDCARD,
                            &at,
                            format!("resolution DNS with wildcard host {host:?} and no endpoints: Istio rejects this; the proxy resolves the name each client asks for (SNI or Host)"),
                        );
                    } else {
                        out.push(
                            Code::SE_DNS_HOST_NOT_FQDN,
                            &at,
                            format!("hosts must be FQDN or contain only prefix wildcards if no endpoints are provided for resolution mode {}: {host:?}", r.as_str()),
                        );
                    }
                }
            }
            if r == Resolution::DnsRoundRobin && se.endpoints.len() > 1 {
                out.push(
                    Code::SE_DNS_RR_MULTI_ENDPOINT,
                    "spec.endpoints",
                    "there must only be 0 or 1 endpoint for resolution mode DNS_ROUND_ROBIN",
                );
            }
            for (i, ep) in se.endpoints.iter().enumerate() {
                let at = format!("spec.endpoints[{i}]");
                let Some(ep) = ep else {
                    out.push(Code::SE_ENDPOINT_NULL, &at, "endpoint cannot be nil");
                    continue;
                };
                if let Some(e) = dns_endpoint(ep, &at, &ports, out) {
                    endpoints.push(e);
                }
            }
            // Row 34.
            if !se.addresses.is_empty()
                && se.hosts.len() > 1
                && ports.iter().any(|p| p.protocol.is_tcp())
            {
                out.push(
                    Code::SE_MULTIHOST_ADDR_TCP,
                    "spec.hosts",
                    "service entry can not have more than one host specified simultaneously with address and tcp port",
                );
            }
        }
        Some(Resolution::DynamicDns) => {
            if se.hosts.iter().any(|h| !h.starts_with('*')) {
                out.push(
                    Code::SE_DYNAMIC_DNS_INVALID,
                    "spec.hosts",
                    "host must be wildcarded for resolution mode DYNAMIC_DNS",
                );
            }
            if !se.addresses.is_empty() {
                out.push(
                    Code::SE_DYNAMIC_DNS_INVALID,
                    "spec.addresses",
                    "addresses cannot be set for resolution mode DYNAMIC_DNS",
                );
            }
            if !se.endpoints.is_empty() {
                out.push(
                    Code::SE_DYNAMIC_DNS_INVALID,
                    "spec.endpoints",
                    "endpoints cannot be set for resolution mode DYNAMIC_DNS",
                );
            }
            for (i, p) in ports.iter().enumerate() {
                if !(p.protocol.is_http() || p.protocol.is_tls()) {
                    out.push(
                        Code::SE_DYNAMIC_DNS_INVALID,
                        format!("spec.ports[{i}]"),
                        format!("only HTTP, TLS, GRPC, and HTTP2 protocols are supported for resolution mode DYNAMIC_DNS, got {}", p.protocol),
                    );
                }
            }
        }
        None => {}
    }

    // Row 37.
    if resolution.is_some_and(|r| r != Resolution::None)
        && se.hosts.len() > 1
        && let Some(p) = ports
            .iter()
            .find(|p| !(p.protocol.is_http() || p.protocol.is_tls()))
    {
        out.push(
            Code::SE_MULTIHOST_NON_HTTP_TLS,
            "spec.hosts",
            format!(
                "multiple hosts provided with non-HTTP, non-TLS ports (port {} is {})",
                p.number, p.protocol
            ),
        );
    }

    // Row 38.
    let export_to = export_to::check(
        &se.export_to,
        &ctx.mesh.default_service_export_to,
        &key.namespace,
        true,
        "spec.exportTo",
        out,
    );

    if out.errors() > errors {
        return None;
    }
    Some(ServiceEntry {
        key: key.clone(),
        hosts,
        addresses,
        ports,
        location: location?,
        resolution: resolution?,
        endpoints,
        workload_selector: se.workload_selector.is_some(),
        export_to: export_to?,
        subject_alt_names: se.subject_alt_names.clone(),
    })
}

fn enum_text(v: &EnumValue) -> String {
    match v {
        EnumValue::Name(n) => truncate(n),
        EnumValue::Number(n) => n.to_string(),
    }
}

fn resolution(v: Option<&EnumValue>, out: &mut Findings<'_>) -> Option<Resolution> {
    let r = match v {
        None => Resolution::None,
        Some(EnumValue::Name(n)) => match n.as_str() {
            "NONE" => Resolution::None,
            "STATIC" => Resolution::Static,
            "DNS" => Resolution::Dns,
            "DNS_ROUND_ROBIN" => Resolution::DnsRoundRobin,
            "DYNAMIC_DNS" => Resolution::DynamicDns,
            _ => return unsupported_resolution(v, out),
        },
        Some(EnumValue::Number(n)) => match n {
            0 => Resolution::None,
            1 => Resolution::Static,
            2 => Resolution::Dns,
            3 => Resolution::DnsRoundRobin,
            4 => Resolution::DynamicDns,
            _ => return unsupported_resolution(v, out),
        },
    };
    Some(r)
}

fn unsupported_resolution(v: Option<&EnumValue>, out: &mut Findings<'_>) -> Option<Resolution> {
    let text = v.map(enum_text).unwrap_or_default();
    out.push(
        Code::SE_RESOLUTION_UNSUPPORTED,
        "spec.resolution",
        format!("unsupported resolution type {text} (one of NONE, STATIC, DNS, DNS_ROUND_ROBIN, DYNAMIC_DNS)"),
    );
    None
}

fn limits(se: &ServiceEntrySpec, out: &mut Findings<'_>) {
    let checks = [
        ("spec.hosts", se.hosts.len(), 256),
        ("spec.addresses", se.addresses.len(), 256),
        ("spec.ports", se.ports.len(), 256),
        ("spec.endpoints", se.endpoints.len(), 4096),
    ];
    for (path, len, max) in checks {
        if len > max {
            out.push(
                Code::LIMIT_EXCEEDED,
                path,
                format!("{len} items, at most {max} allowed"),
            );
        }
    }
    for (i, a) in se.addresses.iter().enumerate() {
        if a.len() > 64 {
            out.push(
                Code::LIMIT_EXCEEDED,
                format!("spec.addresses[{i}]"),
                format!("address is {} characters, at most 64 allowed", a.len()),
            );
        }
    }
}

/// Rows 11-18 plus Decisions 1 (protocol from the name) and 2 (reserved ports).
fn ports(se: &ServiceEntrySpec, ctx: &Context<'_>, out: &mut Findings<'_>) -> Vec<Port> {
    let mut ports = Vec::with_capacity(se.ports.len());
    let mut names_seen: Vec<&str> = Vec::new();
    let mut numbers_seen: Vec<i64> = Vec::new();
    for (i, p) in se.ports.iter().enumerate() {
        let at = format!("spec.ports[{i}]");
        let Some(p) = p else {
            out.push(
                Code::SE_PORT_NULL,
                &at,
                "service entry port may not be null",
            );
            continue;
        };
        let errors = out.errors();
        if names_seen.contains(&p.name.as_str()) {
            out.push(
                Code::SE_PORT_NAME_DUP,
                format!("{at}.name"),
                format!("service entry port name {:?} already defined", p.name),
            );
        }
        names_seen.push(&p.name);
        if numbers_seen.contains(&p.number) {
            out.push(
                Code::SE_PORT_NUMBER_DUP,
                format!("{at}.number"),
                format!("service entry port {} already defined", p.number),
            );
        }
        numbers_seen.push(p.number);
        // `targetPort: 0` is protobuf's "unset".
        let target_port = match p.target_port.filter(|&t| t != 0) {
            Some(t) if !(1..=65535).contains(&t) => {
                out.push(
                    Code::SE_PORT_RANGE,
                    format!("{at}.targetPort"),
                    format!("port number {t} must be in the range 1..65535"),
                );
                None
            }
            Some(t) => u16::try_from(t).ok(),
            None => None,
        };
        let declared = Protocol::parse(&p.protocol);
        let from_name = Protocol::from_port_name(&p.name);
        // Row 15 (Istio compares the raw protocol, case-sensitively); a name that announces a
        // non-TCP protocol makes the port that protocol (Decisions 1), so it does not warn.
        if se.addresses.is_empty()
            && (p.protocol == "TCP"
                || (p.protocol.is_empty() && matches!(from_name, None | Some(Protocol::Tcp))))
        {
            out.push(
                Code::SE_TCP_NO_ADDRESS,
                &at,
                "addresses are required for ports serving TCP (or unset) protocol when IP Autoallocation is not enabled: this port captures every destination address",
            );
        }
        if !names::is_dns1123_label(&p.name) {
            out.push(
                Code::SE_PORT_NAME_INVALID,
                format!("{at}.name"),
                format!("invalid port name: {:?}", truncate(&p.name)),
            );
        }
        if declared.is_none() {
            out.push(
                Code::SE_PROTOCOL_UNSUPPORTED,
                format!("{at}.protocol"),
                format!("unsupported protocol: {}", truncate(&p.protocol)),
            );
        }
        if !(1..=65535).contains(&p.number) {
            out.push(
                Code::SE_PORT_RANGE,
                format!("{at}.number"),
                format!("port number {} must be in the range 1..65535", p.number),
            );
        }
        let protocol = match (declared, from_name) {
            (Some(Protocol::Auto), Some(named)) => named,
            (Some(explicit), Some(named)) if explicit != Protocol::Auto && explicit != named => {
                out.push(
                    Code::PORT_NAME_PROTOCOL_MISMATCH,
                    &at,
                    format!("port name {:?} announces {named} but protocol is {explicit}; {explicit} is used", p.name),
                );
                explicit
            }
            (Some(explicit), _) => explicit,
            (None, _) => Protocol::Auto,
        };
        if protocol == Protocol::Udp {
            out.push(
                Code::SE_UDP_PORT,
                &at,
                "UDP ports are accepted but never proxied",
            );
        }
        if let Ok(number) = u16::try_from(p.number)
            && ctx.reserved_ports.contains(&number)
        {
            out.push(
                Code::RESERVED_PORT,
                format!("{at}.number"),
                format!("port {number} is used by the proxy itself; the proxy will not serve it"),
            );
        }
        if out.errors() == errors
            && let Ok(number) = u16::try_from(p.number)
        {
            ports.push(Port {
                number,
                name: p.name.clone(),
                protocol,
                target_port,
            });
        }
    }
    ports
}

/// Endpoint `ports` map: keys must be declared port names, values in range (rows 28-29).
fn endpoint_ports(
    ep: &WorkloadEntry,
    at: &str,
    ports: &[Port],
    out: &mut Findings<'_>,
) -> BTreeMap<String, u16> {
    let mut map = BTreeMap::new();
    for (name, &number) in &ep.ports {
        let at = format!("{at}.ports.{name}");
        if !names::is_dns1123_label(name) {
            out.push(
                Code::SE_ENDPOINT_PORT_INVALID,
                &at,
                format!("invalid port name: {:?}", truncate(name)),
            );
            continue;
        }
        if !(1..=65535).contains(&number) {
            out.push(
                Code::SE_ENDPOINT_PORT_INVALID,
                &at,
                format!("port number {number} must be in the range 1..65535"),
            );
            continue;
        }
        if !ports.iter().any(|p| &p.name == name) {
            out.push(
                Code::SE_ENDPOINT_PORT_UNDEFINED,
                &at,
                format!("endpoint port {name} is not defined by the service entry"),
            );
            continue;
        }
        map.insert(name.clone(), number as u16);
    }
    map
}

/// Common endpoint fields: labels (row 30), weight, ignored multi-network fields.
fn endpoint_common(ep: &WorkloadEntry, at: &str, out: &mut Findings<'_>) -> u32 {
    for (k, v) in &ep.labels {
        if let Err(e) = names::label_key(k).and_then(|()| names::label_value(v)) {
            out.push(
                Code::SE_ENDPOINT_LABEL_INVALID,
                format!("{at}.labels.{k}"),
                e,
            );
        }
    }
    let network_with_address = !ep.network.is_empty() && !ep.address.is_empty();
    for (field, set) in [
        ("locality", !ep.locality.is_empty()),
        ("serviceAccount", !ep.service_account.is_empty()),
        ("network", network_with_address),
    ] {
        if set {
            out.push(
                Code::IGNORED_FIELD,
                format!("{at}.{field}"),
                "not used by an egress node; ignored",
            );
        }
    }
    match ep.weight {
        None | Some(0) => 1,
        Some(w) if (1..=i64::from(u32::MAX)).contains(&w) => w as u32,
        Some(w) => {
            out.push(
                Code::SE_ENDPOINT_PORT_INVALID,
                format!("{at}.weight"),
                format!("weight {w} must be in the range 0..4294967295"),
            );
            1
        }
    }
}

/// Rows 21-28 for STATIC.
fn static_endpoint(
    ep: &WorkloadEntry,
    at: &str,
    ports: &[Port],
    declared_ports: usize,
    out: &mut Findings<'_>,
) -> Option<Endpoint> {
    let errors = out.errors();
    let weight = endpoint_common(ep, at, out);
    let address = if ep.address.is_empty() {
        if ep.network.is_empty() {
            out.push(
                Code::SE_ENDPOINT_ADDRESS_REQUIRED,
                format!("{at}.address"),
                "address is required",
            );
        } else {
            out.push(
                Code::SE_ENDPOINT_NETWORK_ONLY,
                format!("{at}.address"),
                format!("address is unset with network {:?}", ep.network),
            );
        }
        None
    } else if let Some(path) = ep.address.strip_prefix("unix://") {
        let abstract_socket = path.starts_with('@') && path.len() > 1;
        if !abstract_socket && (!path.starts_with('/') || path.ends_with('/')) {
            out.push(
                Code::SE_UDS_PATH,
                format!("{at}.address"),
                format!("{path:?} is not an absolute path to a file"),
            );
        }
        if !ep.ports.is_empty() {
            out.push(
                Code::SE_UDS_PORTS,
                format!("{at}.ports"),
                format!("unix endpoint {} must not include ports", ep.address),
            );
        }
        if declared_ports != 1 {
            out.push(
                Code::SE_UDS_ONE_PORT,
                format!("{at}.address"),
                "exactly 1 service port required for unix endpoints",
            );
        }
        Some(EndpointAddress::Unix(path.to_owned()))
    } else {
        match ep.address.parse() {
            Ok(ip) => Some(EndpointAddress::Ip(ip)),
            Err(_) => {
                out.push(
                    Code::SE_STATIC_ENDPOINT_NOT_IP,
                    format!("{at}.address"),
                    format!(
                        "endpoint address {:?} is not a valid IP address",
                        truncate(&ep.address)
                    ),
                );
                None
            }
        }
    };
    let ep_ports = endpoint_ports(ep, at, ports, out);
    if out.errors() > errors {
        return None;
    }
    Some(Endpoint {
        address: address?,
        ports: ep_ports,
        labels: ep.labels.clone(),
        weight,
    })
}

/// Rows 28-33 for DNS and DNS_ROUND_ROBIN.
fn dns_endpoint(
    ep: &WorkloadEntry,
    at: &str,
    ports: &[Port],
    out: &mut Findings<'_>,
) -> Option<Endpoint> {
    let errors = out.errors();
    let weight = endpoint_common(ep, at, out);
    let address = if ep.address.is_empty() {
        out.push(
            Code::SE_ENDPOINT_ADDRESS_REQUIRED,
            format!("{at}.address"),
            "address is required",
        );
        None
    } else if let Ok(ip) = ep.address.parse() {
        Some(EndpointAddress::Ip(ip))
    } else if names::fqdn(&ep.address).is_ok() {
        Some(EndpointAddress::Dns(names::normalize_host(&ep.address)))
    } else {
        out.push(
            Code::SE_DNS_ENDPOINT_INVALID,
            format!("{at}.address"),
            format!(
                "endpoint address {:?} is not a valid FQDN or an IP address",
                truncate(&ep.address)
            ),
        );
        None
    };
    let ep_ports = endpoint_ports(ep, at, ports, out);
    if out.errors() > errors {
        return None;
    }
    Some(Endpoint {
        address: address?,
        ports: ep_ports,
        labels: ep.labels.clone(),
        weight,
    })
}
