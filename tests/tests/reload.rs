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

/// One version of the load test's configuration: a TCP service (VIP 127.0.0.40) and an HTTP
/// service that stay, an HTTP host that changes every version, and a TCP port that moves.
fn load_version(i: usize, ports: &LoadPorts) -> String {
    let se = |name: &str, body: String| {
        format!(
            "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}}}\nspec:\n{body}"
        )
    };
    se(
        "db",
        format!(
            "  hosts: [db.example.com]\n  addresses: [127.0.0.40]\n  ports: [{{number: {}, name: tcp, protocol: TCP}}]\n  resolution: STATIC\n  endpoints: [{{address: 127.0.0.1, ports: {{tcp: {}}}}}]\n",
            ports.tcp, ports.echo
        ),
    ) + &se(
        "web",
        format!(
            "  hosts: [web.example.com, h{i}.example.com]\n  ports: [{{number: {}, name: http, protocol: HTTP}}]\n  resolution: STATIC\n  endpoints: [{{address: 127.0.0.1, ports: {{http: {}}}}}]\n",
            ports.http, ports.origin
        ),
    ) + &se(
        "moving",
        format!(
            "  hosts: [moving.example.com]\n  addresses: [127.0.0.41]\n  ports: [{{number: {}, name: tcp, protocol: TCP}}]\n  resolution: STATIC\n  endpoints: [{{address: 127.0.0.1, ports: {{tcp: {}}}}}]\n",
            ports.moving[i % ports.moving.len()],
            ports.echo
        ),
    )
}

struct LoadPorts {
    tcp: u16,
    http: u16,
    moving: Vec<u16>,
    echo: u16,
    origin: u16,
}

/// A ConfigMap-style directory: `..<version>/config.yaml`, `..data` pointing at the current
/// version, `config.yaml -> ..data/config.yaml`. A new version is swapped in as Kubernetes
/// does: a new `..data_tmp` link renamed over `..data`.
fn configmap_swap(dir: &std::path::Path, version: usize, text: &str) {
    let versioned = dir.join(format!("..v{version}"));
    std::fs::create_dir(&versioned).unwrap();
    std::fs::write(versioned.join("config.yaml"), text).unwrap();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("..v{version}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
}

/// GET `path` with `Host: host` on a fresh connection to the proxy's HTTP port.
fn http_status(port: u16, host: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes())
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.get(9..12)?.parse().ok()
}

#[test]
fn fifty_reloads_under_load_lose_nothing() {
    let upstream = Upstream::start(b"U\n");
    let origin = dataplane_tests::HttpOrigin::start();
    let ports = LoadPorts {
        tcp: free_port(),
        http: free_port(),
        moving: (0..5).map(|_| free_port()).collect(),
        echo: upstream.port,
        origin: origin.port,
    };
    let proxy = Proxy::start(
        &load_version(0, &ports),
        REGISTRY_ONLY,
        &["--capture", "listeners", "--workers", "2"],
        ports.http,
    );
    let admin = proxy.server_port("admin");
    let prom = proxy.server_port("prometheus");
    // Turn the directory into a ConfigMap mount: every later version arrives by a ..data swap.
    let dir = proxy.config_file().parent().unwrap().to_path_buf();
    configmap_swap(&dir, 0, &load_version(0, &ports));
    let link = dir.join("config.yaml.link");
    std::os::unix::fs::symlink("..data/config.yaml", &link).unwrap();
    std::fs::rename(&link, dir.join("config.yaml")).unwrap();

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // 200 long-lived TCP streams on the service that stays, each echoing 64 bytes every 20 ms.
    let streams: Vec<_> = (0..200)
        .map(|n| {
            let stop = stop.clone();
            let port = ports.tcp;
            std::thread::spawn(move || -> Result<u64, String> {
                let mut s = TcpStream::connect(("127.0.0.40", port)).map_err(|e| e.to_string())?;
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut banner = [0u8; 2];
                s.read_exact(&mut banner)
                    .map_err(|e| format!("banner: {e}"))?;
                let mut rounds = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let msg = [(n % 251) as u8; 64];
                    s.write_all(&msg)
                        .map_err(|e| format!("stream {n} write: {e}"))?;
                    let mut back = [0u8; 64];
                    s.read_exact(&mut back)
                        .map_err(|e| format!("stream {n} read after {rounds} rounds: {e}"))?;
                    if back != msg {
                        return Err(format!("stream {n}: wrong bytes"));
                    }
                    rounds += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(rounds)
            })
        })
        .collect();
    // A steady stream of keep-alive HTTP requests to the host that stays.
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            let port = ports.http;
            std::thread::spawn(move || -> (u64, Vec<String>) {
                let (mut ok, mut failures) = (0u64, Vec::new());
                let mut conn: Option<TcpStream> = None;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let s = match conn.as_mut() {
                        Some(s) => s,
                        None => {
                            let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                            conn.insert(s)
                        }
                    };
                    let sent = s.write_all(b"GET / HTTP/1.1\r\nHost: web.example.com\r\n\r\n");
                    let mut buf = Vec::new();
                    let mut byte = [0u8; 1];
                    let answered = sent.is_ok()
                        && loop {
                            match s.read(&mut byte) {
                                Ok(1) => buf.push(byte[0]),
                                _ => break false,
                            }
                            if buf.ends_with(b"\r\n\r\nok") {
                                break true;
                            }
                        };
                    if answered && buf.starts_with(b"HTTP/1.1 200") {
                        ok += 1;
                    } else {
                        failures.push(String::from_utf8_lossy(&buf).into_owned());
                        conn = None;
                    }
                }
                (ok, failures)
            })
        })
        .collect();

    // 50 versions; the 25th is invalid. Each valid one's new host must answer within 1 s.
    let mut live_after = Vec::new();
    for i in 1..=50 {
        let text = if i == 25 {
            load_version(i, &ports).replace("resolution: STATIC", "resolution: SOMETIMES")
        } else {
            load_version(i, &ports)
        };
        let changed = Instant::now();
        configmap_swap(&dir, i, &text);
        if i == 25 {
            eventually("the invalid version is reported", || {
                let (_, dump) = raw(admin, b"GET /config_dump HTTP/1.1\r\nHost: x\r\n\r\n");
                dump.contains("SOMETIMES")
            });
            continue;
        }
        let host = format!("h{i}.example.com");
        loop {
            if http_status(ports.http, &host) == Some(200) {
                live_after.push(changed.elapsed());
                break;
            }
            assert!(
                changed.elapsed() < Duration::from_secs(10),
                "version {i} never went live:\n{}",
                proxy.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // The host of the version before is gone; the moving port follows.
        if i > 1 && i != 26 {
            assert_eq!(
                http_status(ports.http, &format!("h{}.example.com", i - 1)),
                Some(502)
            );
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut rounds = 0;
    for s in streams {
        rounds += s
            .join()
            .unwrap()
            .unwrap_or_else(|e| panic!("a stream failed: {e}"));
    }
    let mut requests = 0;
    for c in clients {
        let (ok, failures) = c.join().unwrap();
        assert!(failures.is_empty(), "failed requests: {failures:?}");
        requests += ok;
    }
    live_after.sort();
    eprintln!(
        "50 reloads: {rounds} stream round trips and {requests} requests, none failed; new routes live after {:?} (median) .. {:?} (max)",
        live_after[live_after.len() / 2],
        live_after[live_after.len() - 1]
    );
    assert!(
        live_after.iter().all(|d| *d < Duration::from_secs(1)),
        "routes live within one second of the change: {live_after:?}"
    );
    // The moving port of the last version serves once every worker has bound it (a route can
    // be live on an existing port a moment before); the rejected reload is counted.
    let serves = || {
        let Ok(mut s) = TcpStream::connect(("127.0.0.41", ports.moving[50 % 5])) else {
            return false;
        };
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 2];
        s.read_exact(&mut b).is_ok() && b == *b"U\n"
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !serves() {
        if Instant::now() >= deadline {
            let port = ports.moving[50 % 5];
            let ss = std::process::Command::new("ss")
                .args(["-Htanpe", &format!("sport = :{port} or dport = :{port}")])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            panic!(
                "not within 5 s: the last version's moving port serves\nsockets:\n{ss}\nlog:\n{}",
                proxy.log()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, metrics) = raw(prom, b"GET /stats/prometheus HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(
        metrics.contains("dataplane_config_reload_failures_total 1\n"),
        "{metrics}"
    );
}
