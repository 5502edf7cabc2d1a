//! The L4 proxy against real sockets on loopback, `listeners` capture: VIP demultiplexing with
//! server-first upstreams, SNI routing with real ClientHello bytes forwarded byte for byte,
//! REGISTRY_ONLY refusals, and bulk transfers both ways at once with half-close.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use dataplane_tests::{Proxy, Upstream, free_port};

const REGISTRY_ONLY: &str = "outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n";
const CURL_HELLO: &[u8] = include_bytes!("../../dataplane/testdata/client_hello_curl.bin");

fn se(name: &str, body: &str) -> String {
    format!(
        "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}}}\nspec:\n{body}"
    )
}

fn static_tcp(name: &str, vip: &str, port: u16, upstream: u16) -> String {
    se(
        name,
        &format!(
            "  hosts: [{name}.example.com]\n  addresses: [{vip}]\n  ports: [{{number: {port}, name: tcp, protocol: TCP}}]\n  resolution: STATIC\n  endpoints: [{{address: 127.0.0.1, ports: {{tcp: {upstream}}}}}]\n"
        ),
    )
}

/// A STATIC ServiceEntry for `host` on `port` with no addresses (protocol `proto`: TLS, TCP),
/// whose one endpoint is 127.0.0.1:`upstream`.
fn static_entry(name: &str, host: &str, proto: &str, port: u16, upstream: u16) -> String {
    let port_name = proto.to_lowercase();
    se(
        name,
        &format!(
            "  hosts: ['{host}']\n  ports: [{{number: {port}, name: {port_name}, protocol: {proto}}}]\n  resolution: STATIC\n  endpoints: [{{address: 127.0.0.1, ports: {{{port_name}: {upstream}}}}}]\n"
        ),
    )
}

fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn read_exact(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    s.read_exact(&mut buf).unwrap();
    buf
}

/// Reads until EOF; `None` when the connection was reset.
fn read_to_end(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok().map(|_| out)
}

/// A ClientHello for `name` (15 bytes, like api.example.com): the curl capture with its server
/// name replaced.
fn hello_for(name: &str) -> Vec<u8> {
    assert_eq!(name.len(), 15);
    let at = CURL_HELLO
        .windows(15)
        .position(|w| w == b"api.example.com")
        .unwrap();
    let mut hello = CURL_HELLO.to_vec();
    hello[at..at + 15].copy_from_slice(name.as_bytes());
    hello
}

#[test]
fn tcp_services_share_a_port_by_vip() {
    let (a, b) = (Upstream::start(b"A\n"), Upstream::start(b"B\n"));
    let port = free_port();
    let config = static_tcp("db-a", "127.0.0.2", port, a.port)
        + &static_tcp("db-b", "127.0.0.3", port, b.port);
    let proxy = Proxy::start(
        &config,
        REGISTRY_ONLY,
        &["--capture", "listeners", "--workers", "2"],
        port,
    );

    for (vip, banner, upstream) in [("127.0.0.2", b"A\n", &a), ("127.0.0.3", b"B\n", &b)] {
        let mut s = connect(&format!("{vip}:{port}"));
        // The upstream speaks first: the proxy dialled it on accept, without waiting for us.
        assert_eq!(read_exact(&mut s, 2), banner);
        s.write_all(b"ping").unwrap();
        assert_eq!(read_exact(&mut s, 4), b"ping");
        s.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_to_end(&mut s), Some(Vec::new()));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while upstream.received().is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(upstream.received(), vec![b"ping".to_vec()]);
    }

    // An address that is no service's VIP: closed without a byte under REGISTRY_ONLY.
    let mut s = connect(&format!("127.0.0.4:{port}"));
    assert!(read_to_end(&mut s).is_none_or(|b| b.is_empty()));

    let log = proxy.wait_access_log(3);
    let outcomes: Vec<(String, String)> = log
        .iter()
        .map(|l| {
            (
                l["outcome"].as_str().unwrap_or_default().to_owned(),
                l["cluster"]
                    .as_str()
                    .unwrap_or_else(|| l["reason"].as_str().unwrap_or_default())
                    .to_owned(),
            )
        })
        .collect();
    assert!(
        outcomes.contains(&(
            "forwarded".into(),
            format!("outbound|{port}||db-a.example.com")
        )),
        "{outcomes:?}"
    );
    assert!(
        outcomes.contains(&(
            "forwarded".into(),
            format!("outbound|{port}||db-b.example.com")
        )),
        "{outcomes:?}"
    );
    assert!(
        outcomes.contains(&("denied".into(), "registry_only".into())),
        "{outcomes:?}"
    );
    let forwarded = log.iter().find(|l| l["outcome"] == "forwarded").unwrap();
    assert_eq!(forwarded["bytes_sent"], 4);
    assert_eq!(forwarded["bytes_received"], 6);
}

#[test]
fn tls_routed_by_sni_bytes_forwarded_exactly() {
    let (api, wild) = (Upstream::start(b"C"), Upstream::start(b"D"));
    let port = free_port();
    let config = static_entry("api", "api.example.com", "TLS", port, api.port)
        + &static_entry("wild", "*.w.example.com", "TLS", port, wild.port);
    let proxy = Proxy::start(&config, REGISTRY_ONLY, &["--capture", "listeners"], port);

    for (hello, banner) in [
        (CURL_HELLO.to_vec(), b"C"),
        (hello_for("x.w.example.com"), b"D"),
    ] {
        let mut s = connect(&format!("127.0.0.1:{port}"));
        // The hello in three segments: the proxy must wait for all of it.
        for part in hello.chunks(200) {
            s.write_all(part).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(read_exact(&mut s, 1), banner);
        assert_eq!(
            read_exact(&mut s, hello.len()),
            hello,
            "echoed byte for byte"
        );
        s.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_to_end(&mut s), Some(Vec::new()));
    }

    // Unregistered SNI: closed after the ClientHello, no upstream contacted.
    let mut s = connect(&format!("127.0.0.1:{port}"));
    s.write_all(&hello_for("api.example.org")).unwrap();
    assert!(read_to_end(&mut s).is_none_or(|b| b.is_empty()));

    // (The readiness probe of Proxy::start is in the log too: a connection closed during
    // detection.)
    let log = proxy.wait_access_log(4);
    let denied = log
        .iter()
        .find(|l| l["outcome"] == "denied" && l["sni"].is_string())
        .expect("a denial");
    assert_eq!(denied["sni"], "api.example.org");
    assert_eq!(denied["reason"], "registry_only");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(api.received(), vec![CURL_HELLO.to_vec()]);
    assert_eq!(wild.received(), vec![hello_for("x.w.example.com")]);
}

#[test]
fn a_silent_client_on_a_detecting_port_goes_to_tcp_after_the_detection_timeout() {
    // A TLS service and a server-first TCP service without addresses share the port, so the
    // proxy waits for a ClientHello first. A client that says nothing until greeted (MySQL's
    // do) goes to the TCP service once `--detect-timeout` has passed (Decisions 9), and its
    // upstream speaks first. On both drivers: each waits for readiness its own way.
    let (api, db) = (Upstream::start(b"T"), Upstream::start(b"greeting\n"));
    for driver in ["uring", "epoll"] {
        let port = free_port();
        let config = static_entry("api", "api.example.com", "TLS", port, api.port)
            + &static_entry("db", "db.example.com", "TCP", port, db.port);
        let proxy = Proxy::start_env(
            &config,
            REGISTRY_ONLY,
            &["--capture", "listeners", "--detect-timeout", "1s"],
            &[("DATAPLANE_IO_DRIVER", driver)],
            port,
        );

        let started = std::time::Instant::now();
        let mut s = connect(&format!("127.0.0.1:{port}"));
        assert_eq!(read_exact(&mut s, 9), b"greeting\n");
        let greeted = started.elapsed();
        assert!(
            greeted >= Duration::from_millis(900),
            "{driver}: greeted after {greeted:?}, before the detection timeout"
        );
        s.write_all(b"ping").unwrap();
        assert_eq!(read_exact(&mut s, 4), b"ping");
        s.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_to_end(&mut s), Some(Vec::new()));

        // A ClientHello on the same port still goes by its SNI.
        let mut t = connect(&format!("127.0.0.1:{port}"));
        t.write_all(CURL_HELLO).unwrap();
        assert_eq!(read_exact(&mut t, 1), b"T");
        drop(t);

        let log = proxy.wait_access_log(3);
        let db_line = log
            .iter()
            .find(|l| l["cluster"] == format!("outbound|{port}||db.example.com"))
            .expect("the silent client's line");
        assert!(db_line["sni"].is_null(), "{driver}: {db_line}");
        assert_eq!(db_line["outcome"], "forwarded");
        assert_eq!(db_line["bytes_sent"], 4);
        let api_line = log
            .iter()
            .find(|l| l["cluster"] == format!("outbound|{port}||api.example.com"))
            .expect("the TLS client's line");
        assert_eq!(api_line["sni"], "api.example.com");
    }
}

#[test]
fn interactive_round_trips_on_every_driver_and_forwarding_mode() {
    // Request/response traffic: each direction must wake on its own (a worker blocked in one
    // direction would stall the other; see the note on non-blocking calls in forward/mod.rs).
    let upstream = Upstream::start(b"");
    for driver in ["uring", "epoll"] {
        for forward in ["copy", "splice"] {
            let port = free_port();
            let config = static_tcp("echo", "127.0.0.6", port, upstream.port);
            let args = [
                "--capture",
                "listeners",
                "--workers",
                "1",
                "--forward",
                forward,
            ];
            let _proxy = Proxy::start_env(
                &config,
                REGISTRY_ONLY,
                &args,
                &[("DATAPLANE_IO_DRIVER", driver)],
                port,
            );
            let mut s = connect(&format!("127.0.0.6:{port}"));
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            for i in 0..20 {
                let msg = format!("ping {i}");
                s.write_all(msg.as_bytes()).unwrap();
                let mut got = vec![0; msg.len()];
                s.read_exact(&mut got)
                    .unwrap_or_else(|e| panic!("{driver}/{forward}: round trip {i}: {e}"));
                assert_eq!(got, msg.as_bytes());
            }
        }
    }
}

#[test]
fn http_port_local_replies() {
    let web = Upstream::start(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
    let port = free_port();
    let http = |name: &str, upstream: u16| {
        se(
            name,
            &format!(
                "  hosts: [{name}.example.com]\n  ports: [{{number: {port}, name: http, protocol: HTTP}}]\n  resolution: STATIC\n  endpoints: [{{address: 127.0.0.1, ports: {{http: {upstream}}}}}]\n"
            ),
        )
    };
    let config = http("web", web.port) + &http("down", 1);
    let proxy = Proxy::start(&config, REGISTRY_ONLY, &["--capture", "listeners"], port);
    let request = |raw: &str| {
        let mut s = connect(&format!("127.0.0.1:{port}"));
        s.write_all(raw.as_bytes()).unwrap();
        let mut head = vec![0u8; 12];
        s.read_exact(&mut head).unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        (
            String::from_utf8_lossy(&head).into_owned(),
            String::from_utf8_lossy(&rest).into_owned(),
        )
    };
    // The upstream answers at once and keeps the connection: read just its response, which
    // the router relays with the header saying it went through the proxy (Decisions 4).
    let mut s = connect(&format!("127.0.0.1:{port}"));
    s.write_all(b"GET / HTTP/1.1\r\nHost: web.example.com\r\n\r\n")
        .unwrap();
    let want = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-envoy-upstream-service-time: ";
    assert_eq!(read_exact(&mut s, want.len()), want);
    let mut rest = Vec::new();
    while !rest.ends_with(b"\r\n\r\nok") {
        rest.extend(read_exact(&mut s, 1));
    }
    drop(s); // closing lets the proxy finish the connection and log it
    // Local replies keep a keep-alive connection open: these requests ask for a close.
    let (status, rest) =
        request("GET / HTTP/1.1\r\nHost: down.example.com:8080\r\nConnection: close\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 503", "upstream refused: {rest}");
    assert!(rest.contains("server: dataplane"), "{rest}");
    let (status, _) =
        request("GET / HTTP/1.1\r\nHost: nobody.example.org\r\nConnection: close\r\n\r\n");
    assert_eq!(
        status, "HTTP/1.1 502",
        "unregistered Host under REGISTRY_ONLY"
    );
    let (status, _) = request("GET / HTTP/1.1\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 400", "no Host");
    let log = proxy.wait_access_log(4);
    let down = log
        .iter()
        .find(|l| l["host"] == "down.example.com:8080")
        .expect("logged");
    assert_eq!(down["outcome"], "local_reply");
    assert_eq!(down["response_code"], 503);
    assert_eq!(down["response_flags"], "UF");
    assert!(
        down["reason"]
            .as_str()
            .unwrap()
            .starts_with("connect_failed"),
        "{down}"
    );
}

/// Send `len` bytes of pattern `seed` on `conn` (then half-close) while reading everything the
/// peer sends until EOF; returns the checksum and length of what was read.
fn exchange(conn: TcpStream, seed: u64, len: usize) -> (u64, usize) {
    let mut writer = conn.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        for chunk in pattern(seed, len) {
            writer.write_all(&chunk).unwrap();
        }
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut reader = conn;
    let (mut h, mut total, mut buf) = (0xcbf2_9ce4_8422_2325u64, 0usize, vec![0; 1 << 16]);
    loop {
        let n = reader.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h = checksum(&buf[..n], h);
        total += n;
    }
    sender.join().unwrap();
    (h, total)
}

/// A deterministic byte stream.
fn pattern(seed: u64, len: usize) -> impl Iterator<Item = Vec<u8>> {
    let mut x = seed | 1;
    let mut left = len;
    std::iter::from_fn(move || {
        if left == 0 {
            return None;
        }
        let n = left.min(64 * 1024);
        left -= n;
        Some(
            (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect(),
        )
    })
}

fn checksum(data: &[u8], mut h: u64) -> u64 {
    for &b in data {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    h
}

#[test]
fn bulk_both_ways_at_once_with_half_close_copy() {
    bulk("copy");
}

#[test]
fn bulk_both_ways_at_once_with_half_close_splice() {
    bulk("splice");
}

/// 1 GiB each way at once through the proxy, then each side half-closes; both streams must
/// arrive byte for byte.
fn bulk(forward: &str) {
    const LEN: usize = 1 << 30;
    let expect_up = pattern(1, LEN).fold(0xcbf2_9ce4_8422_2325, |h, c| checksum(&c, h));
    let expect_down = pattern(2, LEN).fold(0xcbf2_9ce4_8422_2325, |h, c| checksum(&c, h));
    // Upstream: sends its stream while reading ours, then closes after our EOF.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream_port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || exchange(listener.accept().unwrap().0, 2, LEN));
    let port = free_port();
    let proxy = Proxy::start(
        &static_tcp("bulk", "127.0.0.5", port, upstream_port),
        REGISTRY_ONLY,
        &["--capture", "listeners", "--forward", forward],
        port,
    );
    let (h, total) = exchange(connect(&format!("127.0.0.5:{port}")), 1, LEN);
    let (server_h, server_total) = server.join().unwrap();
    assert_eq!(
        (total, h),
        (LEN, expect_down),
        "upstream -> client byte-exact"
    );
    assert_eq!(
        (server_total, server_h),
        (LEN, expect_up),
        "client -> upstream byte-exact"
    );
    let log = proxy.wait_access_log(2);
    let forwarded = log
        .iter()
        .find(|l| l["outcome"] == "forwarded")
        .expect("the bulk connection");
    assert_eq!(forwarded["bytes_sent"], LEN as u64);
    assert_eq!(forwarded["bytes_received"], LEN as u64);
}

/// The scheduling policy of each of `pid`'s threads, by name: field 41 of
/// `/proc/PID/task/TID/stat` (0 SCHED_OTHER, 3 SCHED_BATCH).
fn thread_policies(pid: u32) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let stat = std::fs::read_to_string(task.unwrap().path().join("stat")).unwrap();
        // The name is in parentheses and may hold spaces: fields are counted after it.
        let (head, rest) = stat.rsplit_once(") ").unwrap();
        let name = head.split_once(" (").unwrap().1.to_string();
        let policy = rest.split(' ').nth(41 - 3).unwrap().parse().unwrap();
        out.push((name, policy));
    }
    out.sort();
    out
}

#[test]
fn worker_sched_batch_applies_to_workers_only() {
    let up = Upstream::start(b"A\n");
    for (flag, expected) in [(None, 0), (Some("batch"), 3)] {
        let port = free_port();
        let mut args = vec!["--capture", "listeners", "--workers", "2"];
        if let Some(f) = flag {
            args.extend(["--worker-sched", f]);
        }
        let proxy = Proxy::start(
            &static_tcp("db-a", "127.0.0.2", port, up.port),
            REGISTRY_ONLY,
            &args,
            port,
        );
        // It forwards as before.
        let mut s = connect(&format!("127.0.0.2:{port}"));
        assert_eq!(read_exact(&mut s, 2), b"A\n");

        let policies = thread_policies(proxy.pid());
        let workers: Vec<_> = policies
            .iter()
            .filter(|(n, _)| n.starts_with("worker-"))
            .collect();
        assert_eq!(workers.len(), 2, "{policies:?}");
        assert!(
            workers.iter().all(|(_, p)| *p == expected),
            "{flag:?}: {policies:?}"
        );
        assert_only_workers_changed(&policies);
    }
}

/// CPU time of `pid`'s worker threads so far: the first field of each one's
/// `/proc/PID/task/TID/schedstat` (nanoseconds on the CPU).
fn workers_cpu(pid: u32) -> Duration {
    let mut ns = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let comm = std::fs::read_to_string(task.join("comm")).unwrap();
        if comm.starts_with("worker-") {
            let schedstat = std::fs::read_to_string(task.join("schedstat")).unwrap();
            ns += schedstat.split(' ').next().unwrap().parse::<u64>().unwrap();
        }
    }
    Duration::from_nanos(ns)
}

#[test]
fn workers_that_yield_before_sleeping_still_sleep_when_idle() {
    // `--idle-yields` (1 by default) keeps a worker runnable for a few turns after its
    // connections' last activity. Once they are done it must sleep: over a second of quiet
    // its workers run for a few milliseconds (their 50 ms housekeeping), not the second that
    // a worker that kept yielding would. On both drivers, and with many yields a spell.
    let up = Upstream::start(b"A\n");
    for (driver, yields) in [("uring", "1"), ("epoll", "1"), ("uring", "64")] {
        let port = free_port();
        let proxy = Proxy::start_env(
            &static_tcp("db-a", "127.0.0.2", port, up.port),
            REGISTRY_ONLY,
            &[
                "--capture",
                "listeners",
                "--workers",
                "2",
                "--idle-yields",
                yields,
            ],
            &[("DATAPLANE_IO_DRIVER", driver)],
            port,
        );
        for _ in 0..20 {
            let mut s = connect(&format!("127.0.0.2:{port}"));
            assert_eq!(read_exact(&mut s, 2), b"A\n");
            s.shutdown(Shutdown::Write).unwrap();
            assert_eq!(read_to_end(&mut s), Some(Vec::new()));
        }
        proxy.wait_access_log(20);
        let before = workers_cpu(proxy.pid());
        std::thread::sleep(Duration::from_secs(1));
        let used = workers_cpu(proxy.pid()) - before;
        assert!(
            used < Duration::from_millis(100),
            "{driver}, {yields} yields: idle workers ran {used:?} in a second"
        );
    }
}

/// The control, access-log, admin and other threads keep the default policy.
fn assert_only_workers_changed(policies: &[(String, u32)]) {
    assert!(
        policies
            .iter()
            .filter(|(n, _)| !n.starts_with("worker-"))
            .all(|(_, p)| *p == 0),
        "{policies:?}"
    );
}

/// A busy loop pinned to one core, stopped on drop.
struct BusyLoop(std::process::Child);

impl BusyLoop {
    fn on_core(core: usize) -> Self {
        let child = std::process::Command::new("taskset")
            .args(["-c", &core.to_string(), "sh", "-c", "while :; do :; done"])
            .spawn()
            .expect("taskset (util-linux)");
        Self(child)
    }
}

impl Drop for BusyLoop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The policy of the proxy's `worker-0` once it is `want`, or panics after 20 s.
fn wait_worker_policy(pid: u32, want: u32, why: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let policies = thread_policies(pid);
        let worker = policies.iter().find(|(n, _)| n == "worker-0").map(|p| p.1);
        if worker == Some(want) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{why}: worker-0 never reached policy {want}: {policies:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn worker_sched_auto_leaves_batch_beside_a_busy_loop_and_returns_after_it() {
    let up = Upstream::start(b"A\n");
    let port = free_port();
    let proxy = Proxy::start(
        &static_tcp("db-a", "127.0.0.2", port, up.port),
        REGISTRY_ONLY,
        &[
            "--capture",
            "listeners",
            "--workers",
            "1",
            "--worker-sched",
            "auto",
        ],
        port,
    );
    // An idle core: batch. Worker 0 is pinned to core 0.
    wait_worker_policy(proxy.pid(), 3, "idle");
    let mut s = connect(&format!("127.0.0.2:{port}"));
    assert_eq!(read_exact(&mut s, 2), b"A\n");
    let busy = BusyLoop::on_core(0);
    wait_worker_policy(proxy.pid(), 0, "beside a busy loop");
    // It forwards meanwhile, and the connection opened under batch is untouched.
    let mut t = connect(&format!("127.0.0.2:{port}"));
    assert_eq!(read_exact(&mut t, 2), b"A\n");
    s.write_all(b"ping").unwrap();
    assert_eq!(read_exact(&mut s, 4), b"ping");
    drop(busy);
    wait_worker_policy(proxy.pid(), 3, "after the busy loop");
    assert!(
        proxy.log().contains("worker scheduling policy changed"),
        "each change is logged"
    );
    assert_only_workers_changed(&thread_policies(proxy.pid()));
}
