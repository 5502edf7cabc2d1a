//! Reload without a dropped connection: the configuration file is rewritten the way editors
//! do (temporary file, rename), the new routes take effect, an established connection keeps
//! the route it started with, an invalid version is rejected with its errors logged while the
//! last good configuration keeps serving, and SIGHUP reloads too.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use dataplane_tests::{Proxy, Upstream, free_port};

const REGISTRY_ONLY: &str = "outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n";

fn config(port: u16, upstream: u16) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: db}}\nspec:\n  hosts: [db.example.com]\n  addresses: [127.0.0.30]\n  ports: [{{number: {port}, name: tcp, protocol: TCP}}]\n  resolution: STATIC\n  endpoints: [{{address: 127.0.0.1, ports: {{tcp: {upstream}}}}}]\n"
    )
}

/// Replace the file the way editors do: write a temporary file, rename it over.
fn rewrite(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("swp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn banner(port: u16) -> Option<Vec<u8>> {
    let mut s = TcpStream::connect(("127.0.0.30", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut b = [0u8; 2];
    s.read_exact(&mut b).ok().map(|()| b.to_vec())
}

/// Send `request` to the admin port; the status and body of the answer.
fn raw(port: u16, request: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn get(port: u16, path: &str) -> Option<(u16, String)> {
    TcpStream::connect(("127.0.0.1", port)).ok()?;
    Some(raw(
        port,
        format!("GET {path} HTTP/1.1\r\nHost: admin\r\n\r\n").as_bytes(),
    ))
}

fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(Instant::now() < deadline, "not within 5 s: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn reload_changes_routes_and_keeps_established_connections() {
    let (a, b) = (Upstream::start(b"A\n"), Upstream::start(b"B\n"));
    let port = free_port();
    let admin_port = free_port();
    let admin = format!("127.0.0.1:{admin_port}");
    let args = ["--capture", "listeners", "--admin", &admin];
    let proxy = Proxy::start(&config(port, a.port), REGISTRY_ONLY, &args, port);
    eventually("the admin server answers", || {
        get(admin_port, "/ready").is_some_and(|(s, _)| s == 200)
    });
    let mut established = TcpStream::connect(("127.0.0.30", port)).unwrap();
    established
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut greeting = [0u8; 2];
    established.read_exact(&mut greeting).unwrap();
    assert_eq!(&greeting, b"A\n");

    let started = Instant::now();
    rewrite(&proxy.config_file(), &config(port, b.port));
    eventually("new connections go to B", || {
        banner(port).as_deref() == Some(b"B\n")
    });
    let took = started.elapsed();

    // The connection opened before the reload still talks to A.
    established.write_all(b"still here").unwrap();
    let mut echo = [0u8; 10];
    established.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"still here");

    // An invalid version is rejected; B keeps serving.
    rewrite(
        &proxy.config_file(),
        &config(port, a.port).replace("[db.example.com]", "['*']"),
    );
    eventually("the rejection is logged", || {
        proxy.log().contains("configuration reload rejected")
    });
    assert!(
        proxy.log().contains("[SE_HOST_FULL_WILDCARD]"),
        "{}",
        proxy.log()
    );
    assert_eq!(banner(port).as_deref(), Some(&b"B\n"[..]));
    let (status, body) = get(admin_port, "/config_dump").unwrap();
    assert_eq!(status, 200);
    let dump: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(dump["last_reload"]["outcome"], "rejected", "{dump}");
    let first_error = dump["last_reload"]["errors"][0].as_str().unwrap();
    assert!(
        first_error.contains("[SE_HOST_FULL_WILDCARD]"),
        "{first_error}"
    );
    let generation = dump["generation"].as_u64().unwrap();
    assert!(generation >= 2, "the reload to B published: {generation}");
    assert_eq!(dump["objects"][0], "ServiceEntry default/db");
    let upstream = dump["routes"]["clusters"][0]["upstream"].as_str().unwrap();
    assert!(
        upstream.ends_with(&b.port.to_string()),
        "the B table serves: {upstream}"
    );
    assert_eq!(get(admin_port, "/nope").unwrap().0, 404);
    assert_eq!(raw(admin_port, b"\x00\x01 garbage\r\n\r\n").0, 400);
    let ready = get(admin_port, "/ready").unwrap().0;
    assert_eq!(ready, 200, "the admin server survives malformed requests");

    // SIGHUP reloads (here after a valid rewrite back to A).
    rewrite(&proxy.config_file(), &config(port, a.port));
    eventually("back to A", || banner(port).as_deref() == Some(b"A\n"));
    let before = proxy
        .log()
        .matches("configuration reloaded and published")
        .count();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &proxy.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    eventually("SIGHUP reloads", || {
        proxy.log().matches("trigger=\"SIGHUP\"").count() > 0
    });
    assert!(
        proxy
            .log()
            .matches("configuration reloaded and published")
            .count()
            > before
    );
    // The proxy's own log writes (next to the mesh file here) never trigger reloads.
    let reloads = proxy.log().matches("configuration reloaded").count();
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        proxy.log().matches("configuration reloaded").count(),
        reloads,
        "{}",
        proxy.log()
    );
    eprintln!("route change live {took:?} after the rename");
}

#[test]
fn listeners_follow_ports_added_and_removed_by_a_reload() {
    let upstream = Upstream::start(b"A\n");
    let (old_port, new_port, admin_port) = (free_port(), free_port(), free_port());
    let admin = format!("127.0.0.1:{admin_port}");
    let args = [
        "--capture",
        "listeners",
        "--admin",
        &admin,
        "--workers",
        "2",
    ];
    let proxy = Proxy::start(
        &config(old_port, upstream.port),
        REGISTRY_ONLY,
        &args,
        old_port,
    );
    eventually("ready", || {
        get(admin_port, "/ready").is_some_and(|(s, _)| s == 200)
    });
    let mut established = TcpStream::connect(("127.0.0.30", old_port)).unwrap();
    established
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut greeting = [0u8; 2];
    established.read_exact(&mut greeting).unwrap();
    assert!(banner(new_port).is_none(), "the new port is not served yet");

    // Both ports, then only the new one.
    let both = config(old_port, upstream.port).replace(
        &format!("ports: [{{number: {old_port}, name: tcp, protocol: TCP}}]"),
        &format!("ports: [{{number: {old_port}, name: tcp, protocol: TCP}}, {{number: {new_port}, name: tcp2, protocol: TCP}}]"),
    ).replace(
        &format!("ports: {{tcp: {}}}", upstream.port),
        &format!("ports: {{tcp: {0}, tcp2: {0}}}", upstream.port),
    );
    assert_ne!(both, config(old_port, upstream.port), "the edit applies");
    rewrite(&proxy.config_file(), &both);
    eventually("the new port serves", || {
        banner(new_port).as_deref() == Some(b"A\n")
    });
    // Every worker binds it: many connections, spread by SO_REUSEPORT, all served.
    for _ in 0..20 {
        assert_eq!(banner(new_port).as_deref(), Some(&b"A\n"[..]));
    }
    assert_eq!(banner(old_port).as_deref(), Some(&b"A\n"[..]));
    eventually("every worker acknowledged", || {
        get(admin_port, "/ready").is_some_and(|(s, _)| s == 200)
    });

    rewrite(&proxy.config_file(), &config(new_port, upstream.port));
    eventually("the old port is closed", || {
        TcpStream::connect(("127.0.0.30", old_port)).is_err()
    });
    assert_eq!(banner(new_port).as_deref(), Some(&b"A\n"[..]));
    // The connection accepted on the removed port carries on.
    established.write_all(b"still here").unwrap();
    let mut echo = [0u8; 10];
    established.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"still here");
    assert!(
        proxy.log().contains("listener closed") && proxy.log().contains("listener opened"),
        "{}",
        proxy.log()
    );
}
