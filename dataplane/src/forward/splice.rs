//! Zero-copy forwarding: socket -> pipe -> socket with splice(2), driven by readiness on the
//! worker (`SPLICE_F_NONBLOCK` after a readiness wait, as HAProxy does) so no io-wq kernel
//! thread is involved. Pipes are large (1 MiB: small pipes make splice slower than copying),
//! pooled per worker, and reused only when empty.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::Shutdown;
use std::os::fd::AsRawFd;

use monoio::net::TcpStream;

use crate::sys;

/// Pipe size asked for.
pub const PIPE_SIZE: usize = 1 << 20;
/// Idle pipes kept per worker.
const MAX_IDLE: usize = 64;

/// A worker's idle pipes.
#[derive(Debug, Default)]
pub struct PipePool {
    free: RefCell<Vec<(sys::PipeFds, usize)>>,
}

/// A pipe on loan from the pool; returned on drop if it is empty.
#[derive(Debug)]
pub struct Pipe<'p> {
    fds: Option<(sys::PipeFds, usize)>,
    pool: &'p PipePool,
    /// Bytes in the pipe.
    held: Cell<usize>,
}

impl PipePool {
    /// A pipe from the pool, or a new one.
    pub fn take(&self) -> io::Result<Pipe<'_>> {
        let fds = match self.free.borrow_mut().pop() {
            Some(p) => p,
            None => sys::pipe(PIPE_SIZE)?,
        };
        Ok(Pipe {
            fds: Some(fds),
            pool: self,
            held: Cell::new(0),
        })
    }
}

impl Drop for Pipe<'_> {
    fn drop(&mut self) {
        // A pipe with bytes left in it (an error mid-transfer) is closed, never reused.
        if let Some(p) = self.fds.take() {
            let mut free = self.pool.free.borrow_mut();
            if self.held.get() == 0 && free.len() < MAX_IDLE {
                free.push(p);
            }
        }
    }
}

impl Pipe<'_> {
    fn ends(&self) -> (i32, i32, usize) {
        match &self.fds {
            Some((p, size)) => (p.read.as_raw_fd(), p.write.as_raw_fd(), *size),
            None => (-1, -1, 0),
        }
    }
}

/// Move bytes `from` -> `to` until EOF, then half-close `to`.
pub async fn direction(
    from: &TcpStream,
    to: &TcpStream,
    pipe: &Pipe<'_>,
    moved: &Cell<u64>,
) -> (u64, Option<io::Error>) {
    let (pipe_read, pipe_write, size) = pipe.ends();
    let mut total = 0u64;
    loop {
        let n = loop {
            match sys::splice(from.as_raw_fd(), pipe_write, size) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let Err(e) = from.readable(false).await {
                        return (total, Some(e));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return (total, Some(e)),
            }
        };
        if n == 0 {
            break;
        }
        pipe.held.set(n);
        let mut left = n;
        while left > 0 {
            match sys::splice(pipe_read, to.as_raw_fd(), left) {
                Ok(m) => left -= m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if let Err(e) = to.writable(false).await {
                        return (total, Some(e));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return (total, Some(e)),
            }
            pipe.held.set(left);
        }
        total += n as u64;
        moved.set(total);
    }
    let _ = sys::with_socket(to, |s| s.shutdown(Shutdown::Write));
    (total, None)
}
