//! TLS bulk throughput (scenario S2): `streams` threads each open one TLS connection with
//! `sni` and download `path` over and over (HTTP/1.1 keep-alive) for `seconds`, counting body
//! bytes. Through a proxy this is TLS pass-through after SNI routing: the proxy sees only
//! ciphertext. Prints one JSON object: `{"gbit_s": G, "bytes": B, "errors": E}`.
//!
//! `tls-bulk <addr> <sni> <path> <streams> <seconds> <ca.pem>`

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;

fn arg(i: usize) -> String {
    std::env::args().nth(i).unwrap_or_else(|| {
        eprintln!("usage: tls-bulk <addr> <sni> <path> <streams> <seconds> <ca.pem>");
        std::process::exit(2)
    })
}

fn main() {
    let addr = arg(1);
    let sni = arg(2);
    let path = arg(3);
    let streams: usize = arg(4).parse().unwrap_or(1);
    let seconds: u64 = arg(5).parse().unwrap_or(5);
    let ca = arg(6);
    let config = Arc::new(dataplane_perf::tls_client_config(&ca));
    let name = ServerName::try_from(sni.clone()).unwrap_or_else(|e| panic!("{e}"));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let workers: Vec<_> = (0..streams)
        .map(|_| {
            let (config, name, addr, sni, path) = (
                config.clone(),
                name.clone(),
                addr.clone(),
                sni.clone(),
                path.clone(),
            );
            std::thread::spawn(move || {
                download(&config, name, &addr, &sni, &path, deadline).unwrap_or_else(|e| {
                    eprintln!("tls-bulk: {e}");
                    (0, 1)
                })
            })
        })
        .collect();
    let (mut bytes, mut errors) = (0u64, 0u64);
    for w in workers {
        let (b, e) = w.join().unwrap_or((0, 1));
        bytes += b;
        errors += e;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{{\"gbit_s\": {:.2}, \"bytes\": {bytes}, \"errors\": {errors}}}",
        bytes as f64 * 8.0 / secs / 1e9
    );
}

/// Download `path` repeatedly on one connection until `deadline`: (body bytes, errors).
fn download(
    config: &Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
    addr: &str,
    sni: &str,
    path: &str,
    deadline: Instant,
) -> std::io::Result<(u64, u64)> {
    let conn =
        rustls::ClientConnection::new(config.clone(), name).map_err(std::io::Error::other)?;
    let tcp = TcpStream::connect(addr)?;
    tcp.set_nodelay(true)?;
    let mut tls = BufReader::with_capacity(256 * 1024, rustls::StreamOwned::new(conn, tcp));
    let request = format!("GET {path} HTTP/1.1\r\nHost: {sni}\r\n\r\n");
    let mut body = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    while Instant::now() < deadline {
        tls.get_mut().write_all(request.as_bytes())?;
        let mut length = None;
        let mut line = String::new();
        loop {
            line.clear();
            if tls.read_line(&mut line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            if line == "\r\n" {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse::<u64>().ok();
            }
        }
        let mut left = length.ok_or_else(|| std::io::Error::other("no Content-Length"))?;
        while left > 0 {
            let want = body.len().min(left as usize);
            let n = tls.read(&mut body[..want])?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            left -= n as u64;
            total += n as u64;
        }
    }
    Ok((total, 0))
}
