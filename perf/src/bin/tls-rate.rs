//! New TLS connections per second (scenario S3): `concurrency` loops each connect, complete a
//! full TLS handshake (no resumption) with `sni`, and close, for `seconds`. Prints one JSON
//! object: `{"connections": N, "per_second": R, "errors": E}`.
//!
//! `tls-rate <addr> <sni> <concurrency> <seconds> <ca.pem>`

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::net::TcpStream;
use rustls::pki_types::ServerName;

fn arg(i: usize) -> String {
    std::env::args().nth(i).unwrap_or_else(|| {
        eprintln!("usage: tls-rate <addr> <sni> <concurrency> <seconds> <ca.pem>");
        std::process::exit(2)
    })
}

fn main() {
    let addr = arg(1);
    let sni = arg(2);
    let concurrency: usize = arg(3).parse().unwrap_or(16);
    let seconds: u64 = arg(4).parse().unwrap_or(5);
    let ca = arg(5);
    let mut config = dataplane_perf::tls_client_config(&ca);
    // Every connection pays a full handshake, as a new client would.
    config.resumption = rustls::client::Resumption::disabled();
    let connector = monoio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from(sni).unwrap_or_else(|e| panic!("{e}"));
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let done = Rc::new(Cell::new(0u64));
    let errors = Rc::new(Cell::new(0u64));
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..concurrency {
            let (done, errors) = (done.clone(), errors.clone());
            let (connector, name, addr) = (connector.clone(), name.clone(), addr.clone());
            tasks.push(monoio::spawn(async move {
                while Instant::now() < until {
                    let ok = match TcpStream::connect(addr.as_str()).await {
                        Ok(tcp) => {
                            let _ = tcp.set_nodelay(true);
                            connector.connect(name.clone(), tcp).await.is_ok()
                        }
                        Err(_) => false,
                    };
                    if ok {
                        done.set(done.get() + 1);
                    } else {
                        errors.set(errors.get() + 1);
                        monoio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }));
        }
        for t in tasks {
            t.await;
        }
    });
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{{\"connections\": {}, \"per_second\": {:.1}, \"errors\": {}}}",
        done.get(),
        done.get() as f64 / secs,
        errors.get()
    );
}
