//! Metrics: after known traffic (connections with known bytes, a refused connection, a
//! rejected reload), `/stats/prometheus` on the admin and Prometheus ports agrees with what was
//! sent, under Istio's names and labels, and passes `promtool check metrics`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use dataplane_tests::{Proxy, Upstream, free_port};

const SERIES: &str = "{reporter=\"source\",destination_service=\"db.example.com\",destination_service_name=\"db.example.com\",destination_service_namespace=\"default\",request_protocol=\"tcp\",response_flags=\"-\"}";

fn config(port: u16, upstream: u16) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: db}}\nspec:\n  hosts: [db.example.com]\n  addresses: [127.0.0.32]\n  ports: [{{number: {port}, name: tcp, protocol: TCP}}]\n  resolution: STATIC\n  endpoints: [{{address: 127.0.0.1, ports: {{tcp: {upstream}}}}}]\n"
    )
}

fn scrape(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /stats/prometheus HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(
        out.contains("content-type: text/plain; version=0.0.4"),
        "{out}"
    );
    out.split_once("\r\n\r\n").unwrap().1.to_owned()
}

/// The value of the sample `name` (with its labels) in `text`.
fn value(text: &str, sample: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn counters_agree_with_the_traffic_and_pass_promtool() {
    let upstream = Upstream::start(b"U\n");
    let port = free_port();
    let args = ["--capture", "listeners"];
    let proxy = Proxy::start(
        &config(port, upstream.port),
        "outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n",
        &args,
        port,
    );
    // The admin and Prometheus ports are 0 (any free port): read them from the log.
    let admin_port = proxy.server_port("admin");
    let prom_port = proxy.server_port("prometheus");
    // 5 connections, each sending 1,000 bytes and reading the banner and the echo back.
    for _ in 0..5 {
        let mut s = TcpStream::connect(("127.0.0.32", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(&[7u8; 1000]).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut back = Vec::new();
        s.read_to_end(&mut back).unwrap();
        assert_eq!(back.len(), 2 + 1000);
    }
    // A connection to a VIP nobody declared on that port: refused under REGISTRY_ONLY.
    let mut refused = TcpStream::connect(("127.0.0.33", port)).unwrap();
    refused
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = refused.read(&mut [0u8; 1]);
    // A rejected reload.
    let bad = config(port, upstream.port).replace("[db.example.com]", "['*']");
    let tmp = proxy.config_file().with_extension("swp");
    std::fs::write(&tmp, bad).unwrap();
    std::fs::rename(&tmp, proxy.config_file()).unwrap();

    let expected = [
        (format!("istio_tcp_connections_opened_total{SERIES}"), 5),
        (format!("istio_tcp_connections_closed_total{SERIES}"), 5),
        (format!("istio_tcp_sent_bytes_total{SERIES}"), 5000),
        (format!("istio_tcp_received_bytes_total{SERIES}"), 5 * 1002),
        ("dataplane_config_reload_failures_total".into(), 1),
        ("dataplane_config_generation".into(), 1),
    ];
    let deadline = Instant::now() + Duration::from_secs(5);
    let text = loop {
        let text = scrape(prom_port);
        // Proxy::start's readiness probe (to 127.0.0.1, undeclared) is refused too.
        let refusals = value(&text, "dataplane_refusals_total{reason=\"registry_only\"}");
        let agree = expected.iter().all(|(s, v)| value(&text, s) == Some(*v))
            && refusals.is_some_and(|n| n >= 1);
        if agree {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "counters disagree with the traffic: expected {expected:?}\n{text}\n{}",
            proxy.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // The admin port serves the same families.
    let admin_text = scrape(admin_port);
    assert_eq!(value(&admin_text, &expected[0].0), Some(5), "{admin_text}");

    let Ok(mut promtool) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        println!("SKIPPED promtool check: promtool is not installed (scripts/install-test-deps)");
        return;
    };
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
