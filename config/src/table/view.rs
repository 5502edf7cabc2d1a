//! A description of a compiled table for people and scripts: `dataplane routes` prints it as
//! text or JSON, and the admin `/config_dump` serves it.

use serde::Serialize;

use super::{
    CatchAll, ChainGroup, Cluster, EndpointSocket, HttpRouteConfig, RouteTable, Target, Upstream,
    VipListener, WeightedCluster,
};
use crate::spec::{HttpAction, OutboundPolicy, TlsMode};

/// The whole table.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoutesView {
    /// Proxy namespace.
    pub namespace: String,
    /// `ALLOW_ANY` or `REGISTRY_ONLY`.
    pub outbound_traffic_policy: &'static str,
    /// What unmatched traffic gets.
    pub fallthrough: &'static str,
    /// Per port.
    pub ports: Vec<PortView>,
    /// Upstream clusters.
    pub clusters: Vec<ClusterView>,
    /// Compilation notes.
    pub notes: Vec<String>,
}

/// One port.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PortView {
    /// Port number.
    pub port: u16,
    /// Listeners bound to one VIP.
    pub vips: Vec<VipView>,
    /// Wildcard-listener chains, by destination (`any` or a CIDR).
    pub chains: Vec<GroupView>,
}

/// A VIP listener.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VipView {
    /// The VIP.
    pub address: String,
    /// `tcp`, `tls` (no SNI check) or `auto`.
    pub kind: &'static str,
    /// Where it goes.
    pub target: TargetView,
    /// For auto listeners: the HTTP routes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpView>,
}

/// A group of wildcard-listener chains.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupView {
    /// `any` or a CIDR.
    pub destination: String,
    /// SNI chains, most specific first.
    pub sni: Vec<(String, TargetView)>,
    /// HTTP chain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpView>,
    /// Match-all TCP chain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TargetView>,
}

/// An HTTP route table.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpView {
    /// Virtual hosts.
    pub virtual_hosts: Vec<VirtualHostView>,
    /// Unmatched Host.
    pub catch_all: String,
}

/// A virtual host.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualHostView {
    /// `host:port`
    pub name: String,
    /// Domains.
    pub domains: Vec<String>,
    /// Default cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// VirtualService.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub virtual_service: Option<String>,
    /// Rules, summarised.
    pub routes: Vec<String>,
}

/// A target.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum TargetView {
    /// One cluster.
    Cluster(String),
    /// Weighted clusters with their share in percent.
    Weighted(Vec<(String, u32)>),
    /// VirtualService tcp rules then the service cluster.
    TcpRules {
        /// Rules: subnets and weighted clusters.
        rules: Vec<TcpRuleView>,
        /// When none matches.
        otherwise: String,
    },
}

/// A VirtualService tcp rule: destination subnets (empty: any) and weighted clusters.
#[derive(Debug, Serialize)]
pub struct TcpRuleView(pub Vec<String>, pub Vec<(String, u32)>);

/// A cluster.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterView {
    /// Name.
    pub name: String,
    /// ServiceEntry.
    pub service: String,
    /// Port protocol.
    pub protocol: &'static str,
    /// Resolution.
    pub resolution: &'static str,
    /// Upstream, in words.
    pub upstream: String,
    /// DestinationRule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination_rule: Option<String>,
    /// TLS origination mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<&'static str>,
    /// Connect timeout in milliseconds.
    pub connect_timeout_ms: u128,
}

/// Destinations with their share of traffic in percent (a single destination gets 100).
fn weighted(table: &RouteTable, list: &[WeightedCluster]) -> Vec<(String, u32)> {
    let total: u64 = list.iter().map(|w| u64::from(w.weight)).sum();
    list.iter()
        .map(|w| {
            let name = w.cluster.map_or_else(
                || format!("{} (no such service)", w.host),
                |c| table.cluster(c).name.clone(),
            );
            let share = (u64::from(w.weight) * 100)
                .checked_div(total)
                .map_or(100, |s| s as u32);
            (name, share)
        })
        .collect()
}

fn target(table: &RouteTable, t: &Target) -> TargetView {
    match t {
        Target::Cluster(c) => TargetView::Cluster(table.cluster(*c).name.clone()),
        Target::Weighted(list) => TargetView::Weighted(weighted(table, list)),
        Target::TcpRules(rules, c) => TargetView::TcpRules {
            rules: rules
                .iter()
                .map(|r| {
                    TcpRuleView(
                        r.subnets.iter().map(ToString::to_string).collect(),
                        weighted(table, &r.route),
                    )
                })
                .collect(),
            otherwise: table.cluster(*c).name.clone(),
        },
    }
}

fn http(table: &RouteTable, config: &HttpRouteConfig) -> HttpView {
    let virtual_hosts = config
        .virtual_hosts
        .iter()
        .map(|vh| VirtualHostView {
            name: vh.name.clone(),
            domains: vh.domains.clone(),
            cluster: vh.cluster.map(|c| table.cluster(c).name.clone()),
            virtual_service: vh.virtual_service.as_ref().map(ToString::to_string),
            routes: vh
                .routes
                .iter()
                .flatten()
                .map(|r| {
                    let when = if r.rule.matches.is_empty() {
                        "any request".to_owned()
                    } else {
                        format!("{} match block(s)", r.rule.matches.len())
                    };
                    let what = match &r.rule.action {
                        HttpAction::Route(_) => {
                            format!("route to {}", shares(&weighted(table, &r.destinations)))
                        }
                        HttpAction::Redirect { code, .. } => format!("redirect {code}"),
                        HttpAction::DirectResponse { status, .. } => {
                            format!("direct response {status}")
                        }
                    };
                    let mut extra = String::new();
                    if let Some(t) = r.rule.timeout {
                        extra += &format!(", timeout {}ms", t.as_millis());
                    }
                    if let Some(f) = &r.rule.fault {
                        if let Some((d, p)) = f.delay {
                            extra += &format!(", delay {}ms at {p}%", d.as_millis());
                        }
                        if let Some((a, p)) = &f.abort {
                            extra += &format!(", abort {a:?} at {p}%");
                        }
                    }
                    format!("{when} -> {what}{extra}")
                })
                .collect(),
        })
        .collect();
    let catch_all = match config.catch_all {
        CatchAll::AllowAny => "passthrough to the original destination (allow_any)".to_owned(),
        CatchAll::BlockAll => "502 (block_all)".to_owned(),
        CatchAll::VirtualHost(_) => "the service (any Host)".to_owned(),
    };
    HttpView {
        virtual_hosts,
        catch_all,
    }
}

fn group(table: &RouteTable, destination: String, g: &ChainGroup) -> GroupView {
    GroupView {
        destination,
        sni: g
            .sni
            .entries()
            .into_iter()
            .map(|(name, t)| (name, target(table, t)))
            .collect(),
        http: g.http.map(|id| http(table, table.http_config(id))),
        tcp: g.tcp.as_ref().map(|t| target(table, t)),
    }
}

fn upstream(u: &Upstream) -> String {
    match u {
        Upstream::OriginalDestination { port: None } => "original destination".into(),
        Upstream::OriginalDestination { port: Some(p) } => {
            format!("original destination IP, port {p}")
        }
        Upstream::Static(eps) => eps
            .iter()
            .map(|e| match &e.address {
                EndpointSocket::Inet(a) if e.weight != 1 => format!("{a} (weight {})", e.weight),
                EndpointSocket::Inet(a) => a.to_string(),
                EndpointSocket::Unix(p) => format!("unix:{p}"),
            })
            .collect::<Vec<_>>()
            .join(", "),
        Upstream::Dns {
            targets,
            first_address_only,
        } => {
            let names: Vec<String> = targets
                .iter()
                .map(|t| format!("{}:{}", t.name, t.port))
                .collect();
            let how = if *first_address_only {
                "first address"
            } else {
                "every address"
            };
            format!("resolve {} ({how})", names.join(", "))
        }
        Upstream::RequestedName { port, .. } => {
            format!("resolve the requested name (SNI/Host), port {port}")
        }
        Upstream::Empty => "no endpoints (connections fail)".into(),
    }
}

fn cluster(c: &Cluster) -> ClusterView {
    ClusterView {
        name: c.name.clone(),
        service: c.service.key.to_string(),
        protocol: c.protocol.as_str(),
        resolution: c.resolution.as_str(),
        upstream: upstream(&c.upstream),
        destination_rule: c.destination_rule.as_ref().map(|d| d.key.to_string()),
        tls: c.policy.tls.as_ref().map(|t| match t.mode {
            TlsMode::Disable => "DISABLE",
            TlsMode::Simple => "SIMPLE",
            TlsMode::Mutual => "MUTUAL",
            TlsMode::IstioMutual => "ISTIO_MUTUAL",
        }),
        connect_timeout_ms: c.connect_timeout.as_millis(),
    }
}

impl RouteTable {
    /// Describe the table.
    pub fn view(&self) -> RoutesView {
        let mut ports = Vec::new();
        for number in self.ports() {
            let p = &self.ports[&number];
            let mut vips: Vec<VipView> = p
                .vips
                .iter()
                .map(|(ip, l)| {
                    let (kind, t, h) = match l {
                        VipListener::Tcp(t) => ("tcp", t, None),
                        VipListener::Tls(t) => ("tls", t, None),
                        VipListener::Auto { tcp, http: h } => {
                            ("auto", tcp, Some(http(self, self.http_config(*h))))
                        }
                    };
                    VipView {
                        address: ip.to_string(),
                        kind,
                        target: target(self, t),
                        http: h,
                    }
                })
                .collect();
            vips.sort_by(|a, b| a.address.cmp(&b.address));
            let mut chains: Vec<GroupView> = p
                .cidr_groups
                .entries()
                .into_iter()
                .map(|(net, g)| group(self, net.to_string(), &p.groups[*g as usize]))
                .collect();
            let any = &p.groups[p.any as usize];
            if !any.sni.is_empty() || any.http.is_some() || any.tcp.is_some() {
                chains.push(group(self, "any".into(), any));
            }
            ports.push(PortView {
                port: number,
                vips,
                chains,
            });
        }
        RoutesView {
            namespace: self.namespace.clone(),
            outbound_traffic_policy: self.policy.as_str(),
            fallthrough: match self.policy {
                OutboundPolicy::AllowAny => "passthrough to the original destination",
                OutboundPolicy::RegistryOnly => "closed",
            },
            ports,
            clusters: self.clusters.iter().map(cluster).collect(),
            notes: self.notes.clone(),
        }
    }
}

fn shares(list: &[(String, u32)]) -> String {
    list.iter()
        .map(|(c, w)| format!("{c} {w}%"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn target_text(t: &TargetView) -> String {
    match t {
        TargetView::Cluster(c) => c.clone(),
        TargetView::Weighted(list) => shares(list),
        TargetView::TcpRules { rules, otherwise } => {
            let mut parts: Vec<String> = rules
                .iter()
                .map(|TcpRuleView(nets, list)| {
                    let to = shares(list);
                    if nets.is_empty() {
                        to
                    } else {
                        format!("[{}] {to}", nets.join(", "))
                    }
                })
                .collect();
            parts.push(format!("else {otherwise}"));
            parts.join("; ")
        }
    }
}

fn http_text(out: &mut String, indent: &str, h: &HttpView) {
    for vh in &h.virtual_hosts {
        let to = vh
            .cluster
            .clone()
            .unwrap_or_else(|| "(VirtualService routes)".into());
        out.push_str(&format!(
            "{indent}host {:<32} -> {to}\n",
            vh.domains.join(", ")
        ));
        if let Some(vs) = &vh.virtual_service {
            out.push_str(&format!("{indent}    {vs}:\n"));
        }
        for r in &vh.routes {
            out.push_str(&format!("{indent}    {r}\n"));
        }
    }
    out.push_str(&format!(
        "{indent}other hosts                           -> {}\n",
        h.catch_all
    ));
}

/// The table as text, for `dataplane routes`.
pub fn render_text(v: &RoutesView) -> String {
    let mut out = format!(
        "namespace {}, outboundTrafficPolicy {}: unmatched traffic is {}\n",
        v.namespace, v.outbound_traffic_policy, v.fallthrough
    );
    for p in &v.ports {
        out.push_str(&format!("\nport {}\n", p.port));
        for vip in &p.vips {
            out.push_str(&format!(
                "  to {:<36} {:<4} -> {}\n",
                vip.address,
                vip.kind,
                target_text(&vip.target)
            ));
            if let Some(h) = &vip.http {
                http_text(&mut out, "      http ", h);
            }
        }
        if !p.chains.iter().any(|g| g.destination == "any") {
            out.push_str(&format!(
                "  {:<39} -> {}\n",
                "any other address", v.fallthrough
            ));
        }
        for g in &p.chains {
            let to = if g.destination == "any" {
                "any other address".to_owned()
            } else {
                format!("to {}", g.destination)
            };
            for (name, t) in &g.sni {
                out.push_str(&format!("  {to:<39} sni {name} -> {}\n", target_text(t)));
            }
            if let Some(h) = &g.http {
                out.push_str(&format!("  {to:<39} http:\n"));
                http_text(&mut out, "      ", h);
            }
            match &g.tcp {
                Some(t) => out.push_str(&format!("  {to:<39} other bytes -> {}\n", target_text(t))),
                None => out.push_str(&format!("  {to:<39} other bytes -> {}\n", v.fallthrough)),
            }
        }
    }
    out.push_str(&format!("\nany other port -> {}\n", v.fallthrough));
    if !v.clusters.is_empty() {
        out.push_str("\nclusters\n");
        for c in &v.clusters {
            let mut extra = String::new();
            if let Some(dr) = &c.destination_rule {
                extra += &format!(" [DestinationRule {dr}");
                if let Some(t) = c.tls {
                    extra += &format!(", tls {t}");
                }
                extra += "]";
            }
            out.push_str(&format!(
                "  {} ({} {}): {}{extra}\n",
                c.name, c.protocol, c.resolution, c.upstream
            ));
        }
    }
    if !v.notes.is_empty() {
        out.push_str("\nnotes\n");
        for n in &v.notes {
            out.push_str(&format!("  {n}\n"));
        }
    }
    out
}
