//! What one wake-up of a sleeping thread costs on this machine: two threads on different cores
//! bounce one byte over a loopback TCP connection, first with both spinning on non-blocking
//! reads (the transfer alone), then blocking in `read` with a pause between bounces (each
//! bounce wakes the other thread, whose core has gone idle), as a proxy at 1,000 requests per
//! second does; then both on one core, where a wake-up is a switch between threads and no core
//! leaves its idle state. Half the difference of two round trips is the cost of one wake-up.
//!
//! Usage: `wake-latency [BOUNCES]` (default 5,000). Prints p50 and p99 round trips in us.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Pause between bounces in the sleeping mode (1,000 per second, as S5's lower rate).
const GAP: Duration = Duration::from_millis(1);

fn main() -> std::io::Result<()> {
    let bounces: u64 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(5_000);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let other = 1 % cores;
    println!("mode                                 p50_us  p99_us  ({bounces} bounces)");
    for (name, spin, gap, core) in [
        ("spinning, cores 0 and 1", true, None, other),
        ("sleeping, cores 0 and 1", false, None, other),
        (
            "sleeping, cores 0 and 1, 1 ms pause",
            false,
            Some(GAP),
            other,
        ),
        ("sleeping, core 0 only", false, None, 0),
        ("sleeping, core 0 only, 1 ms pause", false, Some(GAP), 0),
    ] {
        let h = run(bounces, spin, gap, core)?;
        println!(
            "{name:36} {:7.1} {:7.1}",
            h.value_at_quantile(0.5) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0
        );
    }
    Ok(())
}

/// Read exactly one byte, spinning on a non-blocking socket or blocking in `read`.
fn one(s: &mut TcpStream, spin: bool) -> std::io::Result<()> {
    let mut b = [0u8; 1];
    loop {
        match s.read(&mut b) {
            Ok(1) => return Ok(()),
            Ok(_) => return Err(ErrorKind::UnexpectedEof.into()),
            Err(e) if spin && e.kind() == ErrorKind::WouldBlock => std::hint::spin_loop(),
            Err(e) => return Err(e),
        }
    }
}

fn run(
    bounces: u64,
    spin: bool,
    gap: Option<Duration>,
    other: usize,
) -> std::io::Result<Histogram<u64>> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let mut a = TcpStream::connect(listener.local_addr()?)?;
    let (mut b, _) = listener.accept()?;
    for s in [&a, &b] {
        s.set_nodelay(true)?;
        s.set_nonblocking(spin)?;
    }
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let _ = monoio::utils::bind_to_cpu_set([other]);
        for _ in 0..bounces {
            one(&mut b, spin)?;
            b.write_all(b"x")?;
        }
        Ok(())
    });
    let _ = monoio::utils::bind_to_cpu_set([0]);
    let mut h =
        Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).map_err(std::io::Error::other)?;
    for _ in 0..bounces {
        if let Some(gap) = gap {
            std::thread::sleep(gap);
        }
        let start = Instant::now();
        a.write_all(b"x")?;
        one(&mut a, spin)?;
        h.saturating_record(start.elapsed().as_nanos() as u64);
    }
    echo.join()
        .map_err(|_| std::io::Error::other("echo thread panicked"))??;
    Ok(h)
}
