//! Helpers for black-box tests of the `dataplane` binary: find it, run it, capture its output.
#![forbid(unsafe_code)]

pub mod lab;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The built `dataplane` binary next to the test executable (`target/<profile>/dataplane`).
/// `scripts/test` builds it before running the tests.
pub fn binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test> -> target/<profile>/dataplane
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let bin = dir.join("dataplane");
    assert!(
        bin.exists(),
        "{} is missing: build it first (cargo build -p dataplane), as scripts/test does",
        bin.display()
    );
    bin
}

/// The result of one run.
#[derive(Debug)]
pub struct Run {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Self {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// Run `dataplane ARGS...` in the workspace root with a clean `DATAPLANE_*` environment.
pub fn dataplane(args: &[&str]) -> Run {
    dataplane_env(args, &[])
}

/// Run `dataplane ARGS...` with extra environment variables.
pub fn dataplane_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(binary());
    cmd.args(args).current_dir(workspace());
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("DATAPLANE_")) {
        cmd.env_remove(k);
    }
    cmd.envs(env.iter().copied());
    match cmd.output() {
        Ok(o) => o.into(),
        Err(e) => panic!("cannot run {}: {e}", binary().display()),
    }
}

pub mod netns;

/// A free TCP port on 127.0.0.1 (bound then released; good enough for tests).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    l.local_addr()
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("local_addr: {e}"))
}

/// A running `dataplane run`, killed on drop. Its stdout (the access log) goes to a file.
pub struct Proxy {
    child: std::process::Child,
    /// Directory holding the configuration and the logs.
    pub dir: tempfile::TempDir,
}

impl Proxy {
    /// Start the proxy on `config` (YAML) with `mesh` (YAML) and extra arguments, and wait
    /// until `ready_port` on 127.0.0.1 accepts connections.
    pub fn start(config: &str, mesh: &str, args: &[&str], ready_port: u16) -> Self {
        Self::start_env(config, mesh, args, &[], ready_port)
    }

    /// Like [`Proxy::start`], with extra environment variables (e.g. `DATAPLANE_IO_DRIVER`).
    pub fn start_env(
        config: &str,
        mesh: &str,
        args: &[&str],
        env: &[(&str, &str)],
        ready_port: u16,
    ) -> Self {
        Self::start_with(&[], config, mesh, args, env, ready_port)
    }

    /// Like [`Proxy::start_env`], run through `prefix` (e.g. `prlimit --nofile=64:64`).
    pub fn start_with(
        prefix: &[&str],
        config: &str,
        mesh: &str,
        args: &[&str],
        env: &[(&str, &str)],
        ready_port: u16,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let conf = dir.path().join("config");
        std::fs::create_dir(&conf).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(conf.join("config.yaml"), config).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.path().join("mesh.yaml"), mesh).unwrap_or_else(|e| panic!("{e}"));
        let stdout =
            std::fs::File::create(dir.path().join("access.log")).unwrap_or_else(|e| panic!("{e}"));
        let stderr =
            std::fs::File::create(dir.path().join("proxy.log")).unwrap_or_else(|e| panic!("{e}"));
        let mut cmd = match prefix.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(binary());
                c
            }
            None => Command::new(binary()),
        };
        cmd.arg("run")
            .arg("--config")
            .arg(&conf)
            .arg("--mesh")
            .arg(dir.path().join("mesh.yaml"))
            .args(args)
            // Parallel proxies must not fight over the default admin port.
            .args(if args.contains(&"--admin") {
                &[][..]
            } else {
                &["--admin", "127.0.0.1:0"][..]
            })
            .args(if args.contains(&"--status-port") {
                &[][..]
            } else {
                &["--status-port", "0"][..]
            })
            .args(if args.contains(&"--prometheus-port") {
                &[][..]
            } else {
                &["--prometheus-port", "0"][..]
            })
            .stdout(stdout)
            .stderr(stderr);
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("DATAPLANE_")) {
            cmd.env_remove(k);
        }
        cmd.envs(env.iter().copied());
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn: {e}"));
        let proxy = Self { child, dir };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", ready_port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "proxy did not listen on {ready_port}:\n{}",
                proxy.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        proxy
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The port the proxy's `name` server (`admin`, `status`, `prometheus`) listens on, from
    /// its log; waits up to 10 s. Lets tests pass port 0 instead of racing for a free port.
    pub fn server_port(&self, name: &str) -> u16 {
        let needle = format!("{name} server listening");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let log = self.log();
            let port = log.lines().filter(|l| l.contains(&needle)).find_map(|l| {
                l.split("address=")
                    .nth(1)?
                    .rsplit(':')
                    .next()?
                    .trim()
                    .parse()
                    .ok()
            });
            if let Some(port) = port {
                return port;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no {name} server in the log:\n{log}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Send a signal by name (`TERM`, `HUP`, ...) with kill(1).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap_or_else(|e| panic!("kill: {e}"));
        assert!(status.success(), "kill -{name} failed");
    }

    /// Wait up to `timeout` for the process to exit; its exit code (-1 when killed by a
    /// signal), or `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: std::time::Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status.code().unwrap_or(-1));
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// The configuration file the proxy was started on (rewrite it to reload).
    pub fn config_file(&self) -> PathBuf {
        self.dir.path().join("config").join("config.yaml")
    }

    /// The proxy's own log (stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("proxy.log")).unwrap_or_default()
    }

    /// Access-log lines written so far, parsed.
    pub fn access_log(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join("access.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Wait until the access log has at least `n` lines, and return them.
    pub fn wait_access_log(&self, n: usize) -> Vec<serde_json::Value> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let lines = self.access_log();
            if lines.len() >= n || std::time::Instant::now() > deadline {
                return lines;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP server on 127.0.0.1 that greets every connection with `banner`, records what it
/// receives, and echoes it back until the client half-closes.
pub struct Upstream {
    /// Its port.
    pub port: u16,
    received: std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
}

impl Upstream {
    /// Start one on 127.0.0.1 and a free port.
    pub fn start(banner: &'static [u8]) -> Self {
        Self::serve(
            std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}")),
            banner,
        )
    }

    fn serve(listener: std::net::TcpListener, banner: &'static [u8]) -> Self {
        use std::io::{Read, Write};
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = received.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let record = record.clone();
                std::thread::spawn(move || {
                    let _ = conn.write_all(banner);
                    let mut got = Vec::new();
                    let mut buf = [0u8; 65536];
                    loop {
                        match conn.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                got.extend_from_slice(&buf[..n]);
                                let _ = conn.write_all(&buf[..n]);
                            }
                        }
                    }
                    if let Ok(mut r) = record.lock() {
                        r.push(got);
                    }
                });
            }
        });
        Self { port, received }
    }

    /// What each finished connection sent, in order of completion.
    pub fn received(&self) -> Vec<Vec<u8>> {
        self.received.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Upstream {
    /// Like [`Upstream::start`], on a given address.
    pub fn start_on(addr: std::net::SocketAddr, banner: &'static [u8]) -> Self {
        Self::serve(
            std::net::TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}")),
            banner,
        )
    }
}

/// Name -> (A records, TTL in seconds), shared with the stub's thread.
type RecordTable = std::sync::Arc<
    std::sync::Mutex<std::collections::HashMap<String, (Vec<std::net::Ipv4Addr>, u32)>>,
>;

/// A DNS server for tests: answers A queries from a table the test can change (TTL in seconds);
/// unknown names get NXDOMAIN.
pub struct StubDns {
    /// Its address (UDP and TCP).
    pub addr: std::net::SocketAddr,
    records: RecordTable,
    truncated: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// The stub's answer to one query: the table's A records (TC instead when `force_tc` says so),
/// or NXDOMAIN. Names under `servfail.` get SERVFAIL; names under `garbage.` get bytes that
/// carry the query's ID and are no DNS message.
fn dns_reply(
    query: &[u8],
    table: &RecordTable,
    force_tc: impl Fn(&str) -> bool,
) -> Option<Vec<u8>> {
    use hickory_proto::op::{Message, MessageType, ResponseCode};
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{RData, Record};
    let query = Message::from_vec(query).ok()?;
    let q = query.queries.first()?;
    let name = q
        .name()
        .to_ascii()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let mut reply = Message::new(
        query.metadata.id,
        MessageType::Response,
        query.metadata.op_code,
    );
    reply.metadata.recursion_desired = true;
    reply.add_query(q.clone());
    if name.starts_with("garbage.") {
        let mut junk = query.metadata.id.to_be_bytes().to_vec();
        junk.extend_from_slice(&[0x81, 0x80, 0xff, 0xff, 0xff, 0xff, 0, 1, 2]);
        return Some(junk);
    }
    if name.starts_with("servfail.") {
        reply.metadata.response_code = ResponseCode::ServFail;
        return reply.to_vec().ok();
    }
    if force_tc(&name) {
        reply.metadata.truncation = true;
        return reply.to_vec().ok();
    }
    match table.lock().ok().and_then(|t| t.get(&name).cloned()) {
        Some((ips, ttl)) => {
            for ip in ips {
                reply
                    .answers
                    .push(Record::from_rdata(q.name().clone(), ttl, RData::A(A(ip))));
            }
        }
        None => reply.metadata.response_code = ResponseCode::NXDomain,
    }
    reply.to_vec().ok()
}

impl StubDns {
    /// Start one on 127.0.0.1, UDP and TCP on the same port.
    pub fn start() -> Self {
        let (socket, tcp) = loop {
            let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
            let port = udp.local_addr().map(|a| a.port()).unwrap_or_default();
            if let Ok(tcp) = std::net::TcpListener::bind(("127.0.0.1", port)) {
                break (udp, tcp);
            }
        };
        let addr = socket.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let records = RecordTable::default();
        let truncated = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let (table, trunc) = (records.clone(), truncated.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok((n, peer)) = socket.recv_from(&mut buf) {
                let force_tc = |name: &str| trunc.lock().is_ok_and(|t| t.iter().any(|x| x == name));
                if let Some(reply) = dns_reply(&buf[..n], &table, force_tc) {
                    let _ = socket.send_to(&reply, peer);
                }
            }
        });
        let table = records.clone();
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            for conn in tcp.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut len = [0u8; 2];
                if conn.read_exact(&mut len).is_err() {
                    continue;
                }
                let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
                if conn.read_exact(&mut query).is_err() {
                    continue;
                }
                if let Some(reply) = dns_reply(&query, &table, |_| false) {
                    let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
                    framed.extend_from_slice(&reply);
                    let _ = conn.write_all(&framed);
                }
            }
        });
        Self {
            addr,
            records,
            truncated,
        }
    }

    /// Answer `name` over UDP with the TC bit and no records, so clients must ask over TCP.
    pub fn truncate(&self, name: &str) {
        if let Ok(mut t) = self.truncated.lock() {
            t.push(name.to_owned());
        }
    }

    /// Set the A records of `name`.
    pub fn set(&self, name: &str, ips: &[&str], ttl: u32) {
        let ips = ips
            .iter()
            .map(|ip| ip.parse().unwrap_or_else(|e| panic!("{ip}: {e}")))
            .collect();
        if let Ok(mut t) = self.records.lock() {
            t.insert(name.to_owned(), (ips, ttl));
        }
    }
}

/// A minimal HTTP/1.1 keep-alive origin on 127.0.0.1: answers every request head (bodies are
/// not expected) with `200` and `ok`, and counts the requests.
pub struct HttpOrigin {
    /// Its port.
    pub port: u16,
    /// Requests answered so far.
    pub requests: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl HttpOrigin {
    /// Start it on a free port.
    pub fn start() -> Self {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("{e}"))
            .port();
        let requests = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = requests.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let counter = counter.clone();
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            if conn
                                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                                .is_err()
                            {
                                return;
                            }
                        }
                        match conn.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                });
            }
        });
        Self { port, requests }
    }
}
