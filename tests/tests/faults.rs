//! Faults on one connection fail that connection cleanly, with a logged reason, and touch no
//! other: an upstream that resets mid-body, one that stops reading, one that answers garbage,
//! one that accepts and never answers, a blackholed upstream, and a client that vanishes
//! mid-request, all while a 100 MB download runs through the same proxy. DNS faults are in
//! `dns.rs`. Root only; skipped otherwise.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::process::{Command, Stdio};

use dataplane_tests::lab::{Lab, REGISTRY_ONLY, doc, http_se, se};
use dataplane_tests::netns::available;

fn fault_se(name: &str, port: u16) -> String {
    se(
        name,
        &format!(
            "  hosts: [{name}.example.com]\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  resolution: STATIC\n  endpoints: [{{address: 192.0.2.22, ports: {{http: {port}}}}}]\n"
        ),
    )
}

#[test]
fn each_fault_fails_only_its_own_connection() {
    if !available("each_fault_fails_only_its_own_connection") {
        return;
    }
    let config = http_se("a", "a.example.com", "192.0.2.20")
        + &fault_se("reset", 8001)
        + &fault_se("stall", 8002)
        + &fault_se("garbage", 8003)
        + &http_se("hang", "hang.example.com", "192.0.2.23")
        + &http_se("blackhole", "blackhole.example.com", "198.51.100.1")
        + &doc(
            "DestinationRule",
            "blackhole",
            "  host: blackhole.example.com\n  trafficPolicy: {connectionPool: {tcp: {connectTimeout: 1s}}}\n",
        );
    let mut lab = Lab::new(REGISTRY_ONLY, &["--stream-idle-timeout", "2s"], |_| {
        vec![("faults.yaml".to_owned(), config)]
    });
    let script = dataplane_tests::workspace().join("tests/helpers/fault_origin.py");
    let internet = lab.topo.internet.clone();
    let log_file = lab.dir.path().join("fault-origin.log");
    lab.topo.spawn(
        &internet,
        &[
            "python3",
            &script.display().to_string(),
            "192.0.2.22",
            "8001",
            "8002",
            "8003",
        ],
        &log_file,
    );
    for port in [8001, 8002, 8003] {
        lab.topo.wait_listening(&internet, "192.0.2.22", port);
    }
    // The bystander: 100 MB at 25 MB/s through the proxy for the whole test.
    let bystander = Command::new("ip")
        .args(["netns", "exec", &lab.topo.client])
        .args([
            "curl",
            "-sS",
            "--max-time",
            "60",
            "--limit-rate",
            "25M",
            "--resolve",
            "a.example.com:80:192.0.2.99",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_download}",
            "http://a.example.com/big",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let curl = |args: &[&str]| lab.curl(args);
    // 1. The origin resets after 100 of 1,000 body bytes: the client sees a short body.
    let out = curl(&[
        "--resolve",
        "reset.example.com:80:192.0.2.99",
        "http://reset.example.com/",
    ]);
    assert!(!out.status.success(), "truncated body noticed: {out:?}");
    // 2. The origin never reads: a 50 MB upload stops (backpressure), then the stream idle
    // timeout (2 s here) ends the exchange.
    let upload = lab.path("big.bin");
    let out = curl(&[
        "--resolve",
        "stall.example.com:80:192.0.2.99",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        &format!("@{upload}"),
        "http://stall.example.com/",
    ]);
    let code = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        code == "408" || !out.status.success(),
        "stalled upload: {out:?}"
    );
    // 3. Garbage instead of a response head: 502.
    let (code, _) = lab.get("garbage.example.com", "192.0.2.99", "/");
    assert_eq!(code, "502");
    // 4. Accepts and never answers: 504 at the stream idle timeout.
    let (code, body) = lab.get("hang.example.com", "192.0.2.99", "/");
    assert_eq!((code.as_str(), body.as_str()), ("504", "stream timeout"));
    // 5. Blackholed: 503 after the DestinationRule's 1 s connect timeout (three attempts).
    let (code, _) = lab.get("blackhole.example.com", "192.0.2.99", "/");
    assert_eq!(code, "503");
    // 6. The client vanishes mid-request (1,000 bytes announced, 10 sent, then gone).
    let out = lab.topo.exec(
        &lab.topo.client,
        &[
            "bash",
            "-c",
            "exec 3<>/dev/tcp/192.0.2.99/80; printf 'POST /vanish HTTP/1.1\\r\\nHost: a.example.com\\r\\nContent-Length: 1000\\r\\n\\r\\n0123456789' >&3; exec 3>&-",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    std::thread::sleep(std::time::Duration::from_millis(300));

    // The bystander finished intact.
    let done = bystander.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&done.stdout),
        "200 100000000",
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    // Each failure has its reason in the access log.
    let log = lab.access_log();
    let reason = |host: &str| -> String {
        log.iter()
            .filter(|l| l["host"] == host)
            .map(|l| l["reason"].as_str().unwrap_or_default().to_owned())
            .collect::<Vec<_>>()
            .join(" | ")
    };
    for (host, want) in [
        ("reset.example.com", "response body: read"),
        ("stall.example.com", "stream idle timeout"),
        ("garbage.example.com", "upstream: malformed response head"),
        (
            "hang.example.com",
            "stream idle timeout waiting for the response",
        ),
        ("blackhole.example.com", "connect_timeout"),
    ] {
        let got = reason(host);
        assert!(got.contains(want), "{host}: {got}");
    }
    let vanished = log.iter().find(|l| l["path"] == "/vanish").expect("logged");
    assert_eq!(vanished["response_flags"], "DC", "{vanished}");
    // Memory stayed bounded through the stalled upload and the download.
    let peak_kb = lab.peak_rss_kb();
    assert!(peak_kb < 64 * 1024, "peak RSS {peak_kb} kB");
}
