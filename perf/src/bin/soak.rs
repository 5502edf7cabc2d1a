//! The soak client (`perf/scripts/soak.sh` sets up the proxy and origins and runs it): holds
//! thousands of connections through the proxy for a long time, each exchanging and verifying
//! bytes every few seconds, while the configuration is reloaded every 30 s and the proxy's
//! resident memory is sampled.
//!
//! Connections: opaque TCP to an echo origin this process serves (each message checked byte
//! for byte), keep-alive HTTP/1.1 (status and body length checked) and TLS pass-through
//! (a rustls session end to end: handshake, then HTTP requests inside it).
//!
//! `soak <tcp> <http> <tls> <seconds> <proxy-pid> <reload-file> <ca.pem>`

use std::cell::Cell;
use std::io::Write;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::io::{AsyncReadRent, AsyncReadRentExt, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};
use rustls::pki_types::ServerName;

const ECHO_ORIGIN: &str = "127.0.0.1:19001";
const TCP_VIA_PROXY: &str = "127.0.0.60:19100";
const HTTP_VIA_PROXY: &str = "127.0.0.1:19101";
const TLS_VIA_PROXY: &str = "127.0.0.1:19102";
/// Each connection exchanges once per this period (with jitter).
const PERIOD: Duration = Duration::from_secs(5);
/// Bytes per TCP echo exchange.
const MESSAGE: usize = 1024;

#[derive(Default)]
struct Stats {
    open: Cell<u64>,
    exchanges: Cell<u64>,
    bytes: Cell<u64>,
    errors: Cell<u64>,
    first_errors: std::cell::RefCell<Vec<String>>,
}

impl Stats {
    fn fail(&self, what: String) {
        self.errors.set(self.errors.get() + 1);
        let mut first = self.first_errors.borrow_mut();
        if first.len() < 10 {
            first.push(what);
        }
    }
    fn ok(&self, bytes: usize) {
        self.exchanges.set(self.exchanges.get() + 1);
        self.bytes.set(self.bytes.get() + bytes as u64);
    }
}

fn arg<T: std::str::FromStr>(i: usize, what: &str) -> T {
    std::env::args()
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| {
            eprintln!("usage: soak <tcp> <http> <tls> <seconds> <proxy-pid> <reload-file> <ca.pem> ({what})");
            std::process::exit(2)
        })
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// The echo origin for the TCP connections, on a thread of its own.
fn echo_origin() {
    std::thread::spawn(|| {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"));
        rt.block_on(async {
            let listener = TcpListener::bind(ECHO_ORIGIN).unwrap_or_else(|e| panic!("{e}"));
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    continue;
                };
                monoio::spawn(async move {
                    let mut buf = Vec::with_capacity(16 * 1024);
                    loop {
                        let (res, b) = s.read(buf).await;
                        buf = b;
                        if !matches!(res, Ok(n) if n > 0) {
                            return;
                        }
                        let (res, b) = s.write_all(buf).await;
                        buf = b;
                        if res.is_err() {
                            return;
                        }
                        buf.clear();
                    }
                });
            }
        });
    });
}

fn pattern(id: u64, round: u64) -> Vec<u8> {
    (0..MESSAGE)
        .map(|i| (id.wrapping_mul(31).wrapping_add(round * 7 + i as u64) % 251) as u8)
        .collect()
}

async fn tcp_conn(id: u64, until: Instant, stats: Rc<Stats>) {
    let Ok(mut s) = TcpStream::connect(TCP_VIA_PROXY).await else {
        stats.fail(format!("tcp {id}: connect"));
        return;
    };
    stats.open.set(stats.open.get() + 1);
    let mut round = 0;
    while Instant::now() < until {
        jitter_sleep(id).await;
        let msg = pattern(id, round);
        let (res, _) = s.write_all(msg.clone()).await;
        if res.is_err() {
            stats.fail(format!("tcp {id}: write in round {round}"));
            break;
        }
        let (res, back) = s.read_exact(Vec::with_capacity(MESSAGE)).await;
        if res.is_err() || back != msg {
            stats.fail(format!("tcp {id}: echo in round {round}"));
            break;
        }
        stats.ok(2 * MESSAGE);
        round += 1;
    }
    stats.open.set(stats.open.get() - 1);
}

async fn jitter_sleep(id: u64) {
    let jitter = Duration::from_millis((id * 7919) % 1000);
    monoio::time::sleep(PERIOD - Duration::from_millis(500) + jitter).await;
}

/// Send a GET on `io` and read one response (Content-Length bodies); its status and body size.
async fn http_exchange<S: AsyncReadRent + monoio::io::AsyncWriteRent>(
    io: &mut S,
    host: &str,
    path: &str,
) -> Option<(u16, usize)> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes();
    let (res, _) = io.write_all(req).await;
    res.ok()?;
    io.flush().await.ok()?;
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let status: u16 = head.get(9..12)?.parse().ok()?;
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))?
                .trim()
                .parse()
                .ok()?;
            while buf.len() < end + 4 + len {
                let spare = Vec::with_capacity(16 * 1024);
                let (res, chunk) = io.read(spare).await;
                let n = res.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Some((status, len));
        }
        let spare = Vec::with_capacity(4096);
        let (res, chunk) = io.read(spare).await;
        let n = res.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn http_conn(id: u64, until: Instant, stats: Rc<Stats>) {
    let Ok(mut s) = TcpStream::connect(HTTP_VIA_PROXY).await else {
        stats.fail(format!("http {id}: connect"));
        return;
    };
    stats.open.set(stats.open.get() + 1);
    let mut round = 0;
    while Instant::now() < until {
        jitter_sleep(id).await;
        match http_exchange(&mut s, "web.soak", "/1k").await {
            Some((200, 1024)) => stats.ok(1024),
            other => {
                stats.fail(format!("http {id}: round {round}: {other:?}"));
                break;
            }
        }
        round += 1;
    }
    stats.open.set(stats.open.get() - 1);
}

async fn tls_conn(id: u64, until: Instant, stats: Rc<Stats>, config: Arc<rustls::ClientConfig>) {
    let Ok(tcp) = TcpStream::connect(TLS_VIA_PROXY).await else {
        stats.fail(format!("tls {id}: connect"));
        return;
    };
    let connector = monoio_rustls::TlsConnector::from(config);
    let name = ServerName::try_from("tls.soak").unwrap_or_else(|e| panic!("{e}"));
    let Ok(mut s) = connector.connect(name, tcp).await else {
        stats.fail(format!("tls {id}: handshake"));
        return;
    };
    stats.open.set(stats.open.get() + 1);
    let mut round = 0;
    while Instant::now() < until {
        jitter_sleep(id).await;
        match http_exchange(&mut s, "tls.soak", "/1k").await {
            Some((200, 1024)) => stats.ok(1024),
            other => {
                stats.fail(format!("tls {id}: round {round}: {other:?}"));
                break;
            }
        }
        round += 1;
    }
    stats.open.set(stats.open.get() - 1);
}

fn main() {
    let tcp: u64 = arg(1, "tcp");
    let http: u64 = arg(2, "http");
    let tls: u64 = arg(3, "tls");
    let seconds: u64 = arg(4, "seconds");
    let pid: u32 = arg(5, "proxy pid");
    let reload_file: String = arg(6, "reload file");
    let ca: String = arg(7, "ca");
    echo_origin();
    std::thread::sleep(Duration::from_millis(200));
    let config = Arc::new(dataplane_perf::tls_client_config(&ca));
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let stats = Rc::new(Stats::default());
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let total = tcp + http + tls;
    let mut samples: Vec<(u64, u64, u64, u64, u64)> = Vec::new();
    rt.block_on(async {
        // Open the connections over the first 20 s.
        let pace = Duration::from_secs(20) / u32::try_from(total.max(1)).unwrap_or(u32::MAX);
        for id in 0..total {
            let stats = stats.clone();
            if id < tcp {
                monoio::spawn(tcp_conn(id, until, stats));
            } else if id < tcp + http {
                monoio::spawn(http_conn(id, until, stats));
            } else {
                monoio::spawn(tls_conn(id, until, stats, config.clone()));
            }
            monoio::time::sleep(pace).await;
        }
        let mut generation = 0u64;
        let mut last_reload = Instant::now();
        while Instant::now() < until {
            monoio::time::sleep(Duration::from_secs(10)).await;
            if last_reload.elapsed() >= Duration::from_secs(30) {
                generation += 1;
                let text = format!(
                    "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: extra}}\nspec:\n  hosts: [extra{generation}.soak]\n  ports: [{{number: 19101, name: http, protocol: HTTP}}]\n  resolution: STATIC\n  endpoints: [{{address: 127.0.0.1, ports: {{http: 19080}}}}]\n"
                );
                let tmp = format!("{reload_file}.tmp");
                if std::fs::write(&tmp, text).is_ok() {
                    let _ = std::fs::rename(&tmp, &reload_file);
                }
                last_reload = Instant::now();
            }
            let sample = (
                started.elapsed().as_secs(),
                stats.open.get(),
                stats.exchanges.get(),
                stats.errors.get(),
                rss_kb(pid),
            );
            println!(
                "t={:>4}s open={:>5} exchanges={:>8} errors={} proxy_rss={} kB reloads={generation}",
                sample.0, sample.1, sample.2, sample.3, sample.4
            );
            let _ = std::io::stdout().flush();
            samples.push(sample);
        }
        // Let the connections finish their last round.
        monoio::time::sleep(PERIOD + Duration::from_secs(1)).await;
    });
    let peak_open = samples.iter().map(|s| s.1).max().unwrap_or(0);
    let after_warmup: Vec<u64> = samples.iter().filter(|s| s.0 >= 60).map(|s| s.4).collect();
    println!("\n## Soak result\n");
    println!("| figure | value |\n|---|---|");
    println!("| duration | {seconds} s |");
    println!(
        "| connections held (peak) | {peak_open} of {total} ({tcp} TCP, {http} HTTP, {tls} TLS) |"
    );
    println!("| exchanges verified | {} |", stats.exchanges.get());
    println!("| payload bytes verified | {} |", stats.bytes.get());
    println!("| errors | {} |", stats.errors.get());
    if let (Some(first), Some(last)) = (after_warmup.first(), after_warmup.last()) {
        let min = after_warmup.iter().min().copied().unwrap_or(0);
        let max = after_warmup.iter().max().copied().unwrap_or(0);
        println!("| proxy RSS after warm-up (t=60 s) | {first} kB |");
        println!("| proxy RSS at the end | {last} kB |");
        println!("| proxy RSS min / max after warm-up | {min} / {max} kB |");
    }
    for e in stats.first_errors.borrow().iter() {
        println!("error: {e}");
    }
    if stats.errors.get() > 0 {
        std::process::exit(1);
    }
}
