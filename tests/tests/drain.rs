//! Graceful drain: on SIGTERM (or `POST /drain`) readiness goes 503, new connections are
//! refused (and the Istio status port's `/healthz/ready` goes 503 too), a connection streaming through the proxy completes, and the process exits 0 once it
//! has; with a connection that never ends, the process exits 0 at `--drain-timeout`; a second
//! signal exits at once.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use dataplane_tests::{Proxy, Upstream, free_port};

const VIP: &str = "127.0.0.31";

fn config(port: u16, upstream: u16) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: db}}\nspec:\n  hosts: [db.example.com]\n  addresses: [{VIP}]\n  ports: [{{number: {port}, name: tcp, protocol: TCP}}]\n  resolution: STATIC\n  endpoints: [{{address: 127.0.0.1, ports: {{tcp: {upstream}}}}}]\n"
    )
}

/// The status of one admin request, or `None` when the admin port refuses.
fn admin(port: u16, method: &str, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("{method} {path} HTTP/1.1\r\nHost: admin\r\n\r\n").as_bytes())
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.get(9..12).and_then(|c| c.parse().ok())
}

fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(Instant::now() < deadline, "not within 5 s: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A connection through the proxy, past the upstream's banner.
fn open(port: u16) -> TcpStream {
    let mut s = TcpStream::connect((VIP, port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut banner = [0u8; 2];
    s.read_exact(&mut banner).unwrap();
    assert_eq!(&banner, b"U\n");
    s
}

/// Send `chunk` and read the echo back.
fn echo(s: &mut TcpStream, chunk: &[u8]) {
    s.write_all(chunk).unwrap();
    let mut back = vec![0u8; chunk.len()];
    s.read_exact(&mut back).unwrap();
    assert_eq!(back, chunk);
}

/// The proxy, its upstream, the service port, and the admin and status ports.
fn start(drain_timeout: &str, env: &[(&str, &str)]) -> (Proxy, Upstream, u16, u16, u16) {
    let upstream = Upstream::start(b"U\n");
    let port = free_port();
    let args = ["--capture", "listeners", "--drain-timeout", drain_timeout];
    let proxy = Proxy::start_env(&config(port, upstream.port), "", &args, env, port);
    // The admin and status ports are 0 (any free port): read them from the log.
    let admin_port = proxy.server_port("admin");
    eventually("ready", || admin(admin_port, "GET", "/ready") == Some(200));
    let status_port = proxy.server_port("status");
    eventually("the status port is ready", || {
        admin(status_port, "GET", "/healthz/ready") == Some(200)
    });
    assert_eq!(admin(status_port, "GET", "/config_dump"), Some(404));
    (proxy, upstream, port, admin_port, status_port)
}

#[test]
fn sigterm_lets_a_streaming_connection_finish_and_refuses_new_ones() {
    // Both drivers: cancelling a pending accept differs between io_uring and epoll.
    sigterm_drain(&[]);
    sigterm_drain(&[("DATAPLANE_IO_DRIVER", "epoll")]);
}

fn sigterm_drain(env: &[(&str, &str)]) {
    let (mut proxy, upstream, port, admin_port, status_port) = start("30s", env);
    let mut streaming = open(port);
    echo(&mut streaming, b"before the drain");
    proxy.signal("TERM");
    eventually("readiness goes 503", || {
        admin(admin_port, "GET", "/ready") == Some(503)
            && admin(status_port, "GET", "/healthz/ready") == Some(503)
    });
    eventually("new connections are refused", || {
        TcpStream::connect((VIP, port)).is_err()
    });
    // The established connection keeps streaming: 4 MiB in 64 KiB chunks, echoed back.
    let chunk: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
    for _ in 0..64 {
        echo(&mut streaming, &chunk);
    }
    assert_eq!(
        proxy.wait_exit(Duration::from_millis(300)),
        None,
        "exited early"
    );
    streaming.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    streaming.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "unexpected bytes after the half-close");
    assert_eq!(
        proxy.wait_exit(Duration::from_secs(5)),
        Some(0),
        "the proxy did not exit 0 once its last connection ended:\n{}",
        proxy.log()
    );
    // (Probes of the refusal may have reached the upstream too: look for the stream itself.)
    eventually("the upstream saw the whole stream", || {
        upstream
            .received()
            .iter()
            .any(|r| r.len() == 16 + 64 * 65536)
    });
    assert!(proxy.log().contains("drained: every connection finished"));
}

#[test]
fn post_drain_ends_at_the_timeout_and_a_second_signal_exits_at_once() {
    let (mut proxy, _upstream, port, admin_port, _) = start("1s", &[]);
    let mut idle = open(port);
    assert_eq!(admin(admin_port, "GET", "/drain"), Some(405));
    assert_eq!(admin(admin_port, "POST", "/drain"), Some(200));
    let started = Instant::now();
    let code = proxy.wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{}", proxy.log());
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "exited before the drain timeout with a connection open"
    );
    assert!(proxy.log().contains("drain timeout"), "{}", proxy.log());
    // The connection still open at the timeout is closed by the exit.
    let mut buf = [0u8; 1];
    // EOF or a reset; a read timeout (the connection left open) fails.
    let closed = idle.read(&mut buf);
    assert!(
        matches!(&closed, Ok(0))
            || closed.as_ref().is_err_and(|e| !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            )),
        "{closed:?}"
    );

    let (mut proxy, _upstream, port, ..) = start("60s", &[]);
    let _idle = open(port);
    proxy.signal("TERM");
    eventually("the drain begins", || proxy.log().contains("draining"));
    proxy.signal("TERM");
    assert_eq!(
        proxy.wait_exit(Duration::from_secs(5)),
        Some(0),
        "a second SIGTERM did not exit at once:\n{}",
        proxy.log()
    );
    assert!(proxy.log().contains("second signal"));
}
