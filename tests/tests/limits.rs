//! Resource limits on loopback (`listeners` capture): the per-worker connection limit closes
//! the connections beyond it at once and counts them; running out of file descriptors (the
//! proxy started under `prlimit --nofile`) backs off, keeps the connections it has, and
//! recovers when descriptors come back.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use dataplane_tests::{Proxy, Upstream, free_port};

const REGISTRY_ONLY: &str = "outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n";

fn config(vip: &str, port: u16, upstream: u16) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: db}}\nspec:\n  hosts: [db.example.com]\n  addresses: [{vip}]\n  ports: [{{number: {port}, name: tcp, protocol: TCP}}]\n  resolution: STATIC\n  endpoints: [{{address: 127.0.0.1, ports: {{tcp: {upstream}}}}}]\n"
    )
}

/// Connect and read the upstream's 2-byte banner; `None` when the proxy closed instead.
fn banner(addr: (&str, u16)) -> Option<TcpStream> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut b = [0u8; 2];
    s.read_exact(&mut b).ok()?;
    (b == *b"U\n").then_some(s)
}

fn echo(s: &mut TcpStream, msg: &[u8]) -> bool {
    let mut back = vec![0u8; msg.len()];
    s.write_all(msg).is_ok() && s.read_exact(&mut back).is_ok() && back == msg
}

fn metric(proxy: &Proxy, sample: &str) -> u64 {
    let port = proxy.server_port("prometheus");
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET /stats/prometheus HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn connections_beyond_the_per_worker_limit_are_closed_at_once() {
    let upstream = Upstream::start(b"U\n");
    let port = free_port();
    let proxy = Proxy::start(
        &config("127.0.0.50", port, upstream.port),
        REGISTRY_ONLY,
        &[
            "--capture",
            "listeners",
            "--workers",
            "1",
            "--max-connections-per-worker",
            "3",
        ],
        port,
    );
    // The readiness probe of Proxy::start has closed by now; three connections fit.
    std::thread::sleep(Duration::from_millis(200));
    let mut held: Vec<TcpStream> = (0..3)
        .map(|i| banner(("127.0.0.50", port)).unwrap_or_else(|| panic!("connection {i}")))
        .collect();
    let started = Instant::now();
    assert!(
        banner(("127.0.0.50", port)).is_none(),
        "the fourth is refused"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused at once, not left hanging"
    );
    for s in &mut held {
        assert!(
            echo(s, b"held"),
            "the connections within the limit are untouched"
        );
    }
    drop(held.pop());
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        banner(("127.0.0.50", port)).is_some(),
        "room again after a close"
    );
    std::thread::sleep(Duration::from_millis(400));
    assert!(
        metric(
            &proxy,
            "dataplane_refusals_total{reason=\"max_connections\"}"
        ) >= 1
    );
}

#[test]
fn running_out_of_descriptors_backs_off_and_recovers() {
    let upstream = Upstream::start(b"U\n");
    let port = free_port();
    let proxy = Proxy::start_with(
        &["prlimit", "--nofile=96:96"],
        &config("127.0.0.51", port, upstream.port),
        REGISTRY_ONLY,
        &[
            "--capture",
            "listeners",
            "--workers",
            "1",
            "--max-connections-per-worker",
            "1000",
        ],
        &[],
        port,
    );
    std::thread::sleep(Duration::from_millis(200));
    let mut first = banner(("127.0.0.51", port)).expect("first connection");
    // Far more connections than 96 descriptors allow: some are served, the rest wait in the
    // backlog or are closed; none of it disturbs the first connection.
    let mut flood: Vec<TcpStream> = Vec::new();
    for _ in 0..80 {
        if let Ok(s) = TcpStream::connect(("127.0.0.51", port)) {
            flood.push(s);
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(echo(&mut first, b"still served"), "{}", proxy.log());
    // The limit shows where a descriptor was refused: at accept (logged, and the accept loop
    // backs off) or at the upstream socket (that connection's access-log line). Which comes
    // first depends on whether the worker's accepts run ahead of its connection setups.
    let log = proxy.log();
    let at_connect = proxy.access_log().iter().any(|l| {
        l["reason"]
            .as_str()
            .unwrap_or("")
            .contains("Too many open files")
    });
    assert!(
        log.contains("Too many open files") || at_connect,
        "the limit was reached: {log}"
    );
    drop(flood);
    // Descriptors come back: new connections are served again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(mut s) = banner(("127.0.0.51", port)) {
            assert!(echo(&mut s, b"recovered"));
            break;
        }
        assert!(Instant::now() < deadline, "no recovery: {}", proxy.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(echo(&mut first, b"and still"));
}

#[test]
fn idle_tcp_connections_end_at_the_destination_rule_idle_timeout() {
    let upstream = Upstream::start(b"U\n");
    let port = free_port();
    let config = config("127.0.0.52", port, upstream.port)
        + "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: db}\nspec:\n  host: db.example.com\n  trafficPolicy: {connectionPool: {tcp: {idleTimeout: 1s}}}\n";
    let _proxy = Proxy::start(
        &config,
        REGISTRY_ONLY,
        &["--capture", "listeners", "--workers", "1"],
        port,
    );
    let mut idle = banner(("127.0.0.52", port)).expect("idle connection");
    let mut busy = banner(("127.0.0.52", port)).expect("busy connection");
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(2500) {
        assert!(echo(&mut busy, b"tick"), "a connection in use is kept");
        std::thread::sleep(Duration::from_millis(250));
    }
    // The idle one was closed by the proxy: EOF (or a reset), not data.
    idle.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut b = [0u8; 1];
    let closed = match idle.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        // A read timeout means the connection is still open.
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    };
    assert!(closed, "the idle connection is closed");
    assert!(echo(&mut busy, b"still"));
}
