//! The proxy in a real network: a client namespace whose egress is captured (nftables REDIRECT,
//! installed by `dataplane capture --apply`) into the proxy namespace, and an "internet"
//! namespace with real servers: nginx (HTTPS origins), redis-server, dnsmasq. Real clients:
//! curl (certificates verified end to end) and redis-cli. Root only; skipped otherwise.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use dataplane_tests::netns::{Topology, addr, available, make_certs};

const PORT: u16 = 15001;

struct Lab {
    topo: Topology,
    dir: tempfile::TempDir,
}

impl Lab {
    /// A topology with origins on 192.0.2.10-13 (nginx HTTPS, cert per name), and the proxy
    /// running `config` with `mesh`, capture rules applied.
    fn new(config: &str, mesh: &str, extra_addrs: &[&str]) -> Self {
        Self::with_capture(config, mesh, extra_addrs, "redirect")
    }

    fn with_capture(config: &str, mesh: &str, extra_addrs: &[&str], capture: &str) -> Self {
        let mut addrs = vec![
            "192.0.2.10/32",
            "192.0.2.11/32",
            "192.0.2.12/32",
            "192.0.2.13/32",
        ];
        addrs.extend(extra_addrs);
        let mut topo = Topology::new(&addrs);
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        make_certs(
            d,
            &[
                "a.example.com",
                "b.example.com",
                "*.w.example.com",
                "c.example.com",
            ],
        );
        let server = |ip: &str, cert: &str, body: &str| {
            format!(
                "  server {{ listen {ip}:443 ssl; ssl_certificate {}/{cert}.pem; ssl_certificate_key {}/{cert}.key; location / {{ return 200 \"{body}\\n\"; }} }}\n",
                d.display(),
                d.display()
            )
        };
        let nginx = format!(
            "worker_processes 1;\ndaemon off;\npid {0}/nginx.pid;\nerror_log {0}/nginx-error.log;\nevents {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {0}; proxy_temp_path {0}; fastcgi_temp_path {0}; uwsgi_temp_path {0}; scgi_temp_path {0};\n{1}{2}{3}{4}}}\n",
            d.display(),
            server("192.0.2.10", "a.example.com", "origin-a"),
            server("192.0.2.11", "b.example.com", "origin-b"),
            server("192.0.2.12", "star.w.example.com", "origin-w"),
            server("192.0.2.13", "c.example.com", "origin-c"),
        );
        std::fs::write(d.join("nginx.conf"), nginx).unwrap();
        let internet = topo.internet.clone();
        topo.spawn(
            &internet,
            &["nginx", "-c", &d.join("nginx.conf").display().to_string()],
            &d.join("nginx.log"),
        );
        topo.spawn(
            &internet,
            &[
                "dnsmasq",
                "--no-daemon",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--listen-address=172.16.2.2",
                "--address=/w.example.com/192.0.2.12",
                "--address=/fqdna.fqdn.com/192.0.2.30",
                "--address=/fqdnb.fqdn.com/192.0.2.31",
                "--pid-file=",
            ],
            &d.join("dnsmasq.log"),
        );
        std::fs::create_dir(d.join("config")).unwrap();
        std::fs::write(d.join("config/config.yaml"), config).unwrap();
        std::fs::write(d.join("mesh.yaml"), mesh).unwrap();
        let bin = dataplane_tests::binary().display().to_string();
        let proxy = topo.proxy.clone();
        let out = topo.exec(&proxy, &[&bin, "capture", "--capture", capture, "--apply"]);
        assert!(
            out.status.success(),
            "capture --apply: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let conf = d.join("config").display().to_string();
        let mesh_file = d.join("mesh.yaml").display().to_string();
        let dns = format!("{}:53", addr::INTERNET);
        topo.spawn(&proxy, &["bash", "-c", &format!("{bin} run --capture {capture} --config {conf} --mesh {mesh_file} --dns-server {dns} > {0}/access.log 2> {0}/proxy.log", d.display())], &d.join("spawn.log"));
        topo.wait_listening(&proxy, "127.0.0.1", PORT);
        topo.wait_listening(&internet, "192.0.2.13", 443);
        Self { topo, dir }
    }

    fn curl(&self, host: &str, ip: &str) -> std::process::Output {
        let ca = self.dir.path().join("ca.pem").display().to_string();
        let resolve = format!("{host}:443:{ip}");
        let url = format!("https://{host}/");
        self.topo.exec(
            &self.topo.client,
            &[
                "curl",
                "-sS",
                "--max-time",
                "10",
                "--cacert",
                &ca,
                "--resolve",
                &resolve,
                &url,
            ],
        )
    }

    fn access_log(&self) -> Vec<serde_json::Value> {
        std::thread::sleep(std::time::Duration::from_millis(200));
        std::fs::read_to_string(self.dir.path().join("access.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The access-log entry of the connection whose SNI was `sni`.
    fn entry_for_sni(&self, sni: &str) -> serde_json::Value {
        self.access_log()
            .into_iter()
            .find(|l| l["sni"] == sni)
            .unwrap_or_else(|| panic!("no access-log entry for {sni}"))
    }

    fn proxy_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("proxy.log")).unwrap_or_default()
    }
}

fn se(name: &str, body: &str) -> String {
    format!(
        "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}}}\nspec:\n{body}"
    )
}

fn https_config() -> String {
    se(
        "a",
        "  hosts: [a.example.com]\n  ports: [{number: 443, name: https, protocol: HTTPS}]\n  resolution: STATIC\n  endpoints: [{address: 192.0.2.10}]\n",
    ) + &se(
        "b",
        "  hosts: [b.example.com]\n  ports: [{number: 443, name: https, protocol: HTTPS}]\n  resolution: STATIC\n  endpoints: [{address: 192.0.2.11}]\n",
    ) + &se(
        "w",
        "  hosts: ['*.w.example.com']\n  ports: [{number: 443, name: https, protocol: HTTPS}]\n  resolution: DYNAMIC_DNS\n",
    )
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn https_routed_by_sni_registry_only() {
    if !available("https_routed_by_sni_registry_only") {
        return;
    }
    let lab = Lab::new(
        &https_config(),
        "outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n",
        &[],
    );
    // The client dials an address nobody has: capture sends it to the proxy, SNI picks the origin.
    let a = lab.curl("a.example.com", "203.0.113.50");
    assert_eq!(stdout(&a), "origin-a\n", "{a:?}\n{}", lab.proxy_log());
    let b = lab.curl("b.example.com", "203.0.113.50");
    assert_eq!(stdout(&b), "origin-b\n", "{b:?}");
    let w = lab.curl("x.w.example.com", "203.0.113.51");
    assert_eq!(
        stdout(&w),
        "origin-w\n",
        "wildcard host, DYNAMIC_DNS via dnsmasq: {w:?}\n{:?}",
        lab.access_log()
    );
    let c = lab.curl("c.example.com", "192.0.2.13");
    assert_eq!(
        c.status.code(),
        Some(35),
        "unregistered host under REGISTRY_ONLY: {c:?}"
    );
    // A kubelet-style probe of the Istio status port from the client side is not captured
    // (its destination is local) and answers ready.
    let probe = lab.topo.exec(
        &lab.topo.client,
        &[
            "curl",
            "-sS",
            "--max-time",
            "5",
            "http://172.16.1.1:15021/healthz/ready",
        ],
    );
    assert_eq!(stdout(&probe), "ready\n", "{probe:?}\n{}", lab.proxy_log());
    let log = lab.access_log();
    let by_sni = |sni: &str| {
        log.iter()
            .find(|l| l["sni"] == sni)
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(
        by_sni("a.example.com")["cluster"],
        "outbound|443||a.example.com"
    );
    assert_eq!(by_sni("a.example.com")["upstream"], "192.0.2.10:443");
    assert_eq!(by_sni("a.example.com")["destination"], "203.0.113.50:443");
    assert_eq!(by_sni("x.w.example.com")["upstream"], "192.0.2.12:443");
    assert_eq!(by_sni("c.example.com")["outcome"], "denied");
}

#[test]
fn ipv6_clients_are_captured_too() {
    if !available("ipv6_clients_are_captured_too") {
        return;
    }
    let lab = Lab::new(
        &https_config(),
        "outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n",
        &[],
    );
    let a = lab.curl("a.example.com", "[2001:db8::50]");
    assert_eq!(
        stdout(&a),
        "origin-a\n",
        "IPv6 REDIRECT, IP6T_SO_ORIGINAL_DST: {a:?}\n{}",
        lab.proxy_log()
    );
    let entry = lab.entry_for_sni("a.example.com");
    assert_eq!(entry["destination"], "[2001:db8::50]:443");
    assert!(
        entry["source"]
            .as_str()
            .unwrap()
            .starts_with("[fd00:1::2]:"),
        "{entry}"
    );
}

#[test]
fn tproxy_capture() {
    if !available("tproxy_capture") {
        return;
    }
    let lab = Lab::with_capture(
        &https_config(),
        "outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n",
        &[],
        "tproxy",
    );
    let a = lab.curl("a.example.com", "203.0.113.50");
    assert_eq!(
        stdout(&a),
        "origin-a\n",
        "TPROXY: {a:?}\n{}",
        lab.proxy_log()
    );
    let c = lab.curl("c.example.com", "192.0.2.13");
    assert_eq!(c.status.code(), Some(35), "{c:?}");
    let entry = lab.entry_for_sni("a.example.com");
    assert_eq!(
        entry["destination"], "203.0.113.50:443",
        "the transparent socket's local address"
    );
}

#[test]
fn https_passthrough_allow_any() {
    if !available("https_passthrough_allow_any") {
        return;
    }
    let lab = Lab::new(
        &https_config(),
        "outboundTrafficPolicy: {mode: ALLOW_ANY}\n",
        &[],
    );
    let c = lab.curl("c.example.com", "192.0.2.13");
    assert_eq!(
        stdout(&c),
        "origin-c\n",
        "passthrough to the original destination: {c:?}\n{}",
        lab.proxy_log()
    );
    let entry = lab.entry_for_sni("c.example.com");
    assert_eq!(entry["cluster"], "PassthroughCluster");
    assert_eq!(entry["upstream"], "192.0.2.13:443");
}

#[test]
fn redis_services_share_a_port_by_vip_and_failures_are_clean() {
    if !available("redis_services_share_a_port_by_vip_and_failures_are_clean") {
        return;
    }
    let config = se(
        "sessions",
        "  hosts: [sessions.cache.example.com]\n  addresses: [10.0.0.7]\n  ports: [{number: 6379, name: redis, protocol: Redis}]\n  resolution: STATIC\n  endpoints: [{address: 192.0.2.20}]\n",
    ) + &se(
        "rates",
        "  hosts: [rates.cache.example.com]\n  addresses: [10.0.0.8]\n  ports: [{number: 6379, name: redis, protocol: Redis}]\n  resolution: STATIC\n  endpoints: [{address: 192.0.2.21}]\n",
    ) + &se(
        "refused",
        "  hosts: [refused.example.com]\n  addresses: [10.0.0.5]\n  ports: [{number: 5000, name: tcp, protocol: TCP}]\n  resolution: STATIC\n  endpoints: [{address: 192.0.2.1, ports: {tcp: 1}}]\n",
    ) + &se(
        "blackhole",
        "  hosts: [blackhole.example.com]\n  addresses: [10.0.0.6]\n  ports: [{number: 5000, name: tcp, protocol: TCP}]\n  resolution: STATIC\n  endpoints: [{address: 198.51.100.99}]\n",
    ) + "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: blackhole}\nspec:\n  host: blackhole.example.com\n  trafficPolicy: {connectionPool: {tcp: {connectTimeout: 500ms}}}\n";
    // The seed's two external services sharing 3306 by VIP (config/examples, verbatim), DNS
    // resolved; and resolution NONE with a targetPort override.
    let examples = dataplane_tests::workspace().join("config/examples");
    let seed = |f: &str| {
        format!(
            "---\n{}",
            std::fs::read_to_string(examples.join(f)).unwrap()
        )
    };
    let legacy = "  hosts: [legacy.example.com]\n  addresses: [10.0.0.9]\n  ports: [{number: 7000, name: tcp, protocol: TCP, targetPort: 7001}]\n  resolution: NONE\n";
    let config = config
        + &seed("se-external-svc-1.yaml")
        + &seed("se-external-svc-2.yaml")
        + &se("legacy", legacy);
    let extra = [
        "192.0.2.20/32",
        "192.0.2.21/32",
        "192.0.2.30/32",
        "192.0.2.31/32",
    ];
    let mut lab = Lab::new(
        &config,
        "outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n",
        &extra,
    );
    let internet = lab.topo.internet.clone();
    let d = lab.dir.path().to_path_buf();
    for (ip, who) in [("192.0.2.20", "A"), ("192.0.2.21", "B")] {
        let dir = d.join(who);
        std::fs::create_dir(&dir).unwrap();
        lab.topo.spawn(
            &internet,
            &[
                "redis-server",
                "--bind",
                ip,
                "--port",
                "6379",
                "--protected-mode",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                &dir.display().to_string(),
            ],
            &d.join(format!("redis-{who}.log")),
        );
        lab.topo.wait_listening(&internet, ip, 6379);
        let set = lab
            .topo
            .exec(&internet, &["redis-cli", "-h", ip, "SET", "who", who]);
        assert_eq!(stdout(&set).trim(), "OK");
    }
    // Server-first banners, as MySQL greets its clients.
    for (bind, port, banner) in [
        ("192.0.2.30", 3306, "fqdna"),
        ("192.0.2.31", 3306, "fqdnb"),
        ("10.0.0.9", 7001, "none-target"),
    ] {
        let listen = format!("TCP-LISTEN:{port},bind={bind},fork,reuseaddr");
        let reply = format!("SYSTEM:printf {banner}");
        lab.topo.spawn(
            &internet,
            &["socat", &listen, &reply],
            &d.join(format!("socat-{banner}.log")),
        );
        lab.topo.wait_listening(&internet, bind, port);
    }
    let client = lab.topo.client.clone();
    for (target, want) in [
        ("10.0.0.0/3306", "fqdna"),
        ("10.1.0.0/3306", "fqdnb"),
        ("10.0.0.9/7000", "none-target"),
    ] {
        let got = lab.topo.exec(
            &client,
            &[
                "timeout",
                "5",
                "bash",
                "-c",
                &format!("exec 3<>/dev/tcp/{target}; cat <&3"),
            ],
        );
        assert_eq!(stdout(&got), want, "{target}: {got:?}\n{}", lab.proxy_log());
    }
    for (vip, who) in [("10.0.0.7", "A"), ("10.0.0.8", "B")] {
        let get = lab
            .topo
            .exec(&client, &["redis-cli", "-h", vip, "GET", "who"]);
        assert_eq!(
            stdout(&get).trim(),
            who,
            "{vip}: {get:?}\n{}",
            lab.proxy_log()
        );
    }
    // No service has 10.0.0.9: closed under REGISTRY_ONLY.
    let none = lab
        .topo
        .exec(&client, &["redis-cli", "-h", "10.0.0.9", "GET", "who"]);
    assert_ne!(stdout(&none).trim(), "A");
    // Upstream refusing, upstream blackholed (connect timeout from the DestinationRule), and a
    // connection to the proxy's own capture port (loop guard).
    for target in ["10.0.0.5/5000", "10.0.0.6/5000", "172.16.1.1/15001"] {
        let _ = lab.topo.exec(
            &client,
            &[
                "timeout",
                "5",
                "bash",
                "-c",
                &format!("exec 3<>/dev/tcp/{target}; cat <&3"),
            ],
        );
    }
    // ...and the proxy keeps serving everyone else.
    let again = lab
        .topo
        .exec(&client, &["redis-cli", "-h", "10.0.0.7", "GET", "who"]);
    assert_eq!(stdout(&again).trim(), "A");
    let log = lab.access_log();
    let reason = |dst: &str| {
        log.iter()
            .find(|l| l["destination"] == dst)
            .map(|l| l["reason"].as_str().unwrap_or_default().to_owned())
            .unwrap_or_default()
    };
    assert!(
        reason("10.0.0.5:5000").starts_with("connect_failed"),
        "{log:#?}"
    );
    assert_eq!(reason("10.0.0.6:5000"), "connect_timeout", "{log:#?}");
    assert_eq!(reason("172.16.1.1:15001"), "loop", "{log:#?}");
    assert_eq!(reason("10.0.0.9:6379"), "registry_only");
    // The capture rules come out again.
    let proxy = lab.topo.proxy.clone();
    let bin = dataplane_tests::binary().display().to_string();
    assert!(
        lab.topo
            .exec(&proxy, &[&bin, "capture", "--remove"])
            .status
            .success()
    );
    let tables = lab.topo.exec(&proxy, &["nft", "list", "tables"]);
    assert!(!stdout(&tables).contains("dataplane"));
}

#[test]
fn virtual_service_tls_route_splits_by_sni() {
    if !available("virtual_service_tls_route_splits_by_sni") {
        return;
    }
    let vs = "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: split}\nspec:\n  hosts: [c.example.com]\n  tls:\n  - match: [{sniHosts: [c.example.com]}]\n    route:\n    - {destination: {host: a.example.com}, weight: 50}\n    - {destination: {host: b.example.com}, weight: 50}\n";
    let c = se(
        "c",
        "  hosts: [c.example.com]\n  ports: [{number: 443, name: https, protocol: HTTPS}]\n  resolution: STATIC\n  endpoints: [{address: 192.0.2.13}]\n",
    );
    let lab = Lab::new(
        &(https_config() + &c + vs),
        "outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n",
        &[],
    );
    // The VirtualService's tls rule sends c.example.com's connections to a and b, half each
    // (the certificates are a's and b's, hence -k).
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for _ in 0..100 {
        let out = lab.topo.exec(
            &lab.topo.client,
            &[
                "curl",
                "-sSk",
                "--max-time",
                "10",
                "--resolve",
                "c.example.com:443:203.0.113.60",
                "https://c.example.com/",
            ],
        );
        *counts.entry(stdout(&out)).or_default() += 1;
    }
    let a = counts.get("origin-a\n").copied().unwrap_or(0);
    let b = counts.get("origin-b\n").copied().unwrap_or(0);
    assert_eq!(a + b, 100, "{counts:?}");
    assert!((30..=70).contains(&a), "50/50 gave {a}/{b}");
}
