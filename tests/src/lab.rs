//! The namespace lab the HTTP, escape and fault tests share: the [`Topology`] with nginx
//! origins (HTTP on 192.0.2.20-22, HTTPS on 192.0.2.10-11, one checking client certificates),
//! a socat origin that never answers (192.0.2.23), a Python WebSocket echo (192.0.2.24),
//! dnsmasq, and the proxy capturing the client namespace's traffic.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test support may panic

use std::path::Path;
use std::time::Duration;

use crate::netns::{Topology, addr, make_certs};

/// The capture port.
pub const PORT: u16 = 15001;
/// Mesh file: REGISTRY_ONLY.
pub const REGISTRY_ONLY: &str = "outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n";
/// Mesh file: ALLOW_ANY.
pub const ALLOW_ANY: &str = "outboundTrafficPolicy: {mode: ALLOW_ANY}\n";

/// The namespace topology with origins and the proxy running.
pub struct Lab {
    /// The namespaces.
    pub topo: Topology,
    /// Certificates, configuration, logs.
    pub dir: tempfile::TempDir,
}

/// A ServiceEntry document.
pub fn se(name: &str, body: &str) -> String {
    format!(
        "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}}}\nspec:\n{body}"
    )
}

/// An HTTP service on port 80 with one static endpoint.
pub fn http_se(name: &str, host: &str, ip: &str) -> String {
    se(
        name,
        &format!(
            "  hosts: [{host}]\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  resolution: STATIC\n  endpoints: [{{address: {ip}}}]\n"
        ),
    )
}

/// Any document of `kind`.
pub fn doc(kind: &str, name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: networking.istio.io/v1\nkind: {kind}\nmetadata: {{name: {name}}}\nspec:\n{spec}"
    )
}

impl Lab {
    /// Origins on 192.0.2.20-24 and HTTPS on 192.0.2.10-11; `config(dir)` gives the proxy's
    /// configuration files (name, text) once the certificates exist in `dir`.
    pub fn new(
        mesh: &str,
        extra_args: &[&str],
        config: impl FnOnce(&Path) -> Vec<(String, String)>,
    ) -> Self {
        let addrs = [
            "192.0.2.10/32",
            "192.0.2.11/32",
            "192.0.2.20/32",
            "192.0.2.21/32",
            "192.0.2.22/32",
            "192.0.2.23/32",
            "192.0.2.24/32",
        ];
        let mut topo = Topology::new(&addrs);
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        make_certs(d, &["secure.example.com", "mtls.example.com", "client"]);
        std::fs::create_dir(d.join("other")).unwrap();
        make_certs(&d.join("other"), &[]);
        // A 100 MB sparse file for the download test.
        let big = std::fs::File::create(d.join("big.bin")).unwrap();
        big.set_len(100_000_000).unwrap();
        let p = d.display();
        let nginx = format!(
            "worker_processes 1;\ndaemon off;\npid {p}/nginx.pid;\nerror_log {p}/nginx-error.log;\nevents {{}}\nhttp {{
  log_format uri '$request_uri';
  access_log off;
  client_body_temp_path {p}; proxy_temp_path {p}; fastcgi_temp_path {p}; uwsgi_temp_path {p}; scgi_temp_path {p};
  client_max_body_size 0;
  server {{ listen 192.0.2.20:80; access_log {p}/origin-a.log uri;
    location / {{ return 200 \"origin-a conn=$connection req=$connection_requests host=$http_host\\n\"; }}
    location /status503 {{ return 503; }}
    location = /big {{ alias {p}/big.bin; }}
  }}
  server {{ listen 192.0.2.21:80; location / {{ return 200 \"origin-b host=$http_host\\n\"; }} }}
  server {{ listen 192.0.2.20:8503; location / {{ return 503; }} }}
  server {{ listen 192.0.2.22:80; location / {{ return 200 \"origin-c\\n\"; }} }}
  server {{ listen 192.0.2.10:443 ssl; ssl_certificate {p}/secure.example.com.pem; ssl_certificate_key {p}/secure.example.com.key;
    location / {{ return 200 \"secure scheme=$scheme sni=$ssl_server_name\\n\"; }} }}
  server {{ listen 192.0.2.11:443 ssl; ssl_certificate {p}/mtls.example.com.pem; ssl_certificate_key {p}/mtls.example.com.key;
    ssl_client_certificate {p}/ca.pem; ssl_verify_client on;
    location / {{ return 200 \"mutual verify=$ssl_client_verify dn=$ssl_client_s_dn\\n\"; }} }}
}}\n"
        );
        std::fs::write(d.join("nginx.conf"), nginx).unwrap();
        let internet = topo.internet.clone();
        topo.spawn(
            &internet,
            &["nginx", "-c", &d.join("nginx.conf").display().to_string()],
            &d.join("nginx.log"),
        );
        // An origin that accepts and never answers.
        topo.spawn(
            &internet,
            &[
                "socat",
                "TCP-LISTEN:80,bind=192.0.2.23,fork,reuseaddr",
                "EXEC:sleep 60",
            ],
            &d.join("socat.log"),
        );
        let helpers = crate::workspace().join("tests/helpers");
        topo.spawn(
            &internet,
            &[
                "python3",
                &helpers.join("ws_echo.py").display().to_string(),
                "192.0.2.24",
                "80",
            ],
            &d.join("ws.log"),
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
                "--address=/w.example.com/192.0.2.21",
                "--address=/www.aliyun.com/192.0.2.20",
                "--address=/secure.example.com/192.0.2.10",
                "--address=/loop.example.com/172.16.2.1",
                "--pid-file=",
            ],
            &d.join("dnsmasq.log"),
        );
        std::fs::create_dir(d.join("config")).unwrap();
        for (name, text) in config(d) {
            std::fs::write(d.join("config").join(name), text).unwrap();
        }
        std::fs::write(d.join("mesh.yaml"), mesh).unwrap();
        let bin = crate::binary().display().to_string();
        let proxy = topo.proxy.clone();
        let out = topo.exec(
            &proxy,
            &[&bin, "capture", "--capture", "redirect", "--apply"],
        );
        assert!(
            out.status.success(),
            "capture --apply: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cmd = format!(
            "{bin} run --capture redirect --config {p}/config --mesh {p}/mesh.yaml --dns-server {}:53 {} > {p}/access.log 2> {p}/proxy.log",
            addr::INTERNET,
            extra_args.join(" ")
        );
        topo.spawn(&proxy, &["bash", "-c", &cmd], &d.join("spawn.log"));
        topo.wait_listening(&proxy, "127.0.0.1", PORT);
        for (ip, port) in [
            ("192.0.2.20", 80),
            ("192.0.2.10", 443),
            ("192.0.2.11", 443),
            ("192.0.2.23", 80),
            ("192.0.2.24", 80),
        ] {
            topo.wait_listening(&internet, ip, port);
        }
        Self { topo, dir }
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// Run curl in the client namespace with `args`.
    pub fn curl(&self, args: &[&str]) -> std::process::Output {
        let mut all = vec!["curl", "-sS", "--max-time", "30"];
        all.extend_from_slice(args);
        self.topo.exec(&self.topo.client, &all)
    }

    /// GET `url` (an `http://host/path` whose host resolves to `ip`), returning (status, body).
    pub fn get(&self, host: &str, ip: &str, path: &str) -> (String, String) {
        let resolve = format!("{host}:80:{ip}");
        let url = format!("http://{host}{path}");
        let out = self.curl(&[
            "--resolve",
            &resolve,
            "-o",
            "/dev/stdout",
            "-w",
            "\n%{http_code}",
            &url,
        ]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.to_owned(), body.trim_end().to_owned())
    }

    /// Send raw bytes from the client namespace (optionally one byte per `pace` seconds).
    pub fn raw(&self, ip: &str, request: &str, pace: Option<&str>) -> String {
        self.raw_to(ip, 80, request, pace)
    }

    /// [`Lab::raw`] to another port.
    pub fn raw_to(&self, ip: &str, port: u16, request: &str, pace: Option<&str>) -> String {
        let script = crate::workspace().join("tests/helpers/raw_http.py");
        let script = script.display().to_string();
        let port = port.to_string();
        let mut args = vec!["python3", &script, ip, &port, request];
        if let Some(p) = pace {
            args.push(p);
        }
        let out = self.topo.exec(&self.topo.client, &args);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn access_log(&self) -> Vec<serde_json::Value> {
        std::thread::sleep(Duration::from_millis(200));
        std::fs::read_to_string(self.dir.path().join("access.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn proxy_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("proxy.log")).unwrap_or_default()
    }

    /// Lines of origin-a's access log (one request URI each).
    pub fn origin_a_requests(&self, path: &str) -> usize {
        std::thread::sleep(Duration::from_millis(200));
        std::fs::read_to_string(self.dir.path().join("origin-a.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with(path))
            .count()
    }

    /// The proxy's peak resident memory so far (VmHWM), in kB.
    pub fn peak_rss_kb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.proxy_pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap()
    }

    /// The proxy's process id.
    pub fn proxy_pid(&self) -> u32 {
        let out = self
            .topo
            .exec(&self.topo.proxy, &["pgrep", "-f", "dataplane run"]);
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .max()
            .expect("proxy pid")
    }
}
