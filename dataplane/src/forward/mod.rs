//! Forwarding bytes both ways at once, the detection prefix first, half-close propagated, byte
//! counts kept. Two ways to move bytes, chosen with `--forward`:
//! - copy: readiness first, then non-blocking `recv`/`send` on the worker. An idle direction
//!   waits for readiness holding no buffer (so an idle connection costs its task and two poll
//!   operations, not buffers); a buffer is taken when bytes are waiting, starts at 2 KiB and
//!   doubles (to 256 KiB) while reads fill it, and is released once the socket is drained;
//! - splice ([`splice`]): socket -> pooled 1 MiB pipe -> socket, no copy through user space.

pub mod splice;

use monoio::net::TcpStream;
use std::io::ErrorKind;
use std::pin::{Pin, pin};
use std::time::{Duration, Instant};

use crate::coarse_timer::CoarseTimer;

/// How bytes are moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// read/write through adaptive buffers.
    Copy,
    /// splice(2) through pooled pipes.
    Splice,
}

const MIN_BUFFER: usize = 2 * 1024;
const MAX_BUFFER: usize = 256 * 1024;

/// Bytes moved and how each direction ended.
#[derive(Debug, Default)]
pub struct Forwarded {
    /// Client -> upstream, prefix included.
    pub to_upstream: u64,
    /// Upstream -> client.
    pub to_client: u64,
    /// The first error either direction met, if any.
    pub error: Option<std::io::Error>,
}

/// Bytes moved by one direction so far: kept outside the direction's future, so the count
/// survives when the other direction's failure cancels it.
type Moved = std::cell::Cell<u64>;

/// Send all of `bytes` on the non-blocking socket `to`, waiting for room when it has none.
async fn send_all(to: &TcpStream, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        match crate::sys::with_socket(to, |s| s.send(bytes)) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock => to.writable(false).await?,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Full reads in a row after which a direction lets the worker's other tasks run: with sockets
/// that always have bytes and room, no wait would ever give the worker back.
const YIELD_AFTER: u32 = 16;

/// Return to the runtime once, to be polled again after the tasks already woken.
async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await;
}

/// Copy `from` -> `to` until EOF, then half-close `to`. Both sockets are non-blocking.
///
/// The send loop is written out here rather than awaited as [`send_all`]: a nested future
/// would keep its own copy of the state, and every idle connection carries two of these.
async fn copy(from: &TcpStream, to: &TcpStream, moved: &Moved) -> (u64, Option<std::io::Error>) {
    let mut size = MIN_BUFFER;
    let mut streak = 0u32;
    // Empty (no allocation) while the direction is idle.
    let mut buf: Vec<u8> = Vec::new();
    loop {
        if buf.capacity() == 0 {
            if let Err(e) = from.readable(false).await {
                return (moved.get(), Some(e));
            }
            buf = Vec::with_capacity(size);
        }
        let n = match crate::sys::recv_append(from, &mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                buf = Vec::new();
                continue;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return (moved.get(), Some(e)),
        };
        let mut sent = 0;
        while sent < n {
            match crate::sys::with_socket(to, |s| s.send(&buf[sent..])) {
                Ok(m) => sent += m,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if let Err(e) = to.writable(false).await {
                        return (moved.get(), Some(e));
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return (moved.get(), Some(e)),
            }
        }
        moved.set(moved.get() + n as u64);
        if n == buf.capacity() {
            // A full read: more is probably waiting. Keep the buffer, larger.
            buf.clear();
            if size < MAX_BUFFER {
                size *= 2;
                buf.reserve_exact(size);
            }
            streak += 1;
            if streak == YIELD_AFTER {
                streak = 0;
                yield_now().await;
            }
        } else {
            streak = 0;
            // Drained: give the buffer back and wait for readiness without one.
            if n < size / 2 {
                size = (size / 2).max(MIN_BUFFER);
            }
            buf = Vec::new();
        }
    }
    // Half-close: the peer learns this direction is done; the other keeps flowing.
    let _ = crate::sys::with_socket(to, |s| s.shutdown(std::net::Shutdown::Write));
    (moved.get(), None)
}

/// Run both directions. A direction that ends cleanly (EOF, half-close passed on) lets the
/// other finish; one that fails (a reset, a write error) ends both at once, so the other side
/// is closed too instead of waiting forever on a peer that will never hear of the failure.
/// When neither direction moves a byte for `idle`, both end (the TCP idle timeout).
///
/// The directions are pinned by the caller and borrowed here: a future moved into this one and
/// pinned again would be stored twice in the connection's task.
async fn both(
    mut up: Pin<&mut impl Future<Output = (u64, Option<std::io::Error>)>>,
    mut down: Pin<&mut impl Future<Output = (u64, Option<std::io::Error>)>>,
    moved: (&Moved, &Moved),
    idle: Duration,
    timer: &CoarseTimer,
) -> Forwarded {
    // The watchdog looks at the byte counts a few times per idle period: nothing on the
    // data path pays for it, and its timer is the worker's coarse one (no runtime timer per
    // connection).
    let mut watchdog = pin!(async {
        let tick = (idle / 4).max(Duration::from_millis(10));
        let mut last = (moved.0.get(), moved.1.get());
        let mut quiet = Duration::ZERO;
        loop {
            timer.sleep_until(Instant::now() + tick).await;
            let now = (moved.0.get(), moved.1.get());
            quiet = if now == last {
                quiet + tick
            } else {
                Duration::ZERO
            };
            last = now;
            if quiet >= idle {
                return;
            }
        }
    });
    let idle_error = || Some(std::io::Error::new(ErrorKind::TimedOut, "idle timeout"));
    let ((to_upstream, e1), (to_client, e2)) = monoio::select! {
        u = &mut up => match u.1 {
            Some(_) => (u, (moved.1.get(), None)),
            None => monoio::select! {
                d = &mut down => (u, d),
                () = &mut watchdog => (u, (moved.1.get(), idle_error())),
            },
        },
        d = &mut down => match d.1 {
            Some(_) => ((moved.0.get(), None), d),
            None => monoio::select! {
                u = &mut up => (u, d),
                () = &mut watchdog => ((moved.0.get(), idle_error()), d),
            },
        },
        () = &mut watchdog => ((moved.0.get(), idle_error()), (moved.1.get(), None)),
    };
    Forwarded {
        to_upstream,
        to_client,
        error: e1.or(e2),
    }
}

/// Forward between `client` and `upstream`, sending `prefix` (the bytes read for detection)
/// upstream first, by `mode` (falling back to copying when no pipe can be had).
pub async fn forward(
    client: &TcpStream,
    upstream: &TcpStream,
    prefix: Vec<u8>,
    mode: Mode,
    pipes: &splice::PipePool,
    idle: Duration,
    timer: &CoarseTimer,
) -> Forwarded {
    // Both ways of moving bytes make non-blocking system calls after a readiness wait: io_uring
    // hands out sockets in blocking mode, and a blocking call would stall the whole worker.
    let nonblocking = |s: &TcpStream| crate::sys::with_socket(s, |s| s.set_nonblocking(true));
    if let Err(e) = nonblocking(client).and_then(|()| nonblocking(upstream)) {
        return Forwarded {
            error: Some(e),
            ..Forwarded::default()
        };
    }
    let prefix_len = prefix.len() as u64;
    if let Err(e) = send_all(upstream, &prefix).await {
        return Forwarded {
            error: Some(e),
            ..Forwarded::default()
        };
    }
    drop(prefix);
    let pipes = if mode == Mode::Splice {
        pipes.take().and_then(|up| Ok((up, pipes.take()?))).ok()
    } else {
        None
    };
    let mut done = if let Some(pipes) = pipes {
        // Boxed: inline, the splice state (pipes and their directions) would be reserved in
        // every copying connection's task too.
        Box::pin(spliced(client, upstream, pipes, idle, timer)).await
    } else {
        let (sent, received) = (Moved::new(0), Moved::new(0));
        let up = pin!(copy(client, upstream, &sent));
        let down = pin!(copy(upstream, client, &received));
        both(up, down, (&sent, &received), idle, timer).await
    };
    done.to_upstream += prefix_len;
    done
}

/// Both directions through the two pipes.
async fn spliced(
    client: &TcpStream,
    upstream: &TcpStream,
    (up_pipe, down_pipe): (splice::Pipe<'_>, splice::Pipe<'_>),
    idle: Duration,
    timer: &CoarseTimer,
) -> Forwarded {
    let (sent, received) = (Moved::new(0), Moved::new(0));
    let up = pin!(splice::direction(client, upstream, &up_pipe, &sent));
    let down = pin!(splice::direction(upstream, client, &down_pipe, &received));
    both(up, down, (&sent, &received), idle, timer).await
}
