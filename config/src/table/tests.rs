//! Matching tests for spec §5 (listeners, SNI, Host, VIP/CIDR, mixed protocols, fallthrough),
//! §7 (precedence) and §8 (exportTo), through the whole pipeline: YAML -> table -> decision.
//! Property tests compare the host and CIDR matchers with naive references.

use std::net::SocketAddr;

use proptest::prelude::*;

use super::build::name_prefix;
use super::cidr::CidrMap;
use super::host::HostMatcher;
use super::{Decision, Detected, HostRoute, RouteTable, Target, Upstream};
use crate::host::{FirstMatch, matches};
use crate::{Options, Source, build};

const REGISTRY_ONLY: &str = "outboundTrafficPolicy: {mode: REGISTRY_ONLY}";

fn table_ns(
    yaml: &str,
    mesh: &str,
    namespace: &str,
    age: Option<&dyn Fn(&crate::ObjectKey) -> u64>,
) -> RouteTable {
    let mesh = Source::new("mesh.yaml", mesh);
    let opts = Options {
        namespace,
        age,
        ..Options::default()
    };
    let b = build(&[Source::new("t.yaml", yaml)], Some(&mesh), &opts);
    assert!(b.errors() == 0, "{:#?}", b.error_messages());
    b.table.expect("valid configuration compiles")
}

fn table(yaml: &str, mesh: &str) -> RouteTable {
    table_ns(yaml, mesh, "default", None)
}

fn se(name: &str, body: &str) -> String {
    let body: Vec<String> = body.lines().map(|l| format!("  {l}")).collect();
    format!(
        "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: {name}\nspec:\n{}\n",
        body.join("\n")
    )
}

fn obj(kind: &str, name: &str, ns: &str, body: &str) -> String {
    let body: Vec<String> = body.lines().map(|l| format!("  {l}")).collect();
    format!(
        "---\napiVersion: networking.istio.io/v1\nkind: {kind}\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n{}\n",
        body.join("\n")
    )
}

/// The outcome of a connection to `dst` with `detected`, as a short string: the cluster name,
/// `http`, `passthrough` or `deny`.
fn outcome(t: &RouteTable, dst: &str, detected: Detected<'_>) -> String {
    let dst: SocketAddr = dst.parse().unwrap();
    let l = t.listener(dst);
    match t.decide(l, detected) {
        Decision::Forward(Target::Cluster(c)) => t.cluster(*c).name.clone(),
        Decision::Forward(Target::Weighted(w)) => w
            .iter()
            .map(|w| {
                format!(
                    "{}={}",
                    w.cluster
                        .map_or_else(|| "?".into(), |c| t.cluster(c).name.clone()),
                    w.weight
                )
            })
            .collect::<Vec<_>>()
            .join(","),
        Decision::Forward(Target::TcpRules(..)) => "tcp-rules".into(),
        Decision::Http(_) => "http".into(),
        Decision::Passthrough => "passthrough".into(),
        Decision::Deny => "deny".into(),
    }
}

fn tls(sni: &str) -> Detected<'_> {
    Detected::Tls {
        sni: Some(sni.as_bytes()),
    }
}

/// The virtual host (or catch-all) a request with `host` gets on `port`.
fn http_route(t: &RouteTable, dst: &str, host: &str) -> String {
    let l = t.listener(dst.parse().unwrap());
    let Decision::Http(id) = t.decide(l, Detected::Http) else {
        return "not http".into();
    };
    match t.http_config(id).route(host.as_bytes()) {
        HostRoute::VirtualHost(vh) => vh.name.clone(),
        HostRoute::Passthrough => "passthrough".into(),
        HostRoute::Block => "502".into(),
    }
}

#[test]
fn sni_routing_exact_wildcard_and_fallthrough() {
    let yaml = se(
        "a",
        "hosts: [api.example.com]\nports: [{number: 443, name: https, protocol: HTTPS}]\nresolution: DNS",
    ) + &se(
        "b",
        "hosts: ['*.example.com']\nports: [{number: 443, name: https, protocol: HTTPS}]\nresolution: DYNAMIC_DNS",
    ) + &se(
        "c",
        "hosts: ['*.b.example.com']\nports: [{number: 443, name: https, protocol: HTTPS}]\nresolution: DYNAMIC_DNS",
    );
    for (mesh, miss) in [(REGISTRY_ONLY, "deny"), ("", "passthrough")] {
        let t = table(&yaml, mesh);
        let cases: &[(Detected<'_>, &str)] = &[
            (tls("api.example.com"), "outbound|443||api.example.com"),
            (tls("API.Example.COM"), "outbound|443||api.example.com"),
            (tls("x.example.com"), "outbound|443||*.example.com"),
            (tls("x.b.example.com"), "outbound|443||*.b.example.com"),
            (tls("b.example.com"), "outbound|443||*.example.com"),
            (tls("example.com"), miss),
            (tls("api.example.com."), miss),
            (tls("other.org"), miss),
            (Detected::Tls { sni: None }, miss),
            (Detected::Other, miss),
            (Detected::Http, miss),
        ];
        for (d, want) in cases {
            assert_eq!(
                outcome(&t, "203.0.113.9:443", *d),
                *want,
                "{d:?} mesh={mesh:?}"
            );
        }
        assert_eq!(
            outcome(&t, "203.0.113.9:8443", tls("api.example.com")),
            miss,
            "no service on the port"
        );
        assert_eq!(
            t.listener("1.2.3.4:443".parse().unwrap()).detect(),
            super::Detect {
                tls: true,
                http: false
            }
        );
    }
}

#[test]
fn vip_bound_tls_ignores_sni() {
    let yaml = se(
        "a",
        "hosts: [db.example.com]\naddresses: [10.0.0.9]\nports: [{number: 443, name: tls, protocol: TLS}]\nresolution: DNS",
    );
    let t = table(&yaml, REGISTRY_ONLY);
    assert_eq!(
        outcome(&t, "10.0.0.9:443", tls("anything.org")),
        "outbound|443||db.example.com"
    );
    assert_eq!(
        outcome(&t, "10.0.0.9:443", Detected::Tls { sni: None }),
        "outbound|443||db.example.com"
    );
    assert_eq!(
        t.listener("10.0.0.9:443".parse().unwrap()).detect(),
        super::Detect::default(),
        "no inspection on a VIP TLS listener"
    );
    assert_eq!(outcome(&t, "10.0.0.10:443", tls("db.example.com")), "deny");
}

#[test]
fn tcp_demultiplexed_by_vip_and_cidr() {
    let yaml = se(
        "a",
        "hosts: [a.db]\naddresses: [10.0.0.5]\nports: [{number: 3306, name: tcp, protocol: TCP}]\nresolution: DNS",
    ) + &se(
        "b",
        "hosts: [b.db]\naddresses: [10.0.0.6]\nports: [{number: 3306, name: tcp, protocol: TCP}]\nresolution: DNS",
    ) + &se(
        "c",
        "hosts: [c.db]\naddresses: [10.0.0.0/24]\nports: [{number: 3306, name: tcp, protocol: TCP}]",
    ) + &se(
        "d",
        "hosts: [d.db]\naddresses: [10.0.0.0/16, '2001:db8::/32']\nports: [{number: 3306, name: tcp, protocol: TCP}]",
    ) + &se(
        "e",
        "hosts: [e.db]\naddresses: ['2001:db8::5']\nports: [{number: 3306, name: tcp, protocol: TCP}]\nresolution: STATIC\nendpoints: [{address: '2001:db8::50'}]",
    );
    let t = table(&yaml, REGISTRY_ONLY);
    let cases = [
        ("10.0.0.5:3306", "outbound|3306||a.db"),
        ("10.0.0.6:3306", "outbound|3306||b.db"),
        ("10.0.0.7:3306", "outbound|3306||c.db"),
        ("10.0.9.7:3306", "outbound|3306||d.db"),
        ("10.1.0.1:3306", "deny"),
        ("[2001:db8::5]:3306", "outbound|3306||e.db"),
        ("[2001:db8::6]:3306", "outbound|3306||d.db"),
        ("[::ffff:10.0.0.5]:3306", "outbound|3306||a.db"),
        ("10.0.0.5:3307", "deny"),
    ];
    for (dst, want) in cases {
        assert_eq!(outcome(&t, dst, Detected::Other), want, "{dst}");
    }
    assert_eq!(
        t.listener("10.0.0.5:3306".parse().unwrap()).detect(),
        super::Detect::default(),
        "server-first protocols work"
    );
}

#[test]
fn address_less_tcp_captures_the_whole_port() {
    let yaml = se(
        "a",
        "hosts: [pg.example.com]\nports: [{number: 5432, name: tcp, protocol: TCP}]\nresolution: DNS",
    ) + &se(
        "b",
        "hosts: [pg2.example.com]\nports: [{number: 5432, name: tcp, protocol: TCP}]\nresolution: DNS",
    ) + &se(
        "c",
        "hosts: [vip.example.com]\naddresses: [10.9.0.0/16]\nports: [{number: 5432, name: tls, protocol: TLS}]",
    );
    let t = table(&yaml, REGISTRY_ONLY);
    assert_eq!(
        outcome(&t, "198.51.100.1:5432", Detected::Other),
        "outbound|5432||pg.example.com",
        "oldest (by name) wins"
    );
    assert!(
        t.notes.iter().any(|n| n.contains("pg2.example.com")),
        "{:?}",
        t.notes
    );
    // A CIDR group with no matching chain does not fall back to the address-less chain.
    assert_eq!(outcome(&t, "10.9.1.1:5432", Detected::Other), "deny");
    assert_eq!(
        outcome(&t, "10.9.1.1:5432", tls("vip.example.com")),
        "outbound|5432||vip.example.com"
    );
}

#[test]
fn http_host_routing() {
    let yaml = se(
        "a",
        "hosts: [a.example.com]\naddresses: [10.0.0.1, '2001:db8::1']\nports: [{number: 80, name: http, protocol: HTTP}]\nresolution: DNS",
    ) + &se(
        "b",
        "hosts: ['*.example.com']\nports: [{number: 80, name: http-web}]\nresolution: DYNAMIC_DNS",
    ) + &se(
        "c",
        "hosts: ['*.deep.example.com']\nports: [{number: 80, name: http}]\nresolution: DYNAMIC_DNS",
    );
    for (mesh, miss) in [(REGISTRY_ONLY, "502"), ("", "passthrough")] {
        let t = table(&yaml, mesh);
        let cases = [
            ("a.example.com", "a.example.com:80"),
            ("A.EXAMPLE.COM:8080", "a.example.com:80"),
            ("a.example.com.", "a.example.com:80"),
            ("x.example.com", "*.example.com:80"),
            ("y.deep.example.com", "*.deep.example.com:80"),
            ("10.0.0.1", "a.example.com:80"),
            ("10.0.0.1:80", "a.example.com:80"),
            ("[2001:db8::1]:80", "a.example.com:80"),
            ("example.com", miss),
            ("other.org", miss),
            ("", miss),
        ];
        for (host, want) in cases {
            assert_eq!(
                http_route(&t, "203.0.113.1:80", host),
                want,
                "{host} mesh={mesh:?}"
            );
        }
        // Not HTTP on an HTTP-only port: the fallthrough (no TCP chain).
        let no_http = if mesh.is_empty() {
            "passthrough"
        } else {
            "deny"
        };
        assert_eq!(outcome(&t, "203.0.113.1:80", Detected::Other), no_http);
    }
}

#[test]
fn mixed_protocols_on_one_port() {
    // HTTP + address-less TCP: HTTP requests by Host, other bytes to the TCP service (§5.5).
    let yaml = se(
        "web",
        "hosts: [web.example.com]\nports: [{number: 8080, name: http, protocol: HTTP}]\nresolution: DNS",
    ) + &se(
        "raw",
        "hosts: [raw.example.com]\nports: [{number: 8080, name: tcp, protocol: TCP}]\nresolution: DNS",
    ) + &se(
        "tls",
        "hosts: [secure.example.com]\nports: [{number: 8080, name: tls, protocol: TLS}]\nresolution: DNS",
    );
    let t = table(&yaml, REGISTRY_ONLY);
    assert_eq!(outcome(&t, "1.1.1.1:8080", Detected::Http), "http");
    assert_eq!(
        http_route(&t, "1.1.1.1:8080", "web.example.com"),
        "web.example.com:8080"
    );
    assert_eq!(
        outcome(&t, "1.1.1.1:8080", Detected::Other),
        "outbound|8080||raw.example.com"
    );
    assert_eq!(
        outcome(&t, "1.1.1.1:8080", tls("secure.example.com")),
        "outbound|8080||secure.example.com"
    );
    assert_eq!(
        outcome(&t, "1.1.1.1:8080", tls("unknown.example.com")),
        "outbound|8080||raw.example.com"
    );
    assert_eq!(
        t.listener("1.1.1.1:8080".parse().unwrap()).detect(),
        super::Detect {
            tls: true,
            http: true
        }
    );
}

#[test]
fn auto_port_on_a_vip() {
    let yaml = se(
        "a",
        "hosts: [svc.example.com]\naddresses: [10.0.0.3]\nports: [{number: 9000, name: app}]\nresolution: DNS",
    );
    let t = table(&yaml, REGISTRY_ONLY);
    assert_eq!(
        outcome(&t, "10.0.0.3:9000", Detected::Other),
        "outbound|9000||svc.example.com"
    );
    assert_eq!(
        http_route(&t, "10.0.0.3:9000", "any.host.at.all"),
        "svc.example.com:9000",
        "VIP-bound auto: domain *"
    );
    assert_eq!(
        t.listener("10.0.0.3:9000".parse().unwrap()).detect(),
        super::Detect {
            tls: false,
            http: true
        }
    );
}

#[test]
fn reserved_and_udp_ports_are_not_served() {
    let yaml = se(
        "a",
        "hosts: [a.com]\naddresses: [10.0.0.1]\nports: [{number: 15001, name: tcp, protocol: TCP}, {number: 53, name: udp, protocol: UDP}]",
    );
    let t = table(&yaml, REGISTRY_ONLY);
    assert_eq!(outcome(&t, "10.0.0.1:15001", Detected::Other), "deny");
    assert_eq!(outcome(&t, "10.0.0.1:53", Detected::Other), "deny");
    assert!(t.ports().is_empty());
}

#[test]
fn precedence_own_namespace_then_oldest() {
    let yaml = obj(
        "ServiceEntry",
        "zzz",
        "default",
        "hosts: [a.com]\nports: [{number: 443, name: https, protocol: HTTPS}]\nresolution: DNS",
    ) + &obj(
        "ServiceEntry",
        "aaa",
        "other",
        "hosts: [a.com]\nports: [{number: 443, name: https, protocol: HTTPS}]\nresolution: STATIC\nendpoints: [{address: 1.1.1.1}]",
    );
    let t = table_ns(&yaml, "", "default", None);
    let c = &t.clusters[0];
    assert_eq!(c.service.key.name, "zzz", "the proxy's own namespace wins");
    let t = table_ns(&yaml, "", "third", None);
    assert_eq!(
        t.clusters[0].service.key.name, "aaa",
        "otherwise the oldest; equal ages: by name"
    );
    let age = |k: &crate::ObjectKey| if k.name == "zzz" { 1 } else { 2 };
    let t = table_ns(&yaml, "", "third", Some(&age));
    assert_eq!(t.clusters[0].service.key.name, "zzz", "older by reload age");
}

#[test]
fn same_namespace_entries_merge_ports_and_pool_endpoints() {
    let yaml = se(
        "a",
        "hosts: [a.com]\naddresses: [10.0.0.1]\nports: [{number: 80, name: tcp, protocol: TCP}]\nresolution: STATIC\nendpoints: [{address: 1.1.1.1}]",
    ) + &se(
        "b",
        "hosts: [a.com]\naddresses: [10.0.0.1]\nports: [{number: 81, name: tcp, protocol: TCP}, {number: 80, name: other, protocol: TCP}]\nresolution: STATIC\nendpoints: [{address: 2.2.2.2}]",
    );
    let t = table(&yaml, REGISTRY_ONLY);
    assert_eq!(
        outcome(&t, "10.0.0.1:81", Detected::Other),
        "outbound|81||a.com"
    );
    let c = t.clusters.iter().find(|c| c.port == 80).unwrap();
    let Upstream::Static(eps) = &c.upstream else {
        panic!()
    };
    assert_eq!(eps.len(), 2, "endpoints pooled");
}

#[test]
fn export_to_visibility() {
    let yaml = obj(
        "ServiceEntry",
        "private",
        "team",
        "hosts: [a.com]\nexportTo: ['.']\nports: [{number: 443, name: https, protocol: HTTPS}]\nresolution: DNS",
    ) + &obj(
        "ServiceEntry",
        "listed",
        "team",
        "hosts: [b.com]\nexportTo: [egress]\nports: [{number: 443, name: https, protocol: HTTPS}]\nresolution: DNS",
    ) + &obj(
        "ServiceEntry",
        "nobody",
        "team",
        "hosts: [c.com]\nexportTo: ['~']\nports: [{number: 443, name: https, protocol: HTTPS}]\nresolution: DNS",
    );
    let t = table_ns(&yaml, REGISTRY_ONLY, "egress", None);
    assert_eq!(outcome(&t, "1.1.1.1:443", tls("a.com")), "deny");
    assert_eq!(
        outcome(&t, "1.1.1.1:443", tls("b.com")),
        "outbound|443||b.com"
    );
    assert_eq!(outcome(&t, "1.1.1.1:443", tls("c.com")), "deny");
    let t = table_ns(&yaml, REGISTRY_ONLY, "team", None);
    assert_eq!(
        outcome(&t, "1.1.1.1:443", tls("a.com")),
        "outbound|443||a.com"
    );
    let mesh = "outboundTrafficPolicy: {mode: REGISTRY_ONLY}\ndefaultServiceExportTo: ['.']";
    let t = table_ns(
        &se(
            "d",
            "hosts: [d.com]\nports: [{number: 443, name: https, protocol: HTTPS}]\nresolution: DNS",
        ),
        mesh,
        "egress",
        None,
    );
    assert_eq!(
        outcome(&t, "1.1.1.1:443", tls("d.com")),
        "deny",
        "mesh default exportTo applies"
    );
}

#[test]
fn virtual_service_http_rules() {
    let yaml = se(
        "a",
        "hosts: [a.com]\nports: [{number: 80, name: http}, {number: 81, name: http-alt}]\nresolution: DNS",
    ) + &se(
        "b",
        "hosts: [b.com]\nports: [{number: 80, name: http}]\nresolution: DNS",
    ) + &obj(
        "VirtualService",
        "v",
        "default",
        "hosts: [a.com]\nhttp:\n- match: [{port: 80, uri: {prefix: /x}}]\n  route: [{destination: {host: b.com}, weight: 80}, {destination: {host: a.com}, weight: 20}]\n- match: [{port: 80}]\n  route: [{destination: {host: a.com}}]",
    );
    let t = table(&yaml, REGISTRY_ONLY);
    let l = t.listener("1.1.1.1:80".parse().unwrap());
    let Decision::Http(id) = t.decide(l, Detected::Http) else {
        panic!()
    };
    let HostRoute::VirtualHost(vh) = t.http_config(id).route(b"a.com") else {
        panic!()
    };
    let routes = vh.routes.as_ref().expect("VirtualService rules on port 80");
    assert_eq!(routes.len(), 2);
    let names: Vec<String> = routes[0]
        .destinations
        .iter()
        .map(|w| t.cluster(w.cluster.unwrap()).name.clone())
        .collect();
    assert_eq!(names, ["outbound|80||b.com", "outbound|80||a.com"]);
    // Port 81: every rule is for port 80, so the VirtualService is ignored there.
    let l = t.listener("1.1.1.1:81".parse().unwrap());
    let Decision::Http(id) = t.decide(l, Detected::Http) else {
        panic!()
    };
    let HostRoute::VirtualHost(vh) = t.http_config(id).route(b"a.com") else {
        panic!()
    };
    assert!(vh.routes.is_none(), "default route on 81");
}

#[test]
fn port_80_virtual_service_hosts_without_a_service() {
    // Istio quirk (spec §9.1): only on port 80 does a VirtualService host that matches no
    // service get a virtual host of its own.
    let alias = |port: u16| {
        obj(
            "VirtualService",
            &format!("alias{port}"),
            "default",
            &format!(
                "hosts: [alias{port}.example.com]\nhttp:\n- route: [{{destination: {{host: api.example.com, port: {{number: {port}}}}}}}]"
            ),
        )
    };
    let yaml = se(
        "api",
        "hosts: [api.example.com]\nports: [{number: 80, name: http}, {number: 8080, name: http-alt}]\nresolution: DNS",
    ) + &alias(80)
        + &alias(8080);
    let t = table(&yaml, REGISTRY_ONLY);
    assert_eq!(
        http_route(&t, "1.1.1.1:80", "alias80.example.com"),
        "alias80.example.com:80"
    );
    assert_eq!(
        http_route(&t, "1.1.1.1:8080", "alias8080.example.com"),
        "502"
    );
    let l = t.listener("1.1.1.1:80".parse().unwrap());
    let Decision::Http(id) = t.decide(l, Detected::Http) else {
        panic!()
    };
    let HostRoute::VirtualHost(vh) = t.http_config(id).route(b"alias80.example.com") else {
        panic!()
    };
    let dest = vh.routes.as_ref().unwrap()[0].destinations[0]
        .cluster
        .unwrap();
    assert_eq!(t.cluster(dest).name, "outbound|80||api.example.com");
    assert!(vh.cluster.is_none());
}

#[test]
fn virtual_service_tls_and_tcp_rules() {
    let yaml = se(
        "a",
        "hosts: [a.com]\nports: [{number: 443, name: tls, protocol: TLS}]\nresolution: DNS",
    ) + &se(
        "b",
        "hosts: [b.com]\nports: [{number: 443, name: tls, protocol: TLS}]\nresolution: DNS",
    ) + &obj(
        "VirtualService",
        "v",
        "default",
        "hosts: [a.com]\ntls:\n- match: [{sniHosts: [a.com]}]\n  route: [{destination: {host: b.com}, weight: 100}]",
    ) + &se(
        "db",
        "hosts: [db.com]\naddresses: [10.0.0.1]\nports: [{number: 3306, name: tcp, protocol: TCP}]\nresolution: DNS",
    ) + &se(
        "db2",
        "hosts: [db2.com]\nports: [{number: 3306, name: tcp2, protocol: TCP}]\nresolution: DNS\naddresses: [10.0.0.2]",
    ) + &obj(
        "VirtualService",
        "t",
        "default",
        "hosts: [db.com]\ntcp:\n- route: [{destination: {host: db2.com}, weight: 50}, {destination: {host: db.com}, weight: 50}]",
    );
    let t = table(&yaml, REGISTRY_ONLY);
    assert_eq!(
        outcome(&t, "1.1.1.1:443", tls("a.com")),
        "outbound|443||b.com=100",
        "VS tls rule before the SE chain"
    );
    assert_eq!(
        outcome(&t, "10.0.0.1:3306", Detected::Other),
        "outbound|3306||db2.com=50,outbound|3306||db.com=50"
    );
}

#[test]
fn destination_rule_lookup_order() {
    let svc = obj(
        "ServiceEntry",
        "s",
        "svc",
        "hosts: [a.example.com]\nports: [{number: 443, name: https, protocol: HTTPS}]\nresolution: DNS",
    );
    let dr = |name: &str, ns: &str, host: &str| {
        obj(
            "DestinationRule",
            name,
            ns,
            &format!("host: '{host}'\ntrafficPolicy: {{loadBalancer: {{simple: RANDOM}}}}"),
        )
    };
    let pick = |yaml: &str| {
        table_ns(yaml, "", "egress", None).clusters[0]
            .destination_rule
            .as_ref()
            .map(|d| format!("{}/{}", d.key.namespace, d.key.name))
    };
    let all = svc.clone()
        + &dr("root", "istio-system", "a.example.com")
        + &dr("svc", "svc", "a.example.com")
        + &dr("mine-wild", "egress", "*.example.com")
        + &dr("mine-exact", "egress", "a.example.com");
    assert_eq!(
        pick(&all).as_deref(),
        Some("egress/mine-exact"),
        "proxy namespace, exact beats wildcard"
    );
    let no_exact = svc.clone()
        + &dr("root", "istio-system", "a.example.com")
        + &dr("svc", "svc", "a.example.com")
        + &dr("mine-wild", "egress", "*.example.com");
    assert_eq!(pick(&no_exact).as_deref(), Some("egress/mine-wild"));
    let svc_ns = svc.clone()
        + &dr("root", "istio-system", "a.example.com")
        + &dr("svc", "svc", "a.example.com");
    assert_eq!(
        pick(&svc_ns).as_deref(),
        Some("svc/svc"),
        "then the service's namespace"
    );
    let root = svc.clone() + &dr("root", "istio-system", "a.example.com");
    assert_eq!(
        pick(&root).as_deref(),
        Some("istio-system/root"),
        "then the root namespace"
    );
    assert_eq!(pick(&svc), None);
}

#[test]
fn upstream_port_selection() {
    let yaml = se(
        "s",
        "hosts: [s.com]\naddresses: [10.0.0.1]\nports: [{number: 80, name: http, targetPort: 8080}, {number: 81, name: other, protocol: TCP}]\nresolution: STATIC\nendpoints:\n- {address: 1.1.1.1, ports: {http: 9090}, weight: 0}\n- {address: 2.2.2.2, weight: 3}",
    ) + &se(
        "n",
        "hosts: [n.com]\naddresses: [10.0.0.2]\nports: [{number: 80, name: tcp, protocol: TCP, targetPort: 8443}]",
    ) + &se(
        "d",
        "hosts: [d.com]\naddresses: [10.0.0.3]\nports: [{number: 80, name: tcp, protocol: TCP, targetPort: 8000}]\nresolution: DNS",
    );
    let t = table(&yaml, "");
    let up = |name: &str| {
        t.clusters
            .iter()
            .find(|c| c.name == name)
            .unwrap()
            .upstream
            .clone()
    };
    let Upstream::Static(eps) = up("outbound|80||s.com") else {
        panic!()
    };
    let addrs: Vec<String> = eps
        .iter()
        .map(|e| format!("{:?}/{}", e.address, e.weight))
        .collect();
    assert_eq!(
        addrs,
        ["Inet(1.1.1.1:9090)/1", "Inet(2.2.2.2:8080)/3"],
        "port map > targetPort; weight 0 is 1"
    );
    let Upstream::Static(eps) = up("outbound|81||s.com") else {
        panic!()
    };
    assert!(
        matches!(eps[0].address, super::EndpointSocket::Inet(a) if a.port() == 81),
        "number when nothing else"
    );
    assert_eq!(
        up("outbound|80||n.com"),
        Upstream::OriginalDestination { port: Some(8443) }
    );
    assert!(
        matches!(up("outbound|80||d.com"), Upstream::Dns { ref targets, .. } if targets[0].port == 8000 && targets[0].name == "d.com")
    );
}

// === property tests ===

const MANGLE_SEED: &str = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: a, namespace: n}\nspec:\n  hosts: [a.example.com, '*.w.example.com']\n  addresses: [10.0.0.0/24]\n  ports:\n  - {number: 443, name: https, protocol: HTTPS, targetPort: 8443}\n  resolution: STATIC\n  endpoints: [{address: 1.2.3.4, ports: {https: 9443}, labels: {v: '1'}}]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: v}\nspec:\n  hosts: [a.example.com]\n  http:\n  - match: [{uri: {regex: '/a.*'}, headers: {x: {exact: y}}}]\n    route: [{destination: {host: a.example.com, subset: s}, weight: 70}, {destination: {host: b.example.com}, weight: 30}]\n    fault: {abort: {httpStatus: 503, percentage: {value: 5}}}\n  tls:\n  - match: [{sniHosts: [a.example.com]}]\n    route: [{destination: {host: a.example.com}}]\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d}\nspec:\n  host: a.example.com\n  trafficPolicy: {tls: {mode: SIMPLE}, outlierDetection: {consecutive5xxErrors: 3}}\n  subsets: [{name: s, labels: {v: '1'}}]\n";

fn naive_host<'a>(patterns: &'a [String], name: &str) -> Option<&'a String> {
    let name = name.to_ascii_lowercase();
    if let Some(p) = patterns.iter().find(|p| **p == name) {
        return Some(p);
    }
    patterns
        .iter()
        .filter_map(|p| p.strip_prefix('*').map(|s| (p, s)))
        .filter(|(_, s)| name.len() > s.len() && name.ends_with(s))
        .max_by_key(|(_, s)| s.len())
        .map(|(p, _)| p)
}

fn label() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "b", "api", "x-y", "com", "example", "z9"])
        .prop_map(String::from)
}

fn name() -> impl Strategy<Value = String> {
    prop::collection::vec(label(), 1..5).prop_map(|l| l.join("."))
}

fn pattern() -> impl Strategy<Value = String> {
    (name(), 0..3u8).prop_map(|(n, kind)| match kind {
        0 => n,
        1 => format!("*.{n}"),
        _ => format!("*{n}"),
    })
}

proptest! {
    #[test]
    fn name_prefix_then_name_orders_as_the_name(a in "\\PC{0,12}", b in "\\PC{0,12}") {
        // Any text, not only the names Kubernetes allows: the order is the bytes'.
        prop_assert_eq!((name_prefix(&a), &a).cmp(&(name_prefix(&b), &b)), a.cmp(&b));
    }

    #[test]
    fn first_match_agrees_with_a_linear_find(items in prop::collection::vec(prop::collection::vec(pattern(), 1..3), 0..20), queries in prop::collection::vec(pattern(), 1..20)) {
        let index = FirstMatch::new(items.iter().map(|ps| ps.iter().map(String::as_str)));
        for q in &queries {
            let linear = items.iter().position(|ps| ps.iter().any(|p| matches(p, q)));
            prop_assert_eq!(index.first(q), linear, "query {}", q);
        }
    }

    #[test]
    fn host_matcher_agrees_with_naive(patterns in prop::collection::vec(pattern(), 0..30), queries in prop::collection::vec(name(), 1..30)) {
        let mut patterns = patterns;
        patterns.sort();
        patterns.dedup();
        let mut m = HostMatcher::new();
        for p in &patterns {
            m.insert(p, p.clone());
        }
        for q in &queries {
            let got = m.find(q.to_uppercase().as_bytes()).map(|h| h.value());
            let want = naive_host(&patterns, q);
            // Equal-length suffixes cannot both match a name, so the answer is unique.
            prop_assert_eq!(got, want, "query {}", q);
        }
    }

    #[test]
    fn cidr_map_agrees_with_naive_v6(nets in prop::collection::vec((any::<u16>(), 0u8..=128), 0..40), ips in prop::collection::vec(any::<u16>(), 1..40)) {
        // Addresses share 2001:db8::/32 and a random 16-bit head, so that prefixes overlap.
        let addr = |head: u16| std::net::Ipv6Addr::new(0x2001, 0x0db8, head, head.rotate_left(3), 0, 0, 0, u16::from(head.is_multiple_of(7)));
        let nets: Vec<ipnet::Ipv6Net> = nets.into_iter().map(|(h, l)| ipnet::Ipv6Net::new(addr(h), l).unwrap().trunc()).collect();
        let mut m = CidrMap::new();
        let mut kept: Vec<ipnet::Ipv6Net> = Vec::new();
        for n in &nets {
            if m.insert((*n).into(), *n) {
                kept.push(*n);
            }
        }
        for h in ips {
            let ip = addr(h);
            let got = m.find(ip.into()).map(|(v, _)| *v);
            let want = kept.iter().filter(|n| n.contains(&ip)).max_by_key(|n| n.prefix_len()).copied();
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn mangled_configurations_never_panic(edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8)) {
        // A configuration that exercises every kind, with its bytes flipped, inserted, deleted:
        // whatever comes out must be findings or a table, never a panic.
        let mut bytes = MANGLE_SEED.as_bytes().to_vec();
        for (at, byte, op) in edits {
            let i = at.index(bytes.len().max(1));
            match op {
                0 if i < bytes.len() => bytes[i] = byte,
                1 => bytes.insert(i.min(bytes.len()), byte),
                _ if i < bytes.len() => {
                    bytes.remove(i);
                }
                _ => {}
            }
        }
        let b = build(&[Source::new("m.yaml", bytes)], None, &Options::default());
        prop_assert!(b.table.is_some() || b.errors() > 0);
        for f in &b.findings {
            prop_assert!(f.line >= 1);
        }
    }

    #[test]
    fn cidr_map_agrees_with_naive(nets in prop::collection::vec((any::<u32>(), 0u8..=32), 0..40), ips in prop::collection::vec(any::<u32>(), 1..40)) {
        let nets: Vec<ipnet::Ipv4Net> = nets.into_iter().map(|(a, l)| ipnet::Ipv4Net::new(a.into(), l).unwrap().trunc()).collect();
        let mut m = CidrMap::new();
        let mut kept: Vec<ipnet::Ipv4Net> = Vec::new();
        for n in &nets {
            if m.insert((*n).into(), *n) {
                kept.push(*n);
            }
        }
        for ip in ips {
            let ip = std::net::Ipv4Addr::from(ip);
            let got = m.find(ip.into()).map(|(v, _)| *v);
            let want = kept.iter().filter(|n| n.contains(&ip)).max_by_key(|n| n.prefix_len()).copied();
            prop_assert_eq!(got, want);
        }
    }
}

#[test]
fn clusters_share_their_service_rule_and_empty_policy() {
    let yaml = se(
        "a",
        "hosts: [a.example.com]\nports: [{number: 80, name: http, protocol: HTTP}]\nresolution: DNS",
    ) + &se(
        "plain",
        "hosts: [b.example.com]\nports: [{number: 80, name: http, protocol: HTTP}, {number: 81, name: http2, protocol: HTTP}]\nresolution: DNS",
    ) + "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: v}\nspec:\n  hosts: [a.example.com]\n  http:\n  - route: [{destination: {host: a.example.com, subset: s}}]\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d}\nspec:\n  host: a.example.com\n  trafficPolicy: {outlierDetection: {consecutive5xxErrors: 3}}\n  subsets: [{name: s, labels: {v: '1'}, trafficPolicy: {tls: {mode: SIMPLE}}}]\n";
    let t = table(&yaml, "");
    let by_name = |name: &str| {
        let found = t.clusters.iter().find(|c| c.name == name);
        found.unwrap_or_else(|| panic!("no cluster {name}"))
    };
    let subset = by_name("outbound|80|s|a.example.com");
    assert_eq!(subset.host(), "a.example.com");
    assert_eq!(subset.service.key.name, "a");
    let rule = subset.destination_rule.as_ref().expect("the rule applies");
    assert_eq!(rule.key.name, "d");
    assert!(subset.policy.tls.is_some() && subset.policy.outlier_detection.is_some());
    let (b80, b81) = (
        by_name("outbound|80||b.example.com"),
        by_name("outbound|81||b.example.com"),
    );
    assert_eq!((b80.host(), b81.host()), ("b.example.com", "b.example.com"));
    assert!(b80.destination_rule.is_none());
    assert_eq!(*b80.policy, crate::spec::PolicySettings::default());
    assert!(
        std::sync::Arc::ptr_eq(&b80.policy, &b81.policy),
        "one empty policy for all"
    );
    assert!(
        std::sync::Arc::ptr_eq(&b80.service, &b81.service),
        "the registry's entry"
    );
}
