//! VirtualService validation (spec §9): Istio's `ValidateVirtualService` rules for the parts an
//! egress proxy serves, and typed routes for the L4 path; HTTP rules are in `http_route`.

use super::names::{self, truncate};
use super::{Context, export_to};
use crate::finding::{Code, Findings, ObjectKey};
use crate::host;
use crate::model::{Destination as WireDestination, VirtualServiceSpec};
use crate::spec::{Destination, HttpRoute, L4Match, TcpRoute, TlsMatch, TlsRoute, VirtualService};

/// Validate one VirtualService. `Ok(None)` when valid but not bound to `mesh`; `Err` when
/// invalid (every error reported).
pub(super) fn validate(
    key: &ObjectKey,
    vs: &VirtualServiceSpec,
    ctx: &Context<'_>,
    out: &mut Findings<'_>,
) -> Result<Option<VirtualService>, ()> {
    let errors = out.errors();
    let for_mesh = vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh");
    if vs.hosts.is_empty() {
        out.push(
            Code::VS_NO_HOSTS,
            "spec.hosts",
            "virtual service must have at least one host",
        );
    }
    let mut hosts: Vec<String> = Vec::new();
    for (i, h) in vs.hosts.iter().enumerate() {
        let at = format!("spec.hosts[{i}]");
        if h == "*" {
            if for_mesh {
                out.push(
                    Code::VS_HOST_FULL_WILDCARD,
                    &at,
                    "wildcard host * is not allowed for virtual services bound to the mesh gateway",
                );
            }
            continue;
        }
        if h.parse::<std::net::IpAddr>().is_err()
            && let Err(e) = names::wildcard_domain(h)
        {
            out.push(Code::VS_HOST_INVALID, &at, e);
            continue;
        }
        let h = names::normalize_host(h);
        if let Some(other) = hosts.iter().find(|o| host::matches(o, &h)) {
            out.push(
                Code::VS_HOST_DUP,
                &at,
                format!("duplicate hosts in virtual service: {other} & {h}"),
            );
        }
        hosts.push(h);
    }
    if vs.http.is_empty() && vs.tls.is_empty() && vs.tcp.is_empty() {
        out.push(
            Code::VS_NO_ROUTES,
            "spec",
            "http, tcp or tls must be provided in virtual service",
        );
    }
    let http: Vec<HttpRoute> = vs
        .http
        .iter()
        .enumerate()
        .filter_map(|(i, r)| super::http_route::http_route(r, &format!("spec.http[{i}]"), ctx, out))
        .collect();
    let tls: Vec<TlsRoute> = vs
        .tls
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let at = format!("spec.tls[{i}]");
            if r.matches.is_empty() {
                out.push(Code::VS_TLS_MATCH_REQUIRED, &at, "TLS route must have at least one match condition");
            }
            if r.route.is_empty() {
                out.push(Code::VS_TLS_ROUTE_REQUIRED, &at, "TLS route is required");
            }
            let mut matches = Vec::new();
            for (j, m) in r.matches.iter().enumerate() {
                let at = format!("{at}.match[{j}]");
                if m.sni_hosts.is_empty() {
                    out.push(Code::VS_TLS_SNI_REQUIRED, &at, "TLS match must have at least one SNI host");
                }
                let mut sni_hosts = Vec::new();
                for (k, sni) in m.sni_hosts.iter().enumerate() {
                    let at = format!("{at}.sniHosts[{k}]");
                    if sni.parse::<std::net::IpAddr>().is_ok() {
                        out.push(Code::VS_TLS_SNI_IP, &at, format!("using an IP address {sni:?} as SNI host is not supported and never matches"));
                        continue;
                    }
                    let sni = names::normalize_host(sni);
                    if !hosts.iter().any(|h| host::subset_of(&sni, h)) {
                        out.push(Code::VS_TLS_SNI_NOT_SUBSET, &at, format!("SNI host {sni:?} is not a compatible subset of any of the virtual service hosts"));
                    }
                    sni_hosts.push(sni);
                }
                let subnets = subnets(&m.destination_subnets, &at, out);
                let port = port(m.port, &format!("{at}.port"), out);
                let applies = source_applies(&m.source_labels, &m.source_namespace, &m.gateways, &at, ctx, out);
                if applies {
                    matches.push(TlsMatch { sni_hosts, destination_subnets: subnets, port });
                }
            }
            let route = l4_destinations(r.route.iter().map(|d| (d.destination.as_ref(), d.weight)), &at, out);
            TlsRoute { matches, route }
        })
        .collect();
    let tcp: Vec<TcpRoute> = vs
        .tcp
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let at = format!("spec.tcp[{i}]");
            if r.route.is_empty() {
                out.push(Code::VS_TCP_ROUTE_REQUIRED, &at, "TCP route is required");
            }
            let mut matches = Vec::new();
            for (j, m) in r.matches.iter().enumerate() {
                let at = format!("{at}.match[{j}]");
                let subnets = subnets(&m.destination_subnets, &at, out);
                let port = port(m.port, &format!("{at}.port"), out);
                if !m.source_subnet.is_empty() {
                    out.push(Code::IGNORED_FIELD, format!("{at}.sourceSubnet"), "source subnets are not matched by the egress proxy; the condition is ignored");
                }
                if source_applies(&m.source_labels, &m.source_namespace, &m.gateways, &at, ctx, out) {
                    matches.push(L4Match { destination_subnets: subnets, port });
                }
            }
            let route = l4_destinations(r.route.iter().map(|d| (d.destination.as_ref(), d.weight)), &at, out);
            TcpRoute { matches, route }
        })
        .collect();
    let export_to = export_to::check(
        &vs.export_to,
        &ctx.mesh.default_virtual_service_export_to,
        &key.namespace,
        false,
        "spec.exportTo",
        out,
    );
    if out.errors() > errors {
        return Err(());
    }
    if !for_mesh {
        out.push(
            Code::VS_NOT_FOR_MESH,
            "spec.gateways",
            "bound only to gateways other than mesh: does not apply to this proxy",
        );
        return Ok(None);
    }
    Ok(Some(VirtualService {
        key: key.clone(),
        hosts,
        http,
        tls,
        tcp,
        export_to: export_to.ok_or(())?,
    }))
}

/// Whether a match block with these source conditions applies to this proxy, which has no
/// workload labels and serves `ctx.namespace`.
pub(super) fn source_applies(
    labels: &std::collections::BTreeMap<String, String>,
    source_namespace: &str,
    gateways: &[String],
    at: &str,
    ctx: &Context<'_>,
    out: &mut Findings<'_>,
) -> bool {
    if !labels.is_empty() {
        out.push(
            Code::IGNORED_FIELD,
            format!("{at}.sourceLabels"),
            "the egress proxy has no workload labels: this match block never applies",
        );
        return false;
    }
    if !gateways.is_empty() && !gateways.iter().any(|g| g == "mesh") {
        return false;
    }
    source_namespace.is_empty() || source_namespace == ctx.namespace
}

pub(super) fn port(p: Option<i64>, at: &str, out: &mut Findings<'_>) -> Option<u16> {
    match p {
        None | Some(0) => None,
        Some(n) if (1..=65535).contains(&n) => Some(n as u16),
        Some(n) => {
            out.push(
                Code::VS_PORT_RANGE,
                at,
                format!("port number {n} must be in the range 1..65535"),
            );
            None
        }
    }
}

fn subnets(list: &[String], at: &str, out: &mut Findings<'_>) -> Vec<ipnet::IpNet> {
    list.iter()
        .enumerate()
        .filter_map(|(i, s)| match names::subnet(s) {
            Ok(net) => Some(net),
            Err(e) => {
                out.push(
                    Code::VS_SUBNET_INVALID,
                    format!("{at}.destinationSubnets[{i}]"),
                    e,
                );
                None
            }
        })
        .collect()
}

pub(super) fn destination(
    d: Option<&WireDestination>,
    weight: i64,
    at: &str,
    out: &mut Findings<'_>,
) -> Option<Destination> {
    let Some(d) = d else {
        out.push(
            Code::VS_DESTINATION_REQUIRED,
            format!("{at}.destination"),
            "destination is required",
        );
        return None;
    };
    let errors = out.errors();
    if d.host.is_empty() || d.host.contains('*') {
        out.push(
            Code::VS_DESTINATION_HOST_INVALID,
            format!("{at}.destination.host"),
            format!(
                "destination host {:?} must be a service host without wildcards",
                truncate(&d.host)
            ),
        );
    } else if let Err(e) = names::wildcard_domain(&d.host) {
        out.push(
            Code::VS_DESTINATION_HOST_INVALID,
            format!("{at}.destination.host"),
            e,
        );
    }
    if !d.subset.is_empty() && !names::is_dns1123_label(&d.subset) {
        out.push(
            Code::VS_DESTINATION_HOST_INVALID,
            format!("{at}.destination.subset"),
            format!(
                "subset name {:?} is not a valid DNS 1123 label",
                truncate(&d.subset)
            ),
        );
    }
    let port = port(
        d.port.as_ref().map(|p| p.number),
        &format!("{at}.destination.port.number"),
        out,
    );
    if weight < 0 {
        out.push(
            Code::VS_WEIGHT_NEGATIVE,
            format!("{at}.weight"),
            "weight must not be negative",
        );
    }
    if out.errors() > errors {
        return None;
    }
    Some(Destination {
        host: names::normalize_host(&d.host),
        subset: (!d.subset.is_empty()).then(|| d.subset.clone()),
        port,
        weight: u32::try_from(weight).unwrap_or(u32::MAX),
    })
}

pub(super) fn check_total_weight(count: usize, total: u64, at: &str, out: &mut Findings<'_>) {
    if count > 1 && total == 0 {
        out.push(
            Code::VS_WEIGHT_TOTAL_ZERO,
            format!("{at}.route"),
            "total destination weight = 0",
        );
    }
}

fn l4_destinations<'a>(
    routes: impl Iterator<Item = (Option<&'a WireDestination>, i64)>,
    at: &str,
    out: &mut Findings<'_>,
) -> Vec<Destination> {
    let mut list = Vec::new();
    let mut count = 0;
    for (i, (d, weight)) in routes.enumerate() {
        count += 1;
        if let Some(d) = destination(d, weight, &format!("{at}.route[{i}]"), out) {
            list.push(d);
        }
    }
    check_total_weight(
        count,
        list.iter().map(|d| u64::from(d.weight)).sum(),
        at,
        out,
    );
    list
}
