//! A network-namespace topology for tests that need a real network: three namespaces joined by
//! veth pairs, made and torn down by the test itself (root only).
//!
//! ```text
//!  client ns                 proxy ns                     internet ns
//!  172.16.1.2 ── veth ── 172.16.1.1 | 172.16.2.1 ── veth ── 172.16.2.2
//!  default via .1.1         forwards; capture rules       lo: 10.0.0.5-9/32, 192.0.2.x/32
//!                           redirect egress to the proxy  (origins), DNS; 198.51.100.0/24
//!                                                         blackholed
//!  fd00:1::2                fd00:1::1 | fd00:2::1          fd00:2::2, lo: 2001:db8::10
//! ```
//!
//! Every process started in a namespace is killed, and every namespace deleted, on drop.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

/// Addresses of the topology.
pub mod addr {
    /// The client.
    pub const CLIENT: &str = "172.16.1.2";
    /// The proxy on the client side.
    pub const PROXY_CLIENT_SIDE: &str = "172.16.1.1";
    /// The proxy on the internet side.
    pub const PROXY_INTERNET_SIDE: &str = "172.16.2.1";
    /// The internet namespace's router address (also its DNS server).
    pub const INTERNET: &str = "172.16.2.2";
}

/// Three namespaces: client, proxy, internet.
pub struct Topology {
    /// Client namespace name.
    pub client: String,
    /// Proxy namespace name.
    pub proxy: String,
    /// Internet namespace name.
    pub internet: String,
    children: Vec<Child>,
}

/// Whether this process can make namespaces; prints why not when it cannot.
pub fn available(test: &str) -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    let ip = Command::new("ip")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !(root && ip) {
        eprintln!("SKIPPED {test}: needs root and iproute2 to make network namespaces");
        return false;
    }
    let tools = [
        "nft",
        "curl",
        "openssl",
        "nginx",
        "redis-server",
        "redis-cli",
        "dnsmasq",
        "socat",
        "python3",
    ];
    let missing: Vec<&str> = tools
        .into_iter()
        .filter(|t| {
            Command::new("which")
                .arg(t)
                .output()
                .map_or(true, |o| !o.status.success())
        })
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "SKIPPED {test}: missing {} (scripts/install-test-deps installs them)",
            missing.join(", ")
        );
        return false;
    }
    true
}

fn run(args: &[&str]) -> Output {
    match Command::new(args[0]).args(&args[1..]).output() {
        Ok(o) => {
            assert!(
                o.status.success(),
                "{args:?} failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            o
        }
        Err(e) => panic!("{args:?}: {e}"),
    }
}

impl Topology {
    /// Make the namespaces and links. `extra` addresses are added to the internet side's dummy
    /// interface (CIDR notation) besides the defaults.
    pub fn new(extra: &[&str]) -> Self {
        let id = format!("{:06x}", fastrand_u32() & 0xff_ffff);
        let t = Self {
            client: format!("dpc{id}"),
            proxy: format!("dpp{id}"),
            internet: format!("dpi{id}"),
            children: Vec::new(),
        };
        for ns in [&t.client, &t.proxy, &t.internet] {
            run(&["ip", "netns", "add", ns]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        // Forwarding first: enabled after the links were up, IPv6 forwarding did not take here.
        run(&[
            "ip",
            "netns",
            "exec",
            &t.proxy,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]);
        run(&[
            "ip",
            "netns",
            "exec",
            &t.proxy,
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.forwarding=1",
        ]);
        let (vc, vp, vq, vi) = (
            format!("c{id}"),
            format!("p{id}"),
            format!("q{id}"),
            format!("i{id}"),
        );
        run(&[
            "ip", "link", "add", &vc, "netns", &t.client, "type", "veth", "peer", "name", &vp,
            "netns", &t.proxy,
        ]);
        run(&[
            "ip",
            "link",
            "add",
            &vq,
            "netns",
            &t.proxy,
            "type",
            "veth",
            "peer",
            "name",
            &vi,
            "netns",
            &t.internet,
        ]);
        let cmds: Vec<Vec<&str>> = vec![
            vec![
                "ip",
                "-n",
                &t.client,
                "addr",
                "add",
                "172.16.1.2/24",
                "dev",
                &vc,
            ],
            vec!["ip", "-n", &t.client, "link", "set", &vc, "up"],
            vec![
                "ip",
                "-n",
                &t.client,
                "route",
                "add",
                "default",
                "via",
                addr::PROXY_CLIENT_SIDE,
            ],
            vec![
                "ip",
                "-n",
                &t.proxy,
                "addr",
                "add",
                "172.16.1.1/24",
                "dev",
                &vp,
            ],
            vec![
                "ip",
                "-n",
                &t.proxy,
                "addr",
                "add",
                "172.16.2.1/24",
                "dev",
                &vq,
            ],
            vec!["ip", "-n", &t.proxy, "link", "set", &vp, "up"],
            vec!["ip", "-n", &t.proxy, "link", "set", &vq, "up"],
            vec![
                "ip",
                "-n",
                &t.proxy,
                "route",
                "add",
                "default",
                "via",
                addr::INTERNET,
            ],
            vec![
                "ip",
                "-n",
                &t.internet,
                "addr",
                "add",
                "172.16.2.2/24",
                "dev",
                &vi,
            ],
            vec!["ip", "-n", &t.internet, "link", "set", &vi, "up"],
            vec![
                "ip",
                "-n",
                &t.internet,
                "route",
                "add",
                "172.16.1.0/24",
                "via",
                addr::PROXY_INTERNET_SIDE,
            ],
            // Packets to 198.51.100.0/24 vanish: an upstream that never answers.
            vec![
                "ip",
                "-n",
                &t.internet,
                "route",
                "add",
                "blackhole",
                "198.51.100.0/24",
            ],
        ];
        for c in cmds {
            run(&c);
        }
        // IPv6 alongside (nodad: usable at once).
        let v6: Vec<Vec<&str>> = vec![
            vec![
                "ip",
                "-n",
                &t.client,
                "-6",
                "addr",
                "add",
                "fd00:1::2/64",
                "dev",
                &vc,
                "nodad",
            ],
            vec![
                "ip",
                "-n",
                &t.client,
                "-6",
                "route",
                "add",
                "default",
                "via",
                "fd00:1::1",
            ],
            vec![
                "ip",
                "-n",
                &t.proxy,
                "-6",
                "addr",
                "add",
                "fd00:1::1/64",
                "dev",
                &vp,
                "nodad",
            ],
            vec![
                "ip",
                "-n",
                &t.proxy,
                "-6",
                "addr",
                "add",
                "fd00:2::1/64",
                "dev",
                &vq,
                "nodad",
            ],
            vec![
                "ip",
                "-n",
                &t.proxy,
                "-6",
                "route",
                "add",
                "default",
                "via",
                "fd00:2::2",
            ],
            vec![
                "ip",
                "-n",
                &t.internet,
                "-6",
                "addr",
                "add",
                "fd00:2::2/64",
                "dev",
                &vi,
                "nodad",
            ],
            vec![
                "ip",
                "-n",
                &t.internet,
                "-6",
                "route",
                "add",
                "fd00:1::/64",
                "via",
                "fd00:2::1",
            ],
            vec![
                "ip",
                "-n",
                &t.internet,
                "-6",
                "addr",
                "add",
                "2001:db8::10/128",
                "dev",
                "lo",
            ],
        ];
        for c in v6 {
            run(&c);
        }
        // External addresses live on the internet namespace's loopback, one /32 each (a wider
        // prefix on lo would make its whole range local).
        let defaults = [
            "10.0.0.5/32",
            "10.0.0.6/32",
            "10.0.0.7/32",
            "10.0.0.8/32",
            "10.0.0.9/32",
            "192.0.2.1/32",
        ];
        for a in defaults.iter().chain(extra) {
            run(&["ip", "-n", &t.internet, "addr", "add", a, "dev", "lo"]);
        }
        t
    }

    /// Run a command in `ns` to completion.
    pub fn exec(&self, ns: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("ip netns exec {ns} {args:?}: {e}"))
    }

    /// Start a long-running command in `ns`, its output in `log` (killed on drop).
    pub fn spawn(&mut self, ns: &str, args: &[&str], log: &Path) {
        let out = std::fs::File::create(log).unwrap_or_else(|e| panic!("{e}"));
        let err = out.try_clone().unwrap_or_else(|e| panic!("{e}"));
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {args:?}: {e}"));
        self.children.push(child);
    }

    /// Wait until `addr:port` accepts TCP connections from `ns`.
    pub fn wait_listening(&self, ns: &str, addr: &str, port: u16) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let probe = self.exec(
                ns,
                &["bash", "-c", &format!("exec 3<>/dev/tcp/{addr}/{port}")],
            );
            if probe.status.success() {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "nothing listens on {addr}:{port} in {ns}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in [&self.client, &self.proxy, &self.internet] {
            // Kill anything left in the namespace (daemons that forked), then delete it.
            if let Ok(o) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn fastrand_u32() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    nanos
        ^ std::process::id().rotate_left(16)
        ^ COUNTER.fetch_add(0x9e37_79b9, std::sync::atomic::Ordering::Relaxed)
}

static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A CA and server certificates (PEM files in `dir`): `ca.pem`, and for each name
/// `<name>.pem` + `<name>.key` with that name as SAN.
pub fn make_certs(dir: &Path, names: &[&str]) {
    let d = dir.display();
    let sh = |script: String| {
        let o = Command::new("bash")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            o.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    sh(format!(
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {d}/ca.key -out {d}/ca.pem -days 2 -subj /CN=dataplane-test-ca 2>/dev/null"
    ));
    for name in names {
        let file = name.replace('*', "star");
        sh(format!(
            "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {d}/{file}.key -out {d}/{file}.csr -subj '/CN={name}' 2>/dev/null && \
             printf 'subjectAltName=DNS:{name}\\n' > {d}/{file}.ext && \
             openssl x509 -req -in {d}/{file}.csr -CA {d}/ca.pem -CAkey {d}/ca.key -CAcreateserial -out {d}/{file}.pem -days 2 -extfile {d}/{file}.ext 2>/dev/null"
        ));
    }
}
