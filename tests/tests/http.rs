//! The HTTP/1.1 router in the namespace topology: real curl in the client namespace, captured
//! by nftables into the proxy, and real nginx origins (HTTP and HTTPS, one verifying client
//! certificates), dnsmasq, a socat origin that never answers and a Python WebSocket echo in the
//! internet namespace. Root only; skipped otherwise.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::time::{Duration, Instant};

use dataplane_tests::lab::{ALLOW_ANY, Lab, REGISTRY_ONLY, doc, http_se, se};
use dataplane_tests::netns::available;

/// Count each distinct line of curl's output over a URL glob.
fn tally(out: &std::process::Output) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        *counts.entry(line.to_owned()).or_default() += 1;
    }
    counts
}

fn routing_config() -> Vec<(String, String)> {
    let config = http_se("a", "a.example.com", "192.0.2.20")
        + &http_se("b", "b.example.com", "192.0.2.21")
        + &se(
            "w",
            "  hosts: ['*.w.example.com']\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: DYNAMIC_DNS\n",
        )
        + &http_se("split", "split.example.com", "192.0.2.20")
        + &doc(
            "VirtualService",
            "split",
            "  hosts: [split.example.com]\n  http:\n  - route:\n    - {destination: {host: a.example.com}, weight: 80}\n    - {destination: {host: b.example.com}, weight: 20}\n",
        )
        + &http_se("faults", "faults.example.com", "192.0.2.20")
        + &doc(
            "VirtualService",
            "faults",
            "  hosts: [faults.example.com]\n  http:\n  - match: [{uri: {prefix: /abort}}]\n    fault: {abort: {httpStatus: 503, percentage: {value: 50}}}\n    route: [{destination: {host: faults.example.com}}]\n  - match: [{uri: {prefix: /rules}}]\n    route: [{destination: {host: faults.example.com}}]\n",
        )
        + &http_se("slow", "slow.example.com", "192.0.2.23")
        + &doc(
            "VirtualService",
            "slow",
            "  hosts: [slow.example.com]\n  http:\n  - timeout: 1s\n    route: [{destination: {host: slow.example.com}}]\n",
        )
        + &http_se("flaky", "flaky.example.com", "192.0.2.20")
        + &doc(
            "VirtualService",
            "flaky",
            "  hosts: [flaky.example.com]\n  http:\n  - retries: {attempts: 3, retryOn: '503'}\n    route: [{destination: {host: flaky.example.com}}]\n",
        )
        + &http_se("plain", "plain.example.com", "192.0.2.20")
        + &http_se("ws", "ws.example.com", "192.0.2.24")
        + &se(
            "down",
            "  hosts: [down.example.com]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: STATIC\n  endpoints: [{address: 192.0.2.22, ports: {http: 81}}]\n",
        );
    vec![("routing.yaml".to_owned(), config)]
}

#[test]
fn host_routing_keep_alive_and_registry_only() {
    if !available("host_routing_keep_alive_and_registry_only") {
        return;
    }
    let lab = Lab::new(REGISTRY_ONLY, &["--workers", "1"], |_| routing_config());
    // Two origins on port 80, chosen by Host alone (any destination address is captured).
    let (code, body) = lab.get("a.example.com", "192.0.2.99", "/x");
    assert_eq!(code, "200", "{body}\n{}", lab.proxy_log());
    assert!(body.starts_with("origin-a "), "{body}");
    assert!(
        body.ends_with("host=a.example.com"),
        "Host unchanged: {body}"
    );
    let (code, body) = lab.get("b.example.com", "192.0.2.99", "/");
    assert_eq!(
        (code.as_str(), body.as_str()),
        ("200", "origin-b host=b.example.com")
    );
    // Wildcard, DYNAMIC_DNS: the Host is resolved (dnsmasq: *.w.example.com -> origin-b).
    let (code, body) = lab.get("api.w.example.com", "192.0.2.99", "/");
    assert_eq!(
        (code.as_str(), body.as_str()),
        ("200", "origin-b host=api.w.example.com")
    );
    // Case, port and a trailing dot do not matter (spec §5.2).
    let out = lab.raw(
        "192.0.2.99",
        "GET / HTTP/1.1\\r\\nHost: A.Example.COM.:80\\r\\nConnection: close\\r\\n\\r\\n",
        None,
    );
    assert!(out.contains("origin-a "), "{out}");
    // Absolute-form target: its authority routes (RFC 9112 §3.2.2).
    let out = lab.raw(
        "192.0.2.99",
        "GET http://b.example.com/p HTTP/1.1\\r\\nHost: b.example.com\\r\\nConnection: close\\r\\n\\r\\n",
        None,
    );
    assert!(out.contains("origin-b"), "{out}");
    // HTTP/1.0 with Host is routed like 1.1 (Decisions 3) and closed after.
    let out = lab.raw(
        "192.0.2.99",
        "GET / HTTP/1.0\\r\\nHost: a.example.com\\r\\n\\r\\n",
        None,
    );
    assert!(
        out.contains("origin-a ") && out.ends_with("CLOSED\n"),
        "{out}"
    );
    // Pipelined requests, one to each origin and one refused, are answered in order.
    let out = lab.raw(
        "192.0.2.99",
        "GET /p1 HTTP/1.1\\r\\nHost: b.example.com\\r\\n\\r\\nGET /p2 HTTP/1.1\\r\\nHost: nowhere.example.com\\r\\n\\r\\nGET /p3 HTTP/1.1\\r\\nHost: a.example.com\\r\\nConnection: close\\r\\n\\r\\n",
        None,
    );
    let b = out.find("origin-b").expect("first answered");
    let blocked = out.find("502 Bad Gateway").expect("second answered");
    let a = out.find("origin-a").expect("third answered");
    assert!(b < blocked && blocked < a, "in order: {out}");
    // REGISTRY_ONLY: an unregistered Host gets a local 502, and no upstream connection.
    let (code, _) = lab.get("c.example.com", "192.0.2.22", "/");
    assert_eq!(code, "502");
    let out = lab.raw(
        "192.0.2.22",
        "GET / HTTP/1.1\\r\\nHost: c.example.com\\r\\nConnection: close\\r\\n\\r\\n",
        None,
    );
    assert!(out.contains("server: dataplane"), "Decisions 4: {out}");
    // Keep-alive both sides: three requests on one client connection reuse one origin
    // connection (nginx's $connection stays, $connection_requests counts).
    let out = lab.curl(&[
        "--resolve",
        "a.example.com:80:192.0.2.99",
        "http://a.example.com/1",
        "http://a.example.com/2",
        "http://a.example.com/3",
        "-w",
        "%{num_connects}\n",
    ]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let conns: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(conns.len(), 3, "{text}");
    assert!(
        conns.iter().all(|c| *c == conns[0]),
        "one origin connection: {text}"
    );
    assert_eq!(
        text.lines().filter(|l| *l == "0").count(),
        2,
        "curl reused its connection: {text}"
    );
    // A new client connection reuses the pooled origin connection (one worker here).
    let (_, again) = lab.get("a.example.com", "192.0.2.99", "/4");
    assert!(
        again.starts_with(&format!("origin-a {} ", conns[0])),
        "pooled: {again} after {text}"
    );
    // The responses carry the proxy's mark, each request is one access-log line.
    let out = lab.curl(&[
        "-i",
        "--resolve",
        "b.example.com:80:192.0.2.99",
        "http://b.example.com/",
    ]);
    let text = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(text.contains("x-envoy-upstream-service-time: "), "{text}");
    let log = lab.access_log();
    let blocked = log
        .iter()
        .find(|l| l["host"] == "c.example.com")
        .expect("logged");
    assert_eq!(blocked["response_code"], 502);
    assert!(blocked.get("upstream").is_none(), "{blocked}");
    assert!(
        log.iter()
            .filter(|l| l["path"] == "/1" || l["path"] == "/2" || l["path"] == "/3")
            .count()
            == 3
    );
    // A request's duration starts with its head: the client's idle time on the keep-alive
    // connection before it (1.5 s here) is not the request's.
    let idle = "import socket, time\n\
        c = socket.create_connection(('192.0.2.99', 80), timeout=10)\n\
        for p in ('/idle-1', '/idle-2'):\n\
        \x20   c.sendall(b'GET ' + p.encode() + b' HTTP/1.1\\r\\nHost: a.example.com\\r\\n\\r\\n')\n\
        \x20   print(c.recv(65536).split(b' ')[1].decode())\n\
        \x20   time.sleep(1.5)\n";
    let out = lab.topo.exec(&lab.topo.client, &["python3", "-c", idle]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "200\n200\n",
        "{out:?}"
    );
    let log = lab.access_log();
    let second = log.iter().find(|l| l["path"] == "/idle-2").expect("logged");
    assert!(second["duration_ms"].as_u64().unwrap() < 1000, "{second}");
    // Down origin (connection refused): 503 after the default retries, with the reason.
    let (code, body) = lab.get("down.example.com", "192.0.2.99", "/");
    assert_eq!(code, "503", "{body}");
    let log = lab.access_log();
    let down = log
        .iter()
        .find(|l| l["host"] == "down.example.com")
        .expect("logged");
    assert_eq!(down["response_flags"], "UF");
    assert!(
        down["reason"].as_str().unwrap().contains("connect_failed"),
        "{down}"
    );
    // Metrics: three connect attempts (Istio's default retries on connect-failure), the DNS
    // lookup of the wildcard host, and the service's namespace.
    std::thread::sleep(Duration::from_millis(600));
    let scrape = lab.topo.exec(
        &lab.topo.proxy,
        &["curl", "-sS", "http://127.0.0.1:15000/stats/prometheus"],
    );
    let text = String::from_utf8_lossy(&scrape.stdout).into_owned();
    assert!(
        text.contains(
            "dataplane_upstream_connect_failures_total{cluster=\"outbound|80||down.example.com\"} 3\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("dataplane_dns_queries_total{outcome=\"answered\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("destination_service=\"a.example.com\",destination_service_name=\"a.example.com\",destination_service_namespace=\"default\",request_protocol=\"http\",response_code=\"200\""),
        "{text}"
    );
}

#[test]
fn allow_any_passes_unregistered_hosts_to_their_destination() {
    if !available("allow_any_passes_unregistered_hosts_to_their_destination") {
        return;
    }
    let lab = Lab::new(ALLOW_ANY, &[], |_| {
        vec![("a.yaml".into(), http_se("a", "a.example.com", "192.0.2.20"))]
    });
    let (code, body) = lab.get("c.example.com", "192.0.2.22", "/");
    assert_eq!((code.as_str(), body.as_str()), ("200", "origin-c"));
    // A registered Host still goes to its service, whatever the destination address.
    let (_, body) = lab.get("a.example.com", "192.0.2.22", "/");
    assert!(body.starts_with("origin-a "), "{body}");
    let log = lab.access_log();
    let pass = log
        .iter()
        .find(|l| l["host"] == "c.example.com")
        .expect("logged");
    assert_eq!(pass["cluster"], "PassthroughCluster");
    assert_eq!(pass["upstream"], "192.0.2.22:80");
}

#[test]
fn virtual_service_split_faults_timeouts_and_retries() {
    if !available("virtual_service_split_faults_timeouts_and_retries") {
        return;
    }
    let lab = Lab::new(REGISTRY_ONLY, &[], |_| {
        let mut files = routing_config();
        // The seed's ServiceEntry and VirtualService, verbatim: a 5 s delay on every request.
        let examples = dataplane_tests::workspace().join("config/examples");
        for f in ["se-aliyun-com-ext.yaml", "vs-aliyun-com-ext.yaml"] {
            files.push((
                f.to_owned(),
                std::fs::read_to_string(examples.join(f)).unwrap(),
            ));
        }
        files
    });
    // Weighted 80/20 over 1,000 requests.
    let out = lab.curl(&[
        "--resolve",
        "split.example.com:80:192.0.2.99",
        "http://split.example.com/[1-1000]",
    ]);
    let counts = tally(&out);
    let a = counts
        .iter()
        .filter(|(k, _)| k.starts_with("origin-a "))
        .map(|(_, v)| *v)
        .sum::<usize>();
    let b = counts
        .iter()
        .filter(|(k, _)| k.starts_with("origin-b"))
        .map(|(_, v)| *v)
        .sum::<usize>();
    assert_eq!(a + b, 1000, "{counts:?}");
    eprintln!("80/20 split over 1,000 requests: {a}/{b}");
    assert!((750..=850).contains(&a), "80/20 split gave {a}/{b}");
    // The request metrics agree (published every 250 ms), and promtool accepts the text.
    std::thread::sleep(Duration::from_millis(600));
    let scrape = lab.topo.exec(
        &lab.topo.proxy,
        &["curl", "-sS", "http://127.0.0.1:15000/stats/prometheus"],
    );
    let text = String::from_utf8_lossy(&scrape.stdout).into_owned();
    let sum = |metric: &str| -> u64 {
        text.lines()
            .filter(|l| {
                l.starts_with(&format!("{metric}{{"))
                    && l.contains("response_code=\"200\"")
                    && (l.contains("destination_service=\"a.example.com\"")
                        || l.contains("destination_service=\"b.example.com\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    assert_eq!(sum("istio_requests_total"), 1000, "{text}");
    assert_eq!(sum("istio_request_duration_milliseconds_count"), 1000);
    assert_eq!(sum("istio_response_bytes_count"), 1000);
    let check = lab.topo.exec(
        &lab.topo.proxy,
        &[
            "bash",
            "-c",
            "curl -sS http://127.0.0.1:15000/stats/prometheus | promtool check metrics",
        ],
    );
    // promtool's linter (exit 3) objects to the unit in Istio's own histogram name, which
    // dashboards depend on; anything else, or a parse error (exit 1), fails.
    let report = String::from_utf8_lossy(&check.stdout).into_owned()
        + &String::from_utf8_lossy(&check.stderr);
    let only_istio_unit = report.lines().all(|l| {
        l.trim().is_empty()
            || l == "istio_request_duration_milliseconds use base unit \"seconds\" instead of \"milliseconds\""
    });
    assert!(
        check.status.success() || (check.status.code() == Some(3) && only_istio_unit),
        "promtool: {report}"
    );
    // Abort 503 at 50% over 1,000 requests.
    let out = lab.curl(&[
        "--resolve",
        "faults.example.com:80:192.0.2.99",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}\n",
        "http://faults.example.com/abort[1-1000]",
    ]);
    let codes = tally(&out);
    let aborted = codes.get("503").copied().unwrap_or(0);
    assert_eq!(
        aborted + codes.get("200").copied().unwrap_or(0),
        1000,
        "{codes:?}"
    );
    eprintln!("50% abort over 1,000 requests: {aborted} aborted");
    assert!((450..=550).contains(&aborted), "50% abort gave {aborted}");
    // A VirtualService without a matching rule: 404.
    let (code, _) = lab.get("faults.example.com", "192.0.2.99", "/elsewhere");
    assert_eq!(code, "404");
    // The seed's fixed 5 s delay at 100%: the request then succeeds.
    let started = Instant::now();
    let (code, body) = lab.get("www.aliyun.com", "192.0.2.99", "/");
    let took = started.elapsed();
    assert_eq!(code, "200", "{body}");
    assert!(
        took >= Duration::from_secs(5),
        "the delay is injected: {took:?}"
    );
    eprintln!("seed 5 s fixed delay: the request took {took:?}");
    // timeout: 1s against an origin that never answers: 504.
    let (code, body) = lab.get("slow.example.com", "192.0.2.99", "/");
    assert_eq!(
        (code.as_str(), body.as_str()),
        ("504", "upstream request timeout")
    );
    // Retries: attempts 3 on 503 means 4 requests at the origin; the default policy does not
    // retry a 503 (spec §9.4), so 1.
    let (code, _) = lab.get("flaky.example.com", "192.0.2.99", "/status503?flaky");
    assert_eq!(code, "503");
    let (code, _) = lab.get("plain.example.com", "192.0.2.99", "/status503?plain");
    assert_eq!(code, "503");
    assert_eq!(lab.origin_a_requests("/status503?flaky"), 4);
    assert_eq!(lab.origin_a_requests("/status503?plain"), 1);
    let log = lab.access_log();
    let timed_out = log
        .iter()
        .find(|l| l["host"] == "slow.example.com")
        .expect("logged");
    assert_eq!(timed_out["response_flags"], "UT");
}

#[test]
fn tls_origination_simple_mutual_and_clean_failures() {
    if !available("tls_origination_simple_mutual_and_clean_failures") {
        return;
    }
    let lab = Lab::new(REGISTRY_ONLY, &[], |d| {
        let p = d.display();
        let tls_se = |name: &str, ip: &str| {
            se(
                name,
                &format!(
                    "  hosts: [{name}.example.com]\n  ports: [{{number: 80, name: http, protocol: HTTP, targetPort: 443}}]\n  resolution: STATIC\n  endpoints: [{{address: {ip}}}]\n"
                ),
            )
        };
        let dr = |name: &str, tls: &str| {
            doc(
                "DestinationRule",
                name,
                &format!(
                    "  host: {name}.example.com\n  trafficPolicy:\n    portLevelSettings:\n    - port: {{number: 80}}\n      tls: {tls}\n"
                ),
            )
        };
        // The recipe from the seed, with DNS resolution (dnsmasq answers for the name).
        let secure = std::fs::read_to_string(
            dataplane_tests::workspace().join("config/examples/egress/tls-origination.yaml"),
        )
        .unwrap()
        .replace(
            "        sni: secure.example.com",
            &format!("        sni: secure.example.com\n        caCertificates: {p}/ca.pem"),
        );
        vec![
            ("secure.yaml".into(), secure),
            (
                "others.yaml".into(),
                tls_se("auto", "192.0.2.10")
                    + &dr(
                        "auto",
                        &format!(
                            "{{mode: SIMPLE, caCertificates: {p}/ca.pem, subjectAltNames: [secure.example.com]}}"
                        ),
                    )
                    + &tls_se("mtls", "192.0.2.11")
                    + &dr(
                        "mtls",
                        &format!(
                            "{{mode: MUTUAL, caCertificates: {p}/ca.pem, clientCertificate: {p}/client.pem, privateKey: {p}/client.key}}"
                        ),
                    )
                    + &tls_se("nocert", "192.0.2.11")
                    + &dr(
                        "nocert",
                        &format!(
                            "{{mode: SIMPLE, caCertificates: {p}/ca.pem, sni: mtls.example.com}}"
                        ),
                    )
                    + &tls_se("badca", "192.0.2.10")
                    + &dr(
                        "badca",
                        &format!("{{mode: SIMPLE, caCertificates: {p}/other/ca.pem}}"),
                    )
                    + &tls_se("badsan", "192.0.2.10")
                    + &dr(
                        "badsan",
                        &format!(
                            "{{mode: SIMPLE, caCertificates: {p}/ca.pem, subjectAltNames: [wrong.example.com]}}"
                        ),
                    )
                    + &tls_se("skip", "192.0.2.10")
                    + &dr("skip", "{mode: SIMPLE, insecureSkipVerify: true}")
                    + &tls_se("nofile", "192.0.2.10")
                    + &dr(
                        "nofile",
                        "{mode: SIMPLE, caCertificates: /nonexistent/ca.pem}",
                    ),
            ),
        ]
    });
    // SIMPLE: plain HTTP from the application, HTTPS to the origin.
    let (code, body) = lab.get("secure.example.com", "192.0.2.99", "/");
    assert_eq!(
        (code.as_str(), body.as_str()),
        ("200", "secure scheme=https sni=secure.example.com"),
        "{}",
        lab.proxy_log()
    );
    // SANs from the DestinationRule; SNI from the Host (auto SNI).
    let (code, body) = lab.get("auto.example.com", "192.0.2.99", "/");
    assert_eq!(
        (code.as_str(), body.as_str()),
        ("200", "secure scheme=https sni=auto.example.com")
    );
    // MUTUAL: nginx verifies the client certificate.
    let (code, body) = lab.get("mtls.example.com", "192.0.2.99", "/");
    assert_eq!(
        (code.as_str(), body.as_str()),
        ("200", "mutual verify=SUCCESS dn=CN=client")
    );
    // insecureSkipVerify: no CA, no name check.
    let (code, body) = lab.get("skip.example.com", "192.0.2.99", "/");
    assert_eq!(
        (code.as_str(), body.as_str()),
        ("200", "secure scheme=https sni=skip.example.com")
    );
    // Without a client certificate nginx refuses (400), and the proxy relays it.
    let (code, _) = lab.get("nocert.example.com", "192.0.2.99", "/");
    assert_eq!(code, "400");
    // A wrong CA, a wrong SAN and a missing CA file fail cleanly: 503, reason logged.
    for (host, reason) in [
        ("badca", "invalid peer certificate"),
        ("badsan", "not valid for name"),
        ("nofile", "/nonexistent/ca.pem"),
    ] {
        let (code, _) = lab.get(&format!("{host}.example.com"), "192.0.2.99", "/");
        assert_eq!(code, "503", "{host}");
        let log = lab.access_log();
        let entry = log
            .iter()
            .find(|l| l["host"] == format!("{host}.example.com"))
            .unwrap_or_else(|| panic!("{host} logged"));
        assert!(
            entry["reason"]
                .as_str()
                .unwrap_or_default()
                .contains(reason),
            "{host}: {entry}"
        );
    }
    // The other services kept serving.
    let (code, _) = lab.get("secure.example.com", "192.0.2.99", "/again");
    assert_eq!(code, "200");
}

#[test]
fn bodies_stream_with_bounded_memory_and_websocket_tunnels() {
    if !available("bodies_stream_with_bounded_memory_and_websocket_tunnels") {
        return;
    }
    let lab = Lab::new(REGISTRY_ONLY, &[], |_| routing_config());
    // 100 MB uploaded chunked (nginx reads and drops it), 100 MB downloaded: the proxy's peak memory stays far below.
    let big = lab.path("big.bin");
    let out = lab.curl(&[
        "--resolve",
        "a.example.com:80:192.0.2.99",
        "-H",
        "Transfer-Encoding: chunked",
        "-H",
        "Expect: 100-continue",
        "--data-binary",
        &format!("@{big}"),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "http://a.example.com/upload",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "200",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = lab.curl(&[
        "--resolve",
        "a.example.com:80:192.0.2.99",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{size_download}",
        "http://a.example.com/big",
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200 100000000");
    let peak_kb = lab.peak_rss_kb();
    eprintln!("proxy peak RSS after 2 x 100 MB: {peak_kb} kB");
    assert!(
        peak_kb < 64 * 1024,
        "bodies are streamed, not buffered: peak RSS {peak_kb} kB"
    );
    // WebSocket: the upgrade becomes a byte tunnel.
    let script = dataplane_tests::workspace().join("tests/helpers/ws_client.py");
    let out = lab.topo.exec(
        &lab.topo.client,
        &[
            "python3",
            &script.display().to_string(),
            "192.0.2.99",
            "80",
            "ws.example.com",
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "HTTP/1.1 101 Switching Protocols\nhello through the proxy\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn hostile_requests_get_a_clear_answer() {
    if !available("hostile_requests_get_a_clear_answer") {
        return;
    }
    let lab = Lab::new(REGISTRY_ONLY, &["--detect-timeout", "2s"], |_| {
        routing_config()
    });
    let cases: &[(&str, &str, &str)] = &[
        (
            "Content-Length with Transfer-Encoding",
            "POST / HTTP/1.1\\r\\nHost: a.example.com\\r\\nContent-Length: 4\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n0\\r\\n\\r\\n",
            "HTTP/1.1 400 ",
        ),
        (
            "two Content-Lengths",
            "POST / HTTP/1.1\\r\\nHost: a.example.com\\r\\nContent-Length: 4\\r\\nContent-Length: 5\\r\\n\\r\\nabcde",
            "HTTP/1.1 400 ",
        ),
        (
            "invalid chunk size",
            "POST / HTTP/1.1\\r\\nHost: a.example.com\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\nzz\\r\\nabc\\r\\n0\\r\\n\\r\\n",
            "HTTP/1.1 400 ",
        ),
        ("no Host", "GET / HTTP/1.1\\r\\n\\r\\n", "HTTP/1.1 400 "),
        (
            "two Hosts",
            "GET / HTTP/1.1\\r\\nHost: a.example.com\\r\\nHost: c.example.com\\r\\n\\r\\n",
            "HTTP/1.1 400 ",
        ),
    ];
    for (what, request, want) in cases {
        let out = lab.raw("192.0.2.99", request, None);
        assert!(out.starts_with(want), "{what}: {out}");
        assert!(
            out.ends_with("CLOSED\n"),
            "{what}: the connection is closed: {out}"
        );
        assert!(out.contains("server: dataplane"), "{what}: {out}");
    }
    // An oversized head: 431.
    let huge = format!(
        "GET / HTTP/1.1\\r\\nHost: a.example.com\\r\\nX-Big: {}\\r\\n\\r\\n",
        "a".repeat(70_000)
    );
    let out = lab.raw("192.0.2.99", &huge, None);
    assert!(
        out.starts_with("HTTP/1.1 431 "),
        "{}",
        &out[..out.len().min(200)]
    );
    // A head sent one byte per second is cut at the detection timeout (2 s here), long
    // before its 40 bytes are out.
    let started = Instant::now();
    let out = lab.raw(
        "192.0.2.99",
        "GET /slowloris HTTP/1.1\\r\\nHost: a.example.com\\r\\n\\r\\n",
        Some("1"),
    );
    let took = started.elapsed();
    assert!(
        out.contains("CLOSED") || out.contains("SEND FAILED"),
        "cut: {out}"
    );
    assert!(took < Duration::from_secs(20), "cut after {took:?}");
    // The proxy still serves.
    let (code, _) = lab.get("a.example.com", "192.0.2.99", "/after");
    assert_eq!(code, "200");
}

#[test]
fn destination_rule_pool_balancing_and_outlier_detection() {
    if !available("destination_rule_pool_balancing_and_outlier_detection") {
        return;
    }
    let two = |name: &str, first: &str| {
        se(
            name,
            &format!(
                "  hosts: [{name}.example.com]\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  resolution: STATIC\n  endpoints: [{first}, {{address: 192.0.2.21}}]\n"
            ),
        )
    };
    let dr = |name: &str, policy: &str| {
        doc(
            "DestinationRule",
            name,
            &format!("  host: {name}.example.com\n  trafficPolicy:\n{policy}"),
        )
    };
    let rr = "    loadBalancer: {simple: ROUND_ROBIN}\n";
    let config = two("rr", "{address: 192.0.2.20}")
        + &dr("rr", rr)
        + &two("nood", "{address: 192.0.2.20, ports: {http: 8503}}")
        + &dr("nood", rr)
        + &two("od", "{address: 192.0.2.20, ports: {http: 8503}}")
        + &dr(
            "od",
            &format!(
                "{rr}    outlierDetection: {{consecutive5xxErrors: 1, baseEjectionTime: 60s, maxEjectionPercent: 50}}\n"
            ),
        )
        + &http_se("once", "once.example.com", "192.0.2.20")
        + &dr(
            "once",
            "    connectionPool: {http: {maxRequestsPerConnection: 1}}\n",
        )
        + &http_se("limited", "limited.example.com", "192.0.2.23")
        + &dr(
            "limited",
            "    connectionPool: {tcp: {maxConnections: 1}, http: {http1MaxPendingRequests: 1}}\n",
        )
        + &doc(
            "VirtualService",
            "limited",
            "  hosts: [limited.example.com]\n  http:\n  - timeout: 2s\n    route: [{destination: {host: limited.example.com}}]\n",
        );
    let lab = Lab::new(REGISTRY_ONLY, &["--workers", "1"], |_| {
        vec![("dr.yaml".to_owned(), config)]
    });
    let bodies = |host: &str, n: usize| {
        let out = lab.curl(&[
            "--resolve",
            &format!("{host}:80:192.0.2.99"),
            &format!("http://{host}/[1-{n}]"),
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let codes = |host: &str, n: usize| {
        let out = lab.curl(&[
            "--resolve",
            &format!("{host}:80:192.0.2.99"),
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}\n",
            &format!("http://{host}/[1-{n}]"),
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // ROUND_ROBIN alternates the two endpoints.
    let text = bodies("rr.example.com", 10);
    let order: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| if l.starts_with("origin-a") { "a" } else { "b" })
        .collect();
    assert_eq!(order.len(), 10, "{text}");
    assert!(
        order.windows(2).all(|w| w[0] != w[1]),
        "round robin alternates: {order:?}"
    );
    // One endpoint answers 503: without outlier detection half the requests fail; with
    // consecutive5xxErrors: 1 it is ejected after its first 503.
    let failed = |text: &str| text.lines().filter(|l| *l == "503").count();
    let text = codes("nood.example.com", 20);
    assert_eq!(failed(&text), 10, "{text}");
    let text = codes("od.example.com", 20);
    assert_eq!(failed(&text), 1, "{text}");
    // maxRequestsPerConnection: 1: every request on a new origin connection.
    let text = bodies("once.example.com", 3);
    let conns: std::collections::BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    assert_eq!(conns.len(), 3, "{text}");
    // maxConnections: 1 with one pending request allowed: of three concurrent requests to an
    // origin that never answers, one overflows at once (503), two time out in turn (504).
    let out = lab.curl(&[
        "--parallel",
        "--parallel-immediate",
        "--parallel-max",
        "3",
        "--resolve",
        "limited.example.com:80:192.0.2.99",
        "-w",
        "%{http_code}\n",
        "-o",
        "/dev/null",
        "http://limited.example.com/1",
        "-o",
        "/dev/null",
        "http://limited.example.com/2",
        "-o",
        "/dev/null",
        "http://limited.example.com/3",
    ]);
    let mut codes: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    codes.sort();
    assert_eq!(codes, ["503", "504", "504"], "{}", lab.proxy_log());
    let log = lab.access_log();
    assert!(
        log.iter()
            .any(|l| l["host"] == "limited.example.com" && l["response_flags"] == "UO"),
        "overflow flagged"
    );
}
