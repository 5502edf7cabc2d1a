//! Open-loop HTTP/1.1 latency (scenario S5): `connections` keep-alive connections together send
//! `rate` requests per second on a fixed schedule for `seconds`, into an HDR histogram. A
//! request that could not be sent on time because the previous response was late is measured
//! from its scheduled time (no coordinated omission); otherwise from the moment it was sent,
//! so the runtime's millisecond timer does not add its own lateness to every sample.
//! Prints one JSON object with p50, p90, p99, p99.9 and max in microseconds.
//!
//! `http-latency <addr> <host> <path> <rate> <connections> <seconds>`

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

fn arg(i: usize) -> String {
    std::env::args().nth(i).unwrap_or_else(|| {
        eprintln!("usage: http-latency <addr> <host> <path> <rate> <connections> <seconds>");
        std::process::exit(2)
    })
}

/// Read one response with a Content-Length body; false on EOF or a malformed head.
async fn response(s: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    buf.clear();
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let Some(len) = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
            else {
                return false;
            };
            if buf.len() >= end + 4 + len {
                return true;
            }
        }
        let spare = Vec::with_capacity(16 * 1024);
        let (res, chunk) = s.read(spare).await;
        match res {
            Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return false,
        }
    }
}

fn main() {
    let addr = arg(1);
    let host = arg(2);
    let path = arg(3);
    let rate: f64 = arg(4).parse().unwrap_or(1000.0);
    let connections: usize = arg(5).parse().unwrap_or(16);
    let seconds: u64 = arg(6).parse().unwrap_or(10);
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes();
    let hist = Rc::new(RefCell::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|e| panic!("{e}")),
    ));
    let errors = Rc::new(RefCell::new(0u64));
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    rt.block_on(async {
        let start = Instant::now() + Duration::from_millis(200);
        let interval = Duration::from_secs_f64(connections as f64 / rate);
        let total = (rate * seconds as f64 / connections as f64) as u64;
        let mut tasks = Vec::new();
        for c in 0..connections {
            let (hist, errors, addr, request) =
                (hist.clone(), errors.clone(), addr.clone(), request.clone());
            // Spread the connections' schedules evenly over one interval.
            let offset = interval.mul_f64(c as f64 / connections as f64);
            tasks.push(monoio::spawn(async move {
                let Ok(mut s) = TcpStream::connect(addr.as_str()).await else {
                    *errors.borrow_mut() += total;
                    return;
                };
                let _ = s.set_nodelay(true);
                let mut buf = Vec::with_capacity(16 * 1024);
                let mut free_at = Instant::now();
                for k in 0..total {
                    let due = start + offset + interval.mul_f64(k as f64);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        monoio::time::sleep(wait).await;
                    }
                    // Late because of the server (the previous response ended after `due`):
                    // count from `due`; late because of the timer: count from the send.
                    let from = if free_at > due { due } else { Instant::now() };
                    let (res, _) = s.write_all(request.clone()).await;
                    if res.is_err() || !response(&mut s, &mut buf).await {
                        *errors.borrow_mut() += total - k;
                        return;
                    }
                    free_at = Instant::now();
                    let micros = from.elapsed().as_micros() as u64;
                    let _ = hist.borrow_mut().record(micros.max(1));
                }
            }));
        }
        for t in tasks {
            t.await;
        }
    });
    let h = hist.borrow();
    println!(
        "{{\"requests\": {}, \"errors\": {}, \"p50_us\": {}, \"p90_us\": {}, \"p99_us\": {}, \"p999_us\": {}, \"max_us\": {}}}",
        h.len(),
        errors.borrow(),
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.9),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max()
    );
}
