//! Forwarding bytes both ways at once, the detection prefix first, half-close propagated, byte
//! counts kept. Two ways to move bytes, chosen with `--forward`:
//! - copy: buffers start at 2 KiB and double (to 256 KiB) while reads fill them, so bulk
//!   streams get large buffers and idle connections stay small;
//! - splice ([`splice`]): socket -> pooled 1 MiB pipe -> socket, no copy through user space.

pub mod splice;

use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Splitable};
use monoio::net::TcpStream;
use std::time::Duration;

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

async fn copy<R: AsyncReadRent, W: AsyncWriteRent>(
    r: &mut R,
    w: &mut W,
    moved: &Moved,
) -> (u64, Option<std::io::Error>) {
    let mut buf = Vec::with_capacity(MIN_BUFFER);
    loop {
        let (res, b) = r.read(buf).await;
        buf = b;
        let n = match res {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => return (moved.get(), Some(e)),
        };
        let full = n == buf.capacity();
        let (res, b) = w.write_all(buf).await;
        buf = b;
        if let Err(e) = res {
            return (moved.get(), Some(e));
        }
        moved.set(moved.get() + n as u64);
        buf.clear();
        if full && buf.capacity() < MAX_BUFFER {
            buf.reserve_exact(buf.capacity() * 2);
        }
    }
    // Half-close: the peer learns this direction is done; the other keeps flowing.
    let _ = w.shutdown().await;
    (moved.get(), None)
}

/// Run both directions. A direction that ends cleanly (EOF, half-close passed on) lets the
/// other finish; one that fails (a reset, a write error) ends both at once, so the other side
/// is closed too instead of waiting forever on a peer that will never hear of the failure.
/// When neither direction moves a byte for `idle`, both end (the TCP idle timeout).
async fn both(
    up: impl Future<Output = (u64, Option<std::io::Error>)>,
    down: impl Future<Output = (u64, Option<std::io::Error>)>,
    moved: (&Moved, &Moved),
    idle: Duration,
) -> Forwarded {
    let mut up = std::pin::pin!(up);
    let mut down = std::pin::pin!(down);
    // The watchdog looks at the byte counts a few times per idle period: nothing on the
    // data path pays for it.
    let watchdog = async {
        let tick = (idle / 4).max(Duration::from_millis(10));
        let mut last = (moved.0.get(), moved.1.get());
        let mut quiet = Duration::ZERO;
        loop {
            monoio::time::sleep(tick).await;
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
    };
    let mut watchdog = std::pin::pin!(watchdog);
    let idle_error = || {
        Some(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "idle timeout",
        ))
    };
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
    client: TcpStream,
    mut upstream: TcpStream,
    prefix: Vec<u8>,
    mode: Mode,
    pipes: &splice::PipePool,
    idle: Duration,
) -> Forwarded {
    // splice(2) honours only the socket's own O_NONBLOCK (SPLICE_F_NONBLOCK covers the pipe):
    // io_uring hands out accepted sockets in blocking mode, and a blocking splice would stall
    // the whole worker. Both sockets must be non-blocking before any splice.
    let nonblocking =
        |s: &TcpStream| crate::sys::with_socket(s, |s| s.set_nonblocking(true)).is_ok();
    let splice_ok = mode == Mode::Splice && nonblocking(&client) && nonblocking(&upstream);
    let pipes = if splice_ok {
        pipes.take().and_then(|up| Ok((up, pipes.take()?))).ok()
    } else {
        None
    };
    if let Some((up_pipe, down_pipe)) = pipes {
        let prefix_len = prefix.len() as u64;
        if !prefix.is_empty() {
            let (res, _) = upstream.write_all(prefix).await;
            if let Err(e) = res {
                return Forwarded {
                    error: Some(e),
                    ..Forwarded::default()
                };
            }
        }
        let (sent, received) = (Moved::new(0), Moved::new(0));
        let up = splice::direction(&client, &upstream, &up_pipe, &sent);
        let down = splice::direction(&upstream, &client, &down_pipe, &received);
        let mut done = both(up, down, (&sent, &received), idle).await;
        done.to_upstream += prefix_len;
        return done;
    }
    copy_both(client, upstream, prefix, idle).await
}

async fn copy_both(
    client: TcpStream,
    upstream: TcpStream,
    prefix: Vec<u8>,
    idle: Duration,
) -> Forwarded {
    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = upstream.into_split();
    let (sent, received) = (Moved::new(0), Moved::new(0));
    let up = async {
        if !prefix.is_empty() {
            let len = prefix.len() as u64;
            let (res, _) = uw.write_all(prefix).await;
            if let Err(e) = res {
                return (0, Some(e));
            }
            sent.set(len);
        }
        copy(&mut cr, &mut uw, &sent).await
    };
    let down = copy(&mut ur, &mut cw, &received);
    both(up, down, (&sent, &received), idle).await
}
