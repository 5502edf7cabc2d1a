//! Forwarding bytes both ways at once, the detection prefix first, half-close propagated, byte
//! counts kept. Two ways to move bytes, chosen with `--forward`:
//! - copy: readiness first, then non-blocking `recv`/`send` on the worker. An idle direction
//!   waits for readiness holding no buffer (so an idle connection costs its task and two poll
//!   operations, not buffers); a buffer is taken when bytes are waiting, starts at 2 KiB and
//!   doubles (to 256 KiB) while reads fill it, and is released once the socket is drained
//!   (the smallest ones to the thread's [`spare`] buffers, not to the allocator);
//! - splice ([`splice`]): socket -> pooled 1 MiB pipe -> socket, no copy through user space.
//!
//! Every idle connection carries these futures in its task (S9: memory per idle connection),
//! so the ones on the copying path are plain functions returning an `async move` block: an
//! `async fn` keeps each parameter twice (as passed, and moved into its body's locals).

mod spare;
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

/// How one direction ended: its byte count and its error, if any.
type Ended = (u64, Option<std::io::Error>);

/// Send all of `bytes` on `to` without blocking, waiting for room when it has none.
async fn send_all(to: &TcpStream, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        match crate::sys::send(to, bytes) {
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

/// Copy `from` -> `to` until EOF, then half-close `to`. Each call is non-blocking
/// (`MSG_DONTWAIT`), whatever the sockets' mode.
///
/// The send loop is written out here rather than awaited as [`send_all`]: a nested future
/// would keep its own copy of the state, and every idle connection carries two of these.
#[allow(clippy::manual_async_fn)] // parameters stored once: see the module doc
fn copy<'a>(
    from: &'a TcpStream,
    to: &'a TcpStream,
    moved: &'a Moved,
) -> impl Future<Output = Ended> + 'a {
    async move {
        let mut size = MIN_BUFFER;
        let mut streak = 0u32;
        // Empty (no allocation) while the direction is idle.
        let mut buf: Vec<u8> = Vec::new();
        loop {
            if buf.capacity() == 0 {
                if let Err(e) = from.readable(false).await {
                    return (moved.get(), Some(e));
                }
                buf = spare::take(size);
            }
            let n = match crate::sys::recv_append(from, &mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    spare::give_back(std::mem::take(&mut buf));
                    continue;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return (moved.get(), Some(e)),
            };
            let mut sent = 0;
            while sent < n {
                // The wait is outside the `match`: inside, the send's result would be kept
                // across it, in every connection's task.
                let full = match crate::sys::send(to, &buf[sent..]) {
                    Ok(m) => {
                        sent += m;
                        false
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => true,
                    Err(e) if e.kind() == ErrorKind::Interrupted => false,
                    Err(e) => return (moved.get(), Some(e)),
                };
                if full && let Err(e) = to.writable(false).await {
                    return (moved.get(), Some(e));
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
                spare::give_back(std::mem::take(&mut buf));
            }
        }
        // Half-close: the peer learns this direction is done; the other keeps flowing.
        let _ = crate::sys::with_socket(to, |s| s.shutdown(std::net::Shutdown::Write));
        (moved.get(), None)
    }
}

/// Run both directions. A direction that ends cleanly (EOF, half-close passed on) lets the
/// other finish; one that fails (a reset, a write error) ends both at once, so the other side
/// is closed too instead of waiting forever on a peer that will never hear of the failure.
/// When neither direction moves a byte for `idle`, both end (the TCP idle timeout).
///
/// The directions are pinned by the caller and borrowed here: a future moved into this one and
/// pinned again would be stored twice in the connection's task.
#[allow(clippy::manual_async_fn)] // parameters stored once: see the module doc
fn both<'a, U, D>(
    mut up: Pin<&'a mut U>,
    mut down: Pin<&'a mut D>,
    moved: (&'a Moved, &'a Moved),
    idle: &'a Duration,
    timer: &'a CoarseTimer,
) -> impl Future<Output = Forwarded> + 'a
where
    U: Future<Output = Ended>,
    D: Future<Output = Ended>,
{
    async move {
        // The watchdog looks at the byte counts a few times per idle period: nothing on the
        // data path pays for it, and its timer is the worker's coarse one (no runtime timer per
        // connection).
        let mut watchdog = pin!(async {
            let tick = (*idle / 4).max(Duration::from_millis(10));
            let expire =
                u64::try_from(idle.as_nanos().div_ceil(tick.as_nanos())).unwrap_or(u64::MAX);
            // Both counts only grow: their sum is unchanged exactly when neither moved.
            let (mut last, mut quiet) = (moved.0.get() + moved.1.get(), 0u64);
            loop {
                timer.sleep_until(Instant::now() + tick).await;
                let now = moved.0.get() + moved.1.get();
                quiet = if now == last { quiet + 1 } else { 0 };
                last = now;
                if quiet >= expire {
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
}

/// Forward between `client` and `upstream`, sending `prefix` (the bytes read for detection,
/// freed once sent) upstream first; spliced through two of `pipes` when given (`--forward
/// splice`) and pipes can be had, else copied. Parameters are borrowed where they can be: every
/// idle connection keeps them in its task.
#[allow(clippy::manual_async_fn)] // parameters stored once: see the module doc
pub fn forward<'a>(
    client: &'a TcpStream,
    upstream: &'a TcpStream,
    prefix: &'a mut Vec<u8>,
    pipes: Option<&'a splice::PipePool>,
    idle: &'a Duration,
    timer: &'a CoarseTimer,
) -> impl Future<Output = Forwarded> + 'a {
    async move {
        // Both ways of moving bytes make non-blocking system calls after a readiness wait, and a
        // blocking call would stall the whole worker. Copying asks for it per call
        // (`MSG_DONTWAIT`), so the sockets' mode does not matter; splice needs non-blocking
        // sockets (see `spliced`).
        // Counted as sent once it is (not kept apart: the task would carry the count).
        let prefix_len = prefix.len() as u64;
        if let Err(e) = send_all(upstream, prefix).await {
            return Forwarded {
                error: Some(e),
                ..Forwarded::default()
            };
        }
        *prefix = Vec::new();
        // Boxed: inline, the splice state (pipes and their directions) would be reserved in every
        // copying connection's task too.
        if let Some(pool) = pipes
            && let Some(mut done) = Box::pin(spliced(client, upstream, pool, idle, timer)).await
        {
            done.to_upstream += prefix_len;
            return done;
        }
        let (sent, received) = (Moved::new(prefix_len), Moved::new(0));
        let up = pin!(copy(client, upstream, &sent));
        let down = pin!(copy(upstream, client, &received));
        both(up, down, (&sent, &received), idle, timer).await
    }
}

/// Both directions through two pipes from `pool`; `None` (nothing done) when the pool has
/// none to give, and the bytes are copied instead.
async fn spliced(
    client: &TcpStream,
    upstream: &TcpStream,
    pool: &splice::PipePool,
    idle: &Duration,
    timer: &CoarseTimer,
) -> Option<Forwarded> {
    // splice(2) blocks on a blocking socket whatever its flags say, and io_uring hands accepted
    // sockets out in blocking mode (upstream sockets are non-blocking from `upstream::connect`).
    if let Err(e) = crate::sys::set_nonblocking(client) {
        return Some(Forwarded {
            error: Some(e),
            ..Forwarded::default()
        });
    }
    let (up_pipe, down_pipe) = (pool.take().ok()?, pool.take().ok()?);
    let (sent, received) = (Moved::new(0), Moved::new(0));
    let up = pin!(splice::direction(client, upstream, &up_pipe, &sent));
    let down = pin!(splice::direction(upstream, client, &down_pipe, &received));
    Some(both(up, down, (&sent, &received), idle, timer).await)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    const REQUEST: usize = 64;
    const RESPONSE: usize = 1024;

    /// Allocations on the worker's thread while [`forward`] copies `exchanges` keep-alive
    /// exchanges (64 bytes up, 1 KiB down, each waiting for the one before) between a client and
    /// an origin on real loopback sockets, from the start to both half-closes, on io_uring or
    /// epoll.
    fn allocations_relaying(exchanges: usize, uring: bool) -> u64 {
        let origin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let origin_addr = origin.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = origin.accept().unwrap();
            let mut request = [0u8; REQUEST];
            // Until the client's half-close reaches it.
            while s.read_exact(&mut request).is_ok() {
                s.write_all(&[b'r'; RESPONSE]).unwrap();
            }
        });
        let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy_addr = proxy.local_addr().unwrap();
        let client = std::thread::spawn(move || {
            let mut c = std::net::TcpStream::connect(proxy_addr).unwrap();
            let mut response = [0u8; RESPONSE];
            for _ in 0..exchanges {
                c.write_all(&[b'q'; REQUEST]).unwrap();
                c.read_exact(&mut response).unwrap();
                assert_eq!(response, [b'r'; RESPONSE]);
            }
            c.shutdown(std::net::Shutdown::Write).unwrap();
            // The origin's close, passed on.
            assert_eq!(c.read(&mut response).unwrap(), 0);
        });
        let relaying = async move {
            let listener = monoio::net::TcpListener::from_std(proxy).unwrap();
            let (downstream, _) = listener.accept().await.unwrap();
            let upstream = TcpStream::connect(origin_addr).await.unwrap();
            let timer = CoarseTimer::default();
            let mut prefix = Vec::new();
            crate::sys::counting::count(true);
            let idle = Duration::from_secs(60);
            let done = forward(&downstream, &upstream, &mut prefix, None, &idle, &timer).await;
            let allocations = crate::sys::counting::count(false);
            assert!(done.error.is_none(), "{:?}", done.error);
            assert_eq!(done.to_upstream, (exchanges * REQUEST) as u64);
            assert_eq!(done.to_client, (exchanges * RESPONSE) as u64);
            allocations
        };
        let allocations = crate::runtime::block_on_driver(uring, relaying);
        client.join().unwrap();
        server.join().unwrap();
        allocations
    }

    /// A relayed keep-alive exchange allocates nothing once the worker has spare buffers: the
    /// buffer each direction takes for its bytes is the one given back by the exchange before
    /// (see [`spare`]). 60 more exchanges cost no more allocations than the first 10.
    #[test]
    fn relayed_exchanges_allocate_nothing_on_the_worker() {
        crate::sys::counting::assert_none_per("exchanges", allocations_relaying);
    }
}
