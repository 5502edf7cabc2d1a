//! REGISTRY_ONLY holds: attempts to reach an unregistered destination hidden behind a registered
//! one, each refused, through real capture in the namespace lab. Root only; skipped otherwise.
//!
//! Istio's own behaviour for TLS under resolution NONE is kept and shown: a connection whose SNI
//! is registered goes to its original destination whatever that is (Envoy's original-destination
//! cluster does not look at the name). `--verify-original-destination` is the opt-in check.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use dataplane_tests::lab::{Lab, REGISTRY_ONLY, http_se, se};
use dataplane_tests::netns::available;

fn config() -> Vec<(String, String)> {
    let text = http_se("a", "a.example.com", "192.0.2.20")
        + &se(
            "secure",
            "  hosts: [secure.example.com]\n  ports: [{number: 443, name: https, protocol: HTTPS}]\n  resolution: NONE\n",
        )
        + &se(
            "loop",
            "  hosts: [loop.example.com]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: DNS\n  endpoints: [{address: loop.example.com, ports: {http: 15001}}]\n",
        );
    vec![("escape.yaml".to_owned(), text)]
}

/// A TLS handshake from the client namespace to `ip:port` with `sni` (none when empty), the
/// server's certificate not checked. Whether a handshake completed, and curl's output.
fn tls(lab: &Lab, ip: &str, port: u16, sni: &str) -> (bool, String) {
    let mut args = vec![
        "curl".to_owned(),
        "-sSk".to_owned(),
        "--max-time".to_owned(),
        "10".to_owned(),
        "-o".to_owned(),
        "/dev/null".to_owned(),
        "-w".to_owned(),
        "%{http_code}".to_owned(),
    ];
    let url = if sni.is_empty() {
        format!("https://{ip}:{port}/")
    } else {
        args.push("--resolve".to_owned());
        args.push(format!("{sni}:{port}:{ip}"));
        format!("https://{sni}:{port}/")
    };
    args.push(url);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = lab.topo.exec(&lab.topo.client, &args);
    let code = String::from_utf8_lossy(&out.stdout).into_owned();
    (
        code != "000",
        format!("{code} {}", String::from_utf8_lossy(&out.stderr)),
    )
}

#[test]
fn registry_only_refuses_every_escape_attempt() {
    if !available("registry_only_refuses_every_escape_attempt") {
        return;
    }
    let lab = Lab::new(REGISTRY_ONLY, &[], |_| config());
    // The registered host works, so a refusal below is a refusal, not a broken lab.
    let (code, body) = lab.get("a.example.com", "192.0.2.99", "/");
    assert_eq!(code, "200", "{body}");

    // (what, request, the status line it must get). Every request also asks to close, so a
    // refused one cannot be mistaken for a keep-alive wait.
    let http_cases: &[(&str, &str, &str)] = &[
        (
            "absolute-form authority unregistered, Host registered",
            "GET http://evil.example.org/ HTTP/1.1\\r\\nHost: a.example.com\\r\\nConnection: close\\r\\n\\r\\n",
            "HTTP/1.1 502 ",
        ),
        (
            "https absolute-form to an unregistered host",
            "GET https://evil.example.org/ HTTP/1.1\\r\\nHost: a.example.com\\r\\nConnection: close\\r\\n\\r\\n",
            "HTTP/1.1 502 ",
        ),
        (
            "userinfo in Host",
            "GET / HTTP/1.1\\r\\nHost: a.example.com@evil.example.org\\r\\nConnection: close\\r\\n\\r\\n",
            "HTTP/1.1 400 ",
        ),
        (
            "userinfo in the absolute-form authority",
            "GET http://a.example.com@evil.example.org/ HTTP/1.1\\r\\nHost: a.example.com\\r\\nConnection: close\\r\\n\\r\\n",
            "HTTP/1.1 400 ",
        ),
        (
            "userinfo after a port",
            "GET / HTTP/1.1\\r\\nHost: a.example.com:80@evil.example.org\\r\\nConnection: close\\r\\n\\r\\n",
            "HTTP/1.1 400 ",
        ),
        (
            "percent-encoded dot",
            "GET / HTTP/1.1\\r\\nHost: a%2eexample.com\\r\\nConnection: close\\r\\n\\r\\n",
            "HTTP/1.1 502 ",
        ),
        (
            "unregistered host with a trailing dot",
            "GET / HTTP/1.1\\r\\nHost: evil.example.org.\\r\\nConnection: close\\r\\n\\r\\n",
            "HTTP/1.1 502 ",
        ),
        (
            "two trailing dots",
            "GET / HTTP/1.1\\r\\nHost: a.example.com..\\r\\nConnection: close\\r\\n\\r\\n",
            "HTTP/1.1 502 ",
        ),
        (
            "mixed case, unregistered",
            "GET / HTTP/1.1\\r\\nHost: EVIL.Example.ORG\\r\\nConnection: close\\r\\n\\r\\n",
            "HTTP/1.1 502 ",
        ),
        (
            "IPv6 literal",
            "GET / HTTP/1.1\\r\\nHost: [2001:db8::10]:80\\r\\nConnection: close\\r\\n\\r\\n",
            "HTTP/1.1 502 ",
        ),
        (
            "IPv6 loopback literal",
            "GET / HTTP/1.1\\r\\nHost: [::1]\\r\\nConnection: close\\r\\n\\r\\n",
            "HTTP/1.1 502 ",
        ),
        (
            "IPv4 literal of an unregistered origin",
            "GET / HTTP/1.1\\r\\nHost: 192.0.2.22\\r\\nConnection: close\\r\\n\\r\\n",
            "HTTP/1.1 502 ",
        ),
        (
            "a list of hosts",
            "GET / HTTP/1.1\\r\\nHost: a.example.com, evil.example.org\\r\\nConnection: close\\r\\n\\r\\n",
            "HTTP/1.1 400 ",
        ),
        (
            "whitespace inside Host",
            "GET / HTTP/1.1\\r\\nHost: a.example.com evil.example.org\\r\\nConnection: close\\r\\n\\r\\n",
            "HTTP/1.1 400 ",
        ),
        (
            "duplicate Host headers",
            "GET / HTTP/1.1\\r\\nHost: a.example.com\\r\\nHost: evil.example.org\\r\\nConnection: close\\r\\n\\r\\n",
            "HTTP/1.1 400 ",
        ),
        (
            "NUL in Host",
            "GET / HTTP/1.1\\r\\nHost: a.example.com\\x00evil\\r\\nConnection: close\\r\\n\\r\\n",
            "HTTP/1.1 400 ",
        ),
        (
            "CONNECT to an unregistered host",
            "CONNECT evil.example.org:443 HTTP/1.1\\r\\nHost: evil.example.org:443\\r\\n\\r\\n",
            "HTTP/1.1 404 ",
        ),
        (
            "CONNECT to a registered host",
            "CONNECT a.example.com:80 HTTP/1.1\\r\\nHost: a.example.com:80\\r\\n\\r\\n",
            "HTTP/1.1 404 ",
        ),
        (
            "HTTP/1.0 without Host",
            "GET / HTTP/1.0\\r\\n\\r\\n",
            "HTTP/1.1 400 ",
        ),
    ];
    for (what, request, want) in http_cases {
        let out = lab.raw("192.0.2.99", request, None);
        assert!(out.starts_with(want), "{what}: {out}");
        assert!(!out.contains("origin-"), "{what} reached an origin: {out}");
        assert!(out.ends_with("CLOSED\n"), "{what}: {out}");
    }
    // A registered absolute-form authority with a foreign Host: routed to the registered host,
    // and the origin sees that host, not the foreign one.
    let out = lab.raw(
        "192.0.2.99",
        "GET http://a.example.com/ HTTP/1.1\\r\\nHost: evil.example.org\\r\\nConnection: close\\r\\n\\r\\n",
        None,
    );
    assert!(out.contains("host=a.example.com\n"), "{out}");

    // TLS: a registered SNI on the HTTP-only port, and HTTP on the TLS-only port, are refused.
    let (done, why) = tls(&lab, "192.0.2.20", 80, "a.example.com");
    assert!(!done, "TLS with a registered SNI on port 80: {why}");
    let out = lab.raw_to(
        "192.0.2.10",
        443,
        "GET / HTTP/1.1\\r\\nHost: secure.example.com\\r\\nConnection: close\\r\\n\\r\\n",
        None,
    );
    let out = out.replace("\n", "");
    assert!(out == "CLOSED", "HTTP on the TLS port: {out}");
    let (done, why) = tls(&lab, "192.0.2.10", 443, "evil.example.org");
    assert!(!done, "unregistered SNI: {why}");
    // curl drops a trailing dot from SNI; openssl sends it as given. SNI is compared as sent.
    let openssl = |sni: &str| {
        let out = lab.topo.exec(
            &lab.topo.client,
            &[
                "bash",
                "-c",
                &format!(
                    "openssl s_client -connect 192.0.2.10:443 -servername {sni} </dev/null 2>&1"
                ),
            ],
        );
        String::from_utf8_lossy(&out.stdout).contains("Server certificate")
    };
    assert!(openssl("secure.example.com"), "the control handshake works");
    assert!(!openssl("secure.example.com."), "SNI with a trailing dot");
    let (done, why) = tls(&lab, "192.0.2.10", 443, "");
    assert!(!done, "no SNI: {why}");
    // Istio's behaviour under resolution NONE: the registered SNI goes to the destination the
    // client dialled, even one that is not secure.example.com's address (192.0.2.11 serves
    // mtls.example.com and asks for a client certificate: nginx answers 400).
    let (done, why) = tls(&lab, "192.0.2.11", 443, "secure.example.com");
    assert!(done && why.starts_with("400"), "Istio forwards: {why}");

    // A DNS answer that points a registered name at the proxy itself: refused, not looped.
    let (code, _) = lab.get("loop.example.com", "192.0.2.99", "/");
    assert_eq!(code, "502");
    let log = lab.access_log();
    let looped = log
        .iter()
        .find(|l| l["host"] == "loop.example.com")
        .expect("logged");
    assert!(
        looped["reason"]
            .as_str()
            .unwrap_or_default()
            .starts_with("loop"),
        "{looped}"
    );
}

#[test]
fn verify_original_destination_refuses_a_spoofed_sni() {
    if !available("verify_original_destination_refuses_a_spoofed_sni") {
        return;
    }
    let lab = Lab::new(REGISTRY_ONLY, &["--verify-original-destination"], |_| {
        config()
    });
    // dnsmasq answers 192.0.2.10 for secure.example.com: that destination passes, another does
    // not.
    let (done, why) = tls(&lab, "192.0.2.10", 443, "secure.example.com");
    assert!(done && why.starts_with("200"), "{why}");
    let (done, why) = tls(&lab, "192.0.2.11", 443, "secure.example.com");
    assert!(!done, "spoofed destination: {why}");
    let log = lab.access_log();
    let refused = log
        .iter()
        .find(|l| l["destination"] == "192.0.2.11:443")
        .expect("logged");
    assert!(
        refused["reason"]
            .as_str()
            .unwrap_or_default()
            .starts_with("destination_mismatch"),
        "{refused}"
    );
}
