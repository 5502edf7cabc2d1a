//! Compilation: a validated [`Registry`] -> a [`RouteTable`] for one proxy namespace.
//!
//! Steps (spec sections in brackets):
//! 1. ServiceEntries visible to the namespace (§8), oldest first (§7.2: age, then name, then
//!    namespace);
//! 2. one **service view** per host: the entry from the proxy's own namespace if there is one,
//!    else the oldest; later entries of the same namespace are merged when compatible (ports
//!    unioned, first definition wins; endpoints pooled) and otherwise ignored (§7.2);
//! 3. VirtualServices (oldest first) and DestinationRules (proxy namespace, then the service's,
//!    then the root namespace; most specific host) associated with each host (§7.2, §9, §10);
//! 4. clusters per host, port and subset, with upstream port selection (§2.3);
//! 5. listeners per port by protocol class and address kind (§5.1), VirtualService tls rules
//!    ahead of the services' own SNI chains (§5.3), HTTP route tables with VirtualService
//!    virtual hosts ahead of the services' default ones (§5.2, §9.2).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use rustc_hash::FxHashMap;

use super::rule_index::RuleIndex;
use super::{
    CatchAll, ChainGroup, Cluster, ClusterId, CompiledHttpRoute, DnsTarget, EndpointSocket,
    HttpConfigId, HttpRouteConfig, PortRoutes, RouteTable, StaticEndpoint, Target, TcpRule,
    Upstream, VipListener, VirtualHost, WeightedCluster,
};
use crate::finding::ObjectKey;
use crate::host;
use crate::protocol::{Protocol, ProtocolClass};
use crate::spec::{
    Address, Destination, DestinationRule, Endpoint, EndpointAddress, HttpAction, OutboundPolicy,
    PolicySettings, Port, Resolution, ServiceEntry, VirtualService,
};
use crate::validate::Registry;

/// Placeholder for "this group has an HTTP chain", replaced by the port's shared HTTP route
/// table once every service is known.
const PENDING_HTTP: HttpConfigId = HttpConfigId(u32::MAX);

/// What compilation needs besides the registry.
pub struct CompileOptions<'a> {
    /// The namespace the proxy serves (visibility, DestinationRule lookup, precedence).
    pub namespace: &'a str,
    /// Ports the proxy does not serve (Decisions 2).
    pub reserved_ports: &'a [u16],
    /// Age of an object (the reload in which it first appeared); `None`: all equal.
    pub age: Option<&'a dyn Fn(&ObjectKey) -> u64>,
}

/// One host as the proxy serves it (Istio's per-host service view). Its lists are the
/// primary entry's own unless other entries were merged into them.
struct ServiceView<'r> {
    host: &'r str,
    primary: &'r Arc<ServiceEntry>,
    resolution: Resolution,
    addresses: Cow<'r, [Address]>,
    ports: Cow<'r, [Port]>,
    endpoints: Cow<'r, [Endpoint]>,
    workload_selector: bool,
    dr: Option<&'r Arc<DestinationRule>>,
}

struct Builder<'r, 'o> {
    opts: &'o CompileOptions<'o>,
    reg: &'r Registry,
    views: Vec<ServiceView<'r>>,
    by_host: FxHashMap<&'r str, usize>,
    vss: Vec<&'r VirtualService>,
    /// Which VirtualService (index in `vss`) applies to a host: the first whose hosts match.
    vs_index: host::FirstMatch<'r>,
    /// Which DestinationRule applies to a host.
    rules: RuleIndex<'r>,
    clusters: Vec<Cluster>,
    cluster_index: FxHashMap<(usize, u16, Option<String>), ClusterId>,
    /// The policy of every cluster without one.
    no_policy: Arc<PolicySettings>,
    http_configs: Vec<HttpRouteConfig>,
    ports: BTreeMap<u16, PortBuilder>,
    notes: Vec<String>,
}

struct PortBuilder {
    routes: PortRoutes,
    cidr_index: FxHashMap<IpNet, u32>,
    /// Services (view index) served by the shared HTTP route table of this port.
    http_services: Vec<usize>,
}

impl PortBuilder {
    fn new() -> Self {
        let routes = PortRoutes {
            groups: vec![ChainGroup::default()],
            any: 0,
            ..PortRoutes::default()
        };
        Self {
            routes,
            cidr_index: FxHashMap::default(),
            http_services: Vec::new(),
        }
    }

    fn group(&mut self, cidr: Option<IpNet>) -> &mut ChainGroup {
        let index = match cidr {
            None => self.routes.any,
            Some(net) => *self.cidr_index.entry(net).or_insert_with(|| {
                let i = self.routes.groups.len() as u32;
                self.routes.groups.push(ChainGroup::default());
                self.routes.cidr_groups.insert(net, i);
                i
            }),
        };
        &mut self.routes.groups[index as usize]
    }
}

/// Compile `reg` for the proxy namespace in `opts`.
pub fn compile(reg: &Registry, opts: &CompileOptions<'_>) -> RouteTable {
    let age = |k: &ObjectKey| opts.age.map_or(0, |f| f(k));
    // Oldest first, then by name and namespace. The key is computed once per object: the age
    // is a map lookup, too dear for every comparison of a 10,000-entry sort. A name's first
    // eight bytes as a number come before the name itself: the same order (see
    // `name_prefix`), and most comparisons end there without comparing strings.
    fn by_age<'r, T>(
        list: &mut [&'r T],
        key: impl Fn(&'r T) -> &'r ObjectKey,
        age: impl Fn(&ObjectKey) -> u64,
    ) {
        list.sort_by_cached_key(|item| {
            let k = key(item);
            (
                age(k),
                name_prefix(&k.name),
                k.name.as_str(),
                k.namespace.as_str(),
            )
        });
    }
    let ns = opts.namespace;
    let mut ses: Vec<&Arc<ServiceEntry>> = reg
        .service_entries
        .iter()
        .filter(|s| s.export_to.visible_to(ns))
        .collect();
    by_age(&mut ses, |s| &s.key, age);
    let mut vss: Vec<&VirtualService> = reg
        .virtual_services
        .iter()
        .map(AsRef::as_ref)
        .filter(|v: &&VirtualService| v.export_to.visible_to(ns))
        .collect();
    by_age(&mut vss, |v| &v.key, age);
    let mut drs: Vec<&Arc<DestinationRule>> = reg.destination_rules.iter().collect();
    by_age(&mut drs, |d| &d.key, age);
    let rules = RuleIndex::new(&drs, ns);

    let vs_index = host::FirstMatch::new(vss.iter().map(|vs| vs.hosts.iter().map(String::as_str)));
    let service_ports = ses.iter().map(|s| s.hosts.len() * s.ports.len()).sum();
    let mut b = Builder {
        opts,
        reg,
        views: Vec::new(),
        by_host: FxHashMap::default(),
        vss,
        vs_index,
        rules,
        // One cluster per service port at least: reserved, since growing a vector or a map of
        // 10,000 clusters copies it over and over (a measurable part of a reload).
        clusters: Vec::with_capacity(service_ports),
        cluster_index: FxHashMap::with_capacity_and_hasher(service_ports, Default::default()),
        no_policy: Arc::default(),
        http_configs: Vec::new(),
        ports: BTreeMap::new(),
        notes: Vec::new(),
    };
    b.service_views(&ses);
    b.listeners();
    b.finish()
}

/// Istio's cluster name, `outbound|port|subset|host`, written into one allocation of its size
/// (a slice `concat` costs twice as much, and a reload names every cluster).
fn cluster_name(port: u16, subset: &str, host: &str) -> String {
    let mut digits = itoa::Buffer::new();
    let port = digits.format(port);
    let mut name =
        String::with_capacity("outbound|||".len() + port.len() + subset.len() + host.len());
    name.push_str("outbound|");
    name.push_str(port);
    name.push('|');
    name.push_str(subset);
    name.push('|');
    name.push_str(host);
    name
}

/// The first eight bytes of `name` as a big-endian number, zero-padded: ordering names by it
/// and then by the names themselves is ordering them by the names (a name that sorts before
/// another never has a larger prefix).
pub(super) fn name_prefix(name: &str) -> u64 {
    let mut bytes = [0u8; 8];
    let n = name.len().min(8);
    bytes[..n].copy_from_slice(&name.as_bytes()[..n]);
    u64::from_be_bytes(bytes)
}

fn mergeable(a: &ServiceEntry, b: &ServiceEntry) -> bool {
    a.key.namespace == b.key.namespace
        && a.resolution == b.resolution
        && a.workload_selector == b.workload_selector
        && a.export_to == b.export_to
}

impl<'r> Builder<'r, '_> {
    fn service_views(&mut self, ses: &[&'r Arc<ServiceEntry>]) {
        // Each host with the entries that name it, oldest first. Most hosts have one entry:
        // the others are a list of their own, allocated only when there are any.
        type Entry<'r> = &'r Arc<ServiceEntry>;
        let mut hosts: Vec<(&'r str, Entry<'r>, Vec<Entry<'r>>)> = Vec::new();
        let mut index: FxHashMap<&str, usize> = FxHashMap::default();
        index.reserve(ses.len());
        for se in ses {
            for h in &se.hosts {
                let i = *index.entry(h.as_str()).or_insert_with(|| {
                    hosts.push((h.as_str(), se, Vec::new()));
                    hosts.len() - 1
                });
                let (_, first, others) = &mut hosts[i];
                if !std::ptr::eq(*first, *se) && !others.iter().any(|s| std::ptr::eq(*s, *se)) {
                    others.push(se);
                }
            }
        }
        self.views.reserve(hosts.len());
        self.by_host.reserve(hosts.len());
        for (host, first, others) in hosts {
            let several: Vec<&Arc<ServiceEntry>>;
            let list: &[&Arc<ServiceEntry>] = if others.is_empty() {
                std::slice::from_ref(&first)
            } else {
                several = std::iter::once(first).chain(others).collect();
                &several
            };
            let ns = if list.iter().any(|s| s.key.namespace == self.opts.namespace) {
                self.opts.namespace
            } else {
                list[0].key.namespace.as_str()
            };
            let primary = list
                .iter()
                .find(|s| s.key.namespace == ns)
                .copied()
                .unwrap_or(list[0]);
            let mut view = ServiceView {
                host,
                primary,
                resolution: primary.resolution,
                addresses: Cow::Borrowed(&primary.addresses),
                ports: Cow::Borrowed(&primary.ports),
                endpoints: Cow::Borrowed(&primary.endpoints),
                workload_selector: primary.workload_selector,
                dr: None,
            };
            for se in list.iter().filter(|s| !std::ptr::eq(**s, primary)) {
                if se.key.namespace != ns {
                    self.notes.push(format!(
                        "{}: host {host} is served by {} (the proxy's namespace, or the oldest)",
                        se.key, primary.key
                    ));
                } else if mergeable(primary, se) {
                    for p in &se.ports {
                        if !view.ports.iter().any(|q| q.number == p.number) {
                            view.ports.to_mut().push(p.clone());
                        }
                    }
                    for a in &se.addresses {
                        if !view.addresses.contains(a) {
                            view.addresses.to_mut().push(*a);
                        }
                    }
                    if view.resolution != Resolution::DnsRoundRobin {
                        view.endpoints.to_mut().extend(se.endpoints.iter().cloned());
                    }
                    self.notes.push(format!(
                        "{}: merged into {} for host {host} (ports unioned, endpoints pooled)",
                        se.key, primary.key
                    ));
                } else {
                    self.notes.push(format!(
                        "{}: ignored for host {host}: {} is older and they cannot be merged",
                        se.key, primary.key
                    ));
                }
            }
            view.dr = self.destination_rule(host, &primary.key.namespace);
            self.by_host.insert(view.host, self.views.len());
            self.views.push(view);
        }
    }

    /// DestinationRule lookup (spec §7.2): the proxy's namespace, then the service's, then the
    /// root namespace; inside one, an exact host beats the longest wildcard; ties: oldest.
    fn destination_rule(&self, host: &str, service_ns: &str) -> Option<&'r Arc<DestinationRule>> {
        let root = self.reg.mesh.root_namespace.as_str();
        self.rules.find(host, self.opts.namespace, service_ns, root)
    }

    fn virtual_service_for(&self, host: &str) -> Option<&'r VirtualService> {
        self.vs_index.first(host).map(|i| self.vss[i])
    }

    fn cluster(&mut self, view: usize, port: u16, subset: Option<&str>) -> Option<ClusterId> {
        let key = (view, port, subset.map(str::to_owned));
        if let Some(id) = self.cluster_index.get(&key) {
            return Some(*id);
        }
        let v = &self.views[view];
        let (host, dr) = (v.host, v.dr);
        let pi = v.ports.iter().position(|p| p.number == port)?;
        let mut policy = dr
            .and_then(|d| d.traffic_policy.as_ref())
            .map(|tp| tp.for_port(port))
            .unwrap_or_default();
        let mut labels = None;
        if let Some(name) = subset {
            let found = dr.and_then(|d| d.subsets.iter().find(|s| s.name == name));
            let Some(s) = found else {
                self.notes.push(format!(
                    "subset {name} of {host} is not defined by a DestinationRule: requests to it fail"
                ));
                return None;
            };
            labels = Some(&s.labels);
            if let Some(tp) = &s.traffic_policy {
                overlay(&mut policy, tp.for_port(port));
            }
        }
        let v = &self.views[view];
        let p = &v.ports[pi];
        let upstream = upstream(v, p, labels);
        let connect_timeout = policy
            .connection_pool
            .as_ref()
            .and_then(|c| c.connect_timeout)
            .unwrap_or(self.reg.mesh.connect_timeout);
        // Most clusters have no policy: they share one.
        let policy = if policy == PolicySettings::default() {
            Arc::clone(&self.no_policy)
        } else {
            Arc::new(policy)
        };
        let id = ClusterId(self.clusters.len() as u32);
        self.clusters.push(Cluster {
            name: cluster_name(port, subset.unwrap_or_default(), v.host),
            service: Arc::clone(v.primary),
            port,
            protocol: p.protocol,
            resolution: v.resolution,
            upstream,
            policy,
            destination_rule: v.dr.map(Arc::clone),
            connect_timeout,
        });
        self.cluster_index.insert(key, id);
        Some(id)
    }

    /// Resolve a route destination to a cluster: explicit port > the service's only port >
    /// the listener port (spec §9.2).
    fn destination(&mut self, d: &Destination, listener_port: u16) -> WeightedCluster {
        let cluster = self.by_host.get(d.host.as_str()).copied().and_then(|view| {
            let ports = &self.views[view].ports;
            let port = d
                .port
                .or_else(|| (ports.len() == 1).then(|| ports[0].number))
                .unwrap_or(listener_port);
            self.cluster(view, port, d.subset.as_deref())
        });
        if cluster.is_none() {
            self.notes.push(format!(
                "destination {}{} is not a known service port: traffic to it fails",
                d.host,
                d.port.map(|p| format!(":{p}")).unwrap_or_default()
            ));
        }
        WeightedCluster {
            cluster,
            weight: d.weight,
            host: d.host.clone(),
        }
    }

    fn weighted(&mut self, route: &[Destination], listener_port: u16) -> Box<[WeightedCluster]> {
        let keep_zero = route.len() == 1;
        route
            .iter()
            .filter(|d| keep_zero || d.weight > 0)
            .map(|d| self.destination(d, listener_port))
            .collect()
    }

    /// The L4 target of a service port: its cluster, or the VirtualService tcp rules for it.
    fn tcp_target(&mut self, view: usize, port: u16, cluster: ClusterId) -> Target {
        let host = self.views[view].host;
        let Some(vs) = self.virtual_service_for(host) else {
            return Target::Cluster(cluster);
        };
        let mut rules = Vec::new();
        for r in &vs.tcp {
            let applies =
                r.matches.is_empty() || r.matches.iter().any(|m| m.port.is_none_or(|p| p == port));
            if !applies {
                continue;
            }
            let subnets: Vec<IpNet> = r
                .matches
                .iter()
                .filter(|m| m.port.is_none_or(|p| p == port))
                .flat_map(|m| m.destination_subnets.iter().copied())
                .collect();
            let catch_all = r.matches.is_empty()
                || r.matches
                    .iter()
                    .any(|m| m.port.is_none_or(|p| p == port) && m.destination_subnets.is_empty());
            let route = self.weighted(&r.route, port);
            rules.push(TcpRule {
                subnets: if catch_all { Vec::new() } else { subnets },
                route,
            });
            if catch_all {
                break;
            }
        }
        if rules.is_empty() {
            return Target::Cluster(cluster);
        }
        if rules.len() == 1 && rules[0].subnets.is_empty() {
            let route = rules.remove(0).route;
            return Target::Weighted(route);
        }
        Target::TcpRules(rules.into_boxed_slice(), cluster)
    }

    fn port(&mut self, number: u16) -> &mut PortBuilder {
        self.ports.entry(number).or_insert_with(PortBuilder::new)
    }

    fn listeners(&mut self) {
        // VirtualService tls rules first: they take precedence over the services' SNI chains.
        for vi in 0..self.views.len() {
            let host = self.views[vi].host;
            let Some(vs) = self.virtual_service_for(host) else {
                continue;
            };
            let tls_ports: Vec<u16> = self.views[vi]
                .ports
                .iter()
                .filter(|p| p.protocol.class() == ProtocolClass::Tls && self.serves(p))
                .map(|p| p.number)
                .collect();
            for port in tls_ports {
                for r in &vs.tls {
                    for m in r
                        .matches
                        .iter()
                        .filter(|m| m.port.is_none_or(|p| p == port))
                    {
                        let route = self.weighted(&r.route, port);
                        let target = Target::Weighted(route);
                        let cidrs: Vec<Option<IpNet>> = if m.destination_subnets.is_empty() {
                            vec![None]
                        } else {
                            m.destination_subnets.iter().copied().map(Some).collect()
                        };
                        for cidr in cidrs {
                            let group = self.port(port).group(cidr);
                            for sni in &m.sni_hosts {
                                group.sni.insert(sni, target.clone());
                            }
                        }
                    }
                }
            }
        }
        for vi in 0..self.views.len() {
            let view = &self.views[vi];
            let (host, addresses) = (view.host, view.addresses.clone());
            let ports: Vec<(u16, Protocol)> = view
                .ports
                .iter()
                .filter(|p| self.serves(p))
                .map(|p| (p.number, p.protocol))
                .collect();
            for (number, protocol) in ports {
                let Some(cluster) = self.cluster(vi, number, None) else {
                    continue;
                };
                match protocol.class() {
                    ProtocolClass::Http => {
                        let pb = self.port(number);
                        pb.http_services.push(vi);
                        pb.group(None).http = Some(PENDING_HTTP);
                    }
                    ProtocolClass::Tls => {
                        let target = Target::Cluster(cluster);
                        if addresses.is_empty() {
                            self.sni_chain(number, None, host, target.clone());
                        }
                        for &a in addresses.iter() {
                            match a {
                                Address::Ip(ip) => {
                                    self.vip(number, ip, VipListener::Tls(target.clone()), host)
                                }
                                Address::Cidr(net) => {
                                    self.sni_chain(number, Some(net), host, target.clone())
                                }
                            }
                        }
                    }
                    ProtocolClass::Tcp => {
                        let target = self.tcp_target(vi, number, cluster);
                        if addresses.is_empty() {
                            self.tcp_chain(number, None, target.clone(), host);
                        }
                        for &a in addresses.iter() {
                            match a {
                                Address::Ip(ip) => {
                                    self.vip(number, ip, VipListener::Tcp(target.clone()), host)
                                }
                                Address::Cidr(net) => {
                                    self.tcp_chain(number, Some(net), target.clone(), host)
                                }
                            }
                        }
                    }
                    ProtocolClass::Auto => {
                        let target = self.tcp_target(vi, number, cluster);
                        let mut shared = false;
                        if addresses.is_empty() {
                            self.tcp_chain(number, None, target.clone(), host);
                            self.port(number).group(None).http = Some(PENDING_HTTP);
                            shared = true;
                        }
                        for &a in addresses.iter() {
                            match a {
                                Address::Ip(ip) => {
                                    let http = self.vip_http_config(vi, number, cluster);
                                    self.vip(
                                        number,
                                        ip,
                                        VipListener::Auto {
                                            tcp: target.clone(),
                                            http,
                                        },
                                        host,
                                    );
                                }
                                Address::Cidr(net) => {
                                    self.tcp_chain(number, Some(net), target.clone(), host);
                                    self.port(number).group(Some(net)).http = Some(PENDING_HTTP);
                                    shared = true;
                                }
                            }
                        }
                        if shared {
                            self.port(number).http_services.push(vi);
                        }
                    }
                    ProtocolClass::Udp => {}
                }
            }
        }
        self.http_route_configs();
    }

    /// Whether the proxy serves this port (not UDP, not reserved).
    fn serves(&self, p: &Port) -> bool {
        p.protocol != Protocol::Udp && !self.opts.reserved_ports.contains(&p.number)
    }

    fn sni_chain(&mut self, port: u16, cidr: Option<IpNet>, host: &str, target: Target) {
        if host::is_wildcard(host) && !host.starts_with("*.") {
            self.notes.push(format!(
                "partial wildcard {host} cannot be an SNI match on port {port}: not routed by SNI"
            ));
            return;
        }
        let group = self.port(port).group(cidr);
        if !group.sni.contains_pattern(host) {
            group.sni.insert(host, target);
        }
    }

    fn tcp_chain(&mut self, port: u16, cidr: Option<IpNet>, target: Target, host: &str) {
        let group = self.port(port).group(cidr);
        if group.tcp.is_some() {
            let scope = cidr.map_or_else(|| "every address".to_owned(), |c| c.to_string());
            self.notes.push(format!(
                "{host}: TCP port {port} for {scope} is already taken by an older entry: dropped"
            ));
            return;
        }
        group.tcp = Some(target);
    }

    fn vip(&mut self, port: u16, ip: IpAddr, listener: VipListener, host: &str) {
        let vips = &mut self.port(port).routes.vips;
        if vips.contains_key(&ip) {
            self.notes.push(format!(
                "{host}: {ip}:{port} is already bound to an older entry: dropped"
            ));
            return;
        }
        vips.insert(ip, listener);
    }

    /// The HTTP route table of a VIP-bound auto listener: only this service, any Host.
    fn vip_http_config(&mut self, view: usize, port: u16, cluster: ClusterId) -> HttpConfigId {
        let vh = self.service_virtual_host(view, port, cluster, vec!["*".into()]);
        let id = HttpConfigId(self.http_configs.len() as u32);
        self.http_configs.push(HttpRouteConfig {
            port,
            virtual_hosts: vec![vh],
            domains: super::HostMatcher::new(),
            catch_all: CatchAll::VirtualHost(0),
        });
        id
    }

    fn service_virtual_host(
        &mut self,
        view: usize,
        port: u16,
        cluster: ClusterId,
        domains: Vec<String>,
    ) -> VirtualHost {
        let host = self.views[view].host;
        let (routes, vs) = match self.virtual_service_for(host) {
            Some(vs) if vs.hosts.iter().any(|h| h == host) || domains == ["*"] => {
                (self.http_routes(vs, port), Some(vs.key.clone()))
            }
            _ => (None, None),
        };
        VirtualHost {
            name: [host, ":", itoa::Buffer::new().format(port)].concat(),
            domains,
            cluster: Some(cluster),
            virtual_service: vs.filter(|_| routes.is_some()),
            routes,
        }
    }

    /// A VirtualService's HTTP rules for a listener port; `None` when it has none for it.
    fn http_routes(&mut self, vs: &VirtualService, port: u16) -> Option<Vec<CompiledHttpRoute>> {
        let mut out = Vec::new();
        for rule in &vs.http {
            if !rule.matches.is_empty()
                && !rule
                    .matches
                    .iter()
                    .any(|m| m.port.is_none_or(|p| p == port))
            {
                continue;
            }
            let mut rule = rule.clone();
            rule.matches.retain(|m| m.port.is_none_or(|p| p == port));
            let destinations = match &rule.action {
                HttpAction::Route(d) => {
                    let keep_zero = d.len() == 1;
                    d.iter()
                        .filter(|(d, _)| keep_zero || d.weight > 0)
                        .map(|(d, _)| self.destination(d, port))
                        .collect()
                }
                _ => Vec::new(),
            };
            if let HttpAction::Route(d) = &mut rule.action {
                let keep_zero = d.len() == 1;
                d.retain(|(d, _)| keep_zero || d.weight > 0);
            }
            out.push(CompiledHttpRoute { rule, destinations });
        }
        (!out.is_empty()).then_some(out)
    }

    fn http_route_configs(&mut self) {
        let catch_all = match self.reg.mesh.outbound_policy {
            OutboundPolicy::AllowAny => CatchAll::AllowAny,
            OutboundPolicy::RegistryOnly => CatchAll::BlockAll,
        };
        let ports: Vec<u16> = self
            .ports
            .iter()
            .filter(|(_, p)| !p.http_services.is_empty())
            .map(|(n, _)| *n)
            .collect();
        for port in ports {
            let services = std::mem::take(&mut self.port(port).http_services);
            let mut config = HttpRouteConfig {
                port,
                virtual_hosts: Vec::new(),
                domains: super::HostMatcher::new(),
                catch_all,
            };
            // VirtualService virtual hosts first (oldest VirtualService wins a domain), for VS
            // hosts that match a service on this port.
            let hosts: Vec<&str> = services.iter().map(|&vi| self.views[vi].host).collect();
            let by_service = host::FirstMatch::new(hosts.iter().map(|&h| std::iter::once(h)));
            let vss = self.vss.clone();
            for vs in vss {
                if vs.http.is_empty() {
                    continue;
                }
                for h in &vs.hosts {
                    let service = by_service.first(h).map(|i| services[i]);
                    // Istio quirk (spec §9.1): on listener port 80 only, VirtualService hosts
                    // that match no service still get a virtual host.
                    if service.is_none() && port != 80 {
                        continue;
                    }
                    if config.domains.contains_pattern(h) {
                        continue;
                    }
                    let Some(routes) = self.http_routes(vs, port) else {
                        continue;
                    };
                    let exact = service.filter(|&vi| self.views[vi].host == *h);
                    let cluster = exact.and_then(|vi| self.cluster(vi, port, None));
                    let mut domains = vec![h.clone()];
                    if let Some(vi) = exact {
                        domains.extend(address_domains(&self.views[vi].addresses));
                    }
                    self.add_vhost(
                        &mut config,
                        VirtualHost {
                            name: [h, ":", itoa::Buffer::new().format(port)].concat(),
                            domains,
                            cluster,
                            routes: Some(routes),
                            virtual_service: Some(vs.key.clone()),
                        },
                    );
                }
            }
            for vi in services {
                let host = self.views[vi].host;
                if config.domains.contains_pattern(host) {
                    continue;
                }
                let Some(cluster) = self.cluster(vi, port, None) else {
                    continue;
                };
                let mut domains = vec![host.to_owned()];
                domains.extend(address_domains(&self.views[vi].addresses));
                let vh = VirtualHost {
                    name: [host, ":", itoa::Buffer::new().format(port)].concat(),
                    domains,
                    cluster: Some(cluster),
                    routes: None,
                    virtual_service: None,
                };
                self.add_vhost(&mut config, vh);
            }
            let id = HttpConfigId(self.http_configs.len() as u32);
            self.http_configs.push(config);
            let pb = self.port(port);
            for g in &mut pb.routes.groups {
                // The shared table serves the groups that asked for an HTTP chain: the
                // address-less group (HTTP services, address-less auto services) and the CIDR
                // groups of auto services. Other CIDR groups have no HTTP chain (Envoy does not
                // fall back to chains without prefix ranges).
                if g.http == Some(PENDING_HTTP) {
                    g.http = Some(id);
                }
            }
        }
    }

    fn add_vhost(&mut self, config: &mut HttpRouteConfig, mut vh: VirtualHost) {
        let index = config.virtual_hosts.len() as u32;
        vh.domains.retain(|d| {
            let fresh = !config.domains.contains_pattern(d);
            if fresh {
                config.domains.insert(d, index);
            }
            fresh
        });
        if !vh.domains.is_empty() {
            config.virtual_hosts.push(vh);
        }
    }

    fn finish(self) -> RouteTable {
        let ports = self.ports.into_iter().map(|(n, p)| (n, p.routes)).collect();
        RouteTable {
            namespace: self.opts.namespace.to_owned(),
            policy: self.reg.mesh.outbound_policy,
            connect_timeout: self.reg.mesh.connect_timeout,
            clusters: self.clusters,
            http_configs: self.http_configs,
            ports,
            notes: self.notes,
            objects: self.reg.objects.clone(),
        }
    }
}

/// Entry addresses as extra Host domains (IPv6 in brackets); CIDRs are not hosts.
fn address_domains(addresses: &[Address]) -> Vec<String> {
    addresses
        .iter()
        .filter_map(|a| match a {
            Address::Ip(IpAddr::V4(ip)) => Some(ip.to_string()),
            Address::Ip(IpAddr::V6(ip)) => Some(format!("[{ip}]")),
            Address::Cidr(_) => None,
        })
        .collect()
}

fn overlay(base: &mut PolicySettings, over: PolicySettings) {
    if over.load_balancer.is_some() {
        base.load_balancer = over.load_balancer;
    }
    if over.connection_pool.is_some() {
        base.connection_pool = over.connection_pool;
    }
    if over.outlier_detection.is_some() {
        base.outlier_detection = over.outlier_detection;
    }
    if over.tls.is_some() {
        base.tls = over.tls;
    }
}

/// Upstream port of an endpoint (spec §2.3): endpoint port map > targetPort > number.
fn endpoint_port(ep: &Endpoint, port: &Port) -> u16 {
    ep.ports
        .get(&port.name)
        .copied()
        .or(port.target_port)
        .unwrap_or(port.number)
}

fn upstream(
    view: &ServiceView<'_>,
    port: &Port,
    subset: Option<&BTreeMap<String, String>>,
) -> Upstream {
    let in_subset = |ep: &&Endpoint| {
        subset.is_none_or(|labels| labels.iter().all(|(k, v)| ep.labels.get(k) == Some(v)))
    };
    let eps: Vec<&Endpoint> = view.endpoints.iter().filter(in_subset).collect();
    let default_port = port.target_port.unwrap_or(port.number);
    match view.resolution {
        Resolution::None => Upstream::OriginalDestination {
            port: port.target_port,
        },
        Resolution::DynamicDns => Upstream::RequestedName {
            port: default_port,
            first_address_only: false,
        },
        Resolution::Static => {
            if view.workload_selector || eps.is_empty() {
                return Upstream::Empty;
            }
            Upstream::Static(
                eps.iter()
                    .filter_map(|ep| {
                        let address = match &ep.address {
                            EndpointAddress::Ip(ip) => {
                                EndpointSocket::Inet(SocketAddr::new(*ip, endpoint_port(ep, port)))
                            }
                            EndpointAddress::Unix(path) => EndpointSocket::Unix(path.clone()),
                            EndpointAddress::Dns(_) => return None,
                        };
                        Some(StaticEndpoint {
                            address,
                            weight: ep.weight.max(1),
                        })
                    })
                    .collect(),
            )
        }
        Resolution::Dns | Resolution::DnsRoundRobin => {
            let first_address_only = view.resolution == Resolution::DnsRoundRobin;
            if view.endpoints.is_empty() {
                if host::is_wildcard(view.host) {
                    return Upstream::RequestedName {
                        port: default_port,
                        first_address_only,
                    };
                }
                return Upstream::Dns {
                    targets: vec![DnsTarget {
                        name: view.host.to_owned(),
                        port: default_port,
                        weight: 1,
                    }],
                    first_address_only,
                };
            }
            if eps.is_empty() {
                return Upstream::Empty;
            }
            if eps
                .iter()
                .all(|ep| matches!(ep.address, EndpointAddress::Ip(_)))
            {
                return Upstream::Static(
                    eps.iter()
                        .filter_map(|ep| match ep.address {
                            EndpointAddress::Ip(ip) => Some(StaticEndpoint {
                                address: EndpointSocket::Inet(SocketAddr::new(
                                    ip,
                                    endpoint_port(ep, port),
                                )),
                                weight: ep.weight.max(1),
                            }),
                            _ => None,
                        })
                        .collect(),
                );
            }
            Upstream::Dns {
                targets: eps
                    .iter()
                    .filter_map(|ep| {
                        let name = match &ep.address {
                            EndpointAddress::Ip(ip) => ip.to_string(),
                            EndpointAddress::Dns(name) => name.clone(),
                            EndpointAddress::Unix(_) => return None,
                        };
                        Some(DnsTarget {
                            name,
                            port: endpoint_port(ep, port),
                            weight: ep.weight.max(1),
                        })
                    })
                    .collect(),
                first_address_only,
            }
        }
    }
}
