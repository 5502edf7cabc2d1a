//! DNS-resolved upstreams against a stub DNS server: resolution and TTL-driven changes,
//! failover across addresses, DNS_ROUND_ROBIN's first address, DYNAMIC_DNS resolving the SNI,
//! NXDOMAIN, SERVFAIL, garbage answers and a DNS server that never answers.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use dataplane_tests::{Proxy, StubDns, Upstream, free_port};

const REGISTRY_ONLY: &str = "outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n";
const CURL_HELLO: &[u8] = include_bytes!("../../dataplane/testdata/client_hello_curl.bin");

/// The proxy in listeners mode on `port`, asking `dns` for names.
fn proxy_with_dns(config: &str, dns: std::net::SocketAddr, port: u16) -> Proxy {
    let dns = dns.to_string();
    Proxy::start(
        config,
        REGISTRY_ONLY,
        &["--capture", "listeners", "--dns-server", &dns],
        port,
    )
}

fn banner(addr: &str) -> Option<Vec<u8>> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut b = [0u8; 2];
    s.read_exact(&mut b).ok().map(|()| b.to_vec())
}

fn dns_entry(
    name: &str,
    host: &str,
    vip: &str,
    port: u16,
    target: u16,
    resolution: &str,
) -> String {
    format!(
        "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}}}\nspec:\n  hosts: [{host}]\n  addresses: [{vip}]\n  ports: [{{number: {port}, name: tcp, protocol: TCP, targetPort: {target}}}]\n  resolution: {resolution}\n"
    )
}

#[test]
fn dns_resolution_ttl_failover_and_round_robin() {
    let dns = StubDns::start();
    let target = free_port();
    let _a = Upstream::start_on(format!("127.0.0.1:{target}").parse().unwrap(), b"A\n");
    let _b = Upstream::start_on(format!("127.0.0.12:{target}").parse().unwrap(), b"B\n");
    dns.set("db.dns.test", &["127.0.0.1"], 1);
    // 127.0.0.13 refuses connections: DNS fails over to the next address, DNS_ROUND_ROBIN does not.
    dns.set("pair.dns.test", &["127.0.0.13", "127.0.0.1"], 60);
    let port = free_port();
    let config = dns_entry("db", "db.dns.test", "127.0.0.11", port, target, "DNS")
        + &dns_entry("pair", "pair.dns.test", "127.0.0.14", port, target, "DNS")
        + &dns_entry(
            "rr",
            "rr.dns.test",
            "127.0.0.15",
            port,
            target,
            "DNS_ROUND_ROBIN",
        );
    dns.set("rr.dns.test", &["127.0.0.13", "127.0.0.1"], 60);
    let proxy = proxy_with_dns(&config, dns.addr, port);

    assert_eq!(
        banner(&format!("127.0.0.11:{port}")).as_deref(),
        Some(&b"A\n"[..])
    );
    dns.set("db.dns.test", &["127.0.0.12"], 1);
    std::thread::sleep(Duration::from_millis(1300));
    assert_eq!(
        banner(&format!("127.0.0.11:{port}")).as_deref(),
        Some(&b"B\n"[..]),
        "the changed record is used after its TTL"
    );

    for _ in 0..4 {
        assert_eq!(
            banner(&format!("127.0.0.14:{port}")).as_deref(),
            Some(&b"A\n"[..]),
            "failover to the second address"
        );
    }
    assert_eq!(
        banner(&format!("127.0.0.15:{port}")),
        None,
        "DNS_ROUND_ROBIN uses only the first address"
    );
    let log = proxy.wait_access_log(8);
    assert!(
        log.iter()
            .any(|l| l["cluster"] == format!("outbound|{port}||rr.dns.test")
                && l["reason"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("connect_failed")),
        "{log:#?}"
    );
}

#[test]
fn dynamic_dns_resolves_the_sni_and_failures_are_logged() {
    let dns = StubDns::start();
    let target = free_port();
    let _a = Upstream::start_on(format!("127.0.0.1:{target}").parse().unwrap(), b"A\n");
    dns.set("abcdef.dyn.test", &["127.0.0.1"], 30);
    let port = free_port();
    let config = format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: dyn}}\nspec:\n  hosts: ['*.dyn.test']\n  ports: [{{number: {port}, name: tls, protocol: TLS, targetPort: {target}}}]\n  resolution: DYNAMIC_DNS\n"
    );
    let proxy = proxy_with_dns(&config, dns.addr, port);
    let hello = |name: &str| {
        let at = CURL_HELLO
            .windows(15)
            .position(|w| w == b"api.example.com")
            .unwrap();
        let mut h = CURL_HELLO.to_vec();
        h[at..at + 15].copy_from_slice(name.as_bytes());
        h
    };
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&hello("abcdef.dyn.test")).unwrap();
    let mut b = [0u8; 2];
    s.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"A\n");

    // NXDOMAIN: closed, and the log says why.
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(&hello("zzzzzz.dyn.test")).unwrap();
    let mut rest = Vec::new();
    assert!(s.read_to_end(&mut rest).is_err() || rest.is_empty());
    let log = proxy.wait_access_log(3);
    let failed = log
        .iter()
        .find(|l| l["sni"] == "zzzzzz.dyn.test")
        .expect("logged");
    assert_eq!(failed["outcome"], "error");
    assert!(
        failed["reason"].as_str().unwrap().contains("NXDOMAIN"),
        "{failed}"
    );
}

#[test]
fn truncated_answers_are_asked_again_over_tcp() {
    let dns = StubDns::start();
    let target = free_port();
    let _a = Upstream::start_on(format!("127.0.0.1:{target}").parse().unwrap(), b"A\n");
    dns.set("big.dns.test", &["127.0.0.1"], 30);
    dns.truncate("big.dns.test");
    let port = free_port();
    let config = dns_entry("big", "big.dns.test", "127.0.0.17", port, target, "DNS");
    let _proxy = proxy_with_dns(&config, dns.addr, port);
    assert_eq!(
        banner(&format!("127.0.0.17:{port}")).as_deref(),
        Some(&b"A\n"[..])
    );
}

#[test]
fn dns_server_down_fails_cleanly() {
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap(); // receives, never answers
    let port = free_port();
    let config = dns_entry("db", "down.dns.test", "127.0.0.16", port, 9, "DNS");
    let proxy = proxy_with_dns(&config, silent.local_addr().unwrap(), port);
    assert_eq!(banner(&format!("127.0.0.16:{port}")), None);
    let log = proxy.wait_access_log(2);
    let failed = log
        .iter()
        .find(|l| l["destination"] == format!("127.0.0.16:{port}"))
        .expect("logged");
    assert!(
        failed["reason"]
            .as_str()
            .unwrap()
            .contains("dns: down.dns.test: 127.0.0.1"),
        "{failed}"
    );
    assert!(
        failed["reason"].as_str().unwrap().contains("timeout"),
        "{failed}"
    );
}

#[test]
fn servfail_and_garbage_answers_fail_only_their_connection() {
    let dns = StubDns::start();
    let upstream = Upstream::start(b"U\n");
    dns.set("good.dns.test", &["127.0.0.1"], 30);
    let port = free_port();
    let config = dns_entry(
        "good",
        "good.dns.test",
        "127.0.0.17",
        port,
        upstream.port,
        "DNS",
    ) + &dns_entry("sf", "servfail.dns.test", "127.0.0.18", port, 9, "DNS")
        + &dns_entry("junk", "garbage.dns.test", "127.0.0.19", port, 9, "DNS");
    let proxy = proxy_with_dns(&config, dns.addr, port);
    // A connection to the good name stays open across the failures.
    let mut held = TcpStream::connect(format!("127.0.0.17:{port}")).unwrap();
    held.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut b = [0u8; 2];
    held.read_exact(&mut b).unwrap();
    assert_eq!(banner(&format!("127.0.0.18:{port}")), None);
    assert_eq!(banner(&format!("127.0.0.19:{port}")), None);
    held.write_all(b"still here").unwrap();
    let mut back = [0u8; 10];
    held.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"still here");
    assert_eq!(
        banner(&format!("127.0.0.17:{port}")).as_deref(),
        Some(&b"U\n"[..])
    );
    let log = proxy.wait_access_log(3);
    for (vip, want) in [
        ("127.0.0.18", "Server Failure"),
        ("127.0.0.19", "dns: garbage.dns.test"),
    ] {
        let entry = log
            .iter()
            .find(|l| l["destination"] == format!("{vip}:{port}"))
            .unwrap_or_else(|| panic!("{vip} logged: {log:?}"));
        let reason = entry["reason"].as_str().unwrap_or_default();
        assert!(reason.contains(want), "{vip}: {entry}");
    }
}
