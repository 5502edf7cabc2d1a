//! The I/O the HTTP router needs, kept small: a read buffer over a stream ([`Buffered`]),
//! upstream streams plain or TLS ([`UpstreamIo`]), and body relaying by framing with bounded
//! memory ([`relay_body`]): bytes go from the reader's buffer to the writer as they arrive,
//! so a 100 MB body holds one buffer, and a slow writer stops the reads (backpressure).

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

use super::chunked::Tracker;
use crate::coarse_timer::CoarseTimer;

/// First read buffer of a connection (a request or response head fits).
pub const FIRST_BUFFER: usize = 8 * 1024;
/// Read buffer while streaming a body.
pub const BODY_BUFFER: usize = 64 * 1024;
/// Head and first body bytes are written together when the body bytes are at most this.
const COALESCE: usize = 16 * 1024;

/// Room to leave after a head for the body bytes [`relay_body`] will send with it, when
/// `buffered` body bytes are already read: the head's buffer is then allocated once.
pub fn coalesced(buffered: usize) -> usize {
    buffered.min(COALESCE)
}

/// A stream with a read buffer: bytes read but not yet consumed stay in it.
pub struct Buffered<S> {
    /// The stream.
    pub io: S,
    buf: Vec<u8>,
    start: usize,
    /// The buffer of the last head relayed from this stream to the other side, cleared, for
    /// the next one (see [`Buffered::take_spare`]).
    spare: Vec<u8>,
}

impl<S: AsyncReadRent> Buffered<S> {
    /// Wrap `io`; `initial` holds bytes already read from it.
    pub fn new(io: S, initial: Vec<u8>) -> Self {
        let buf = if initial.capacity() == 0 {
            Vec::with_capacity(FIRST_BUFFER)
        } else {
            initial
        };
        Self {
            io,
            buf,
            start: 0,
            spare: Vec::new(),
        }
    }

    /// An empty buffer to render the next head written from this stream's exchange to the
    /// other side; [`relay_body`] gives it back once written, so the heads of a keep-alive
    /// connection reuse one buffer.
    pub fn take_spare(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.spare)
    }

    /// Keep `buf` for [`Buffered::take_spare`], unless it grew past [`FIRST_BUFFER`] (a head
    /// sent with a large body): an idle connection keeps no more than that.
    fn keep_spare(&mut self, mut buf: Vec<u8>) {
        if buf.capacity() <= FIRST_BUFFER {
            buf.clear();
            self.spare = buf;
        }
    }

    /// Unconsumed bytes.
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Mark `n` bytes consumed.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.buf.len());
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
    }

    /// Take the unconsumed bytes out.
    pub fn take_data(&mut self) -> Vec<u8> {
        let rest = self.buf.split_off(self.start);
        self.buf.clear();
        self.start = 0;
        rest
    }

    /// Give back a large buffer once it is empty (an idle keep-alive connection keeps
    /// [`FIRST_BUFFER`]).
    pub fn shrink(&mut self) {
        if self.data().is_empty() && self.buf.capacity() > FIRST_BUFFER {
            self.buf = Vec::with_capacity(FIRST_BUFFER);
            self.start = 0;
        }
    }

    /// Read more bytes (growing the buffer up to `max`). `Ok(0)`: end of stream.
    pub async fn fill(&mut self, max: usize) -> io::Result<usize> {
        if self.start > 0 && (self.start == self.buf.len() || self.start >= self.buf.capacity() / 2)
        {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        if self.buf.len() == self.buf.capacity() {
            let grow = self.buf.capacity().max(FIRST_BUFFER);
            let room = max.saturating_sub(self.buf.len()).max(1);
            self.buf.reserve(grow.min(room));
        }
        let len = self.buf.len();
        let buf = std::mem::take(&mut self.buf);
        let (res, slice) = self.io.read(buf.slice_mut(len..)).await;
        self.buf = slice.into_inner();
        res
    }

    /// Write `n` unconsumed bytes to `dst` (without copying them) and consume them.
    async fn forward<W: AsyncWriteRent>(&mut self, dst: &mut W, n: usize) -> io::Result<()> {
        let (start, buf) = (self.start, std::mem::take(&mut self.buf));
        let (res, slice) = dst.write_all(buf.slice(start..start + n)).await;
        self.buf = slice.into_inner();
        res?;
        self.consume(n);
        Ok(())
    }
}

/// How a message body is delimited, for relaying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// No body.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked (trailers included).
    Chunked,
    /// Until the reader's end of stream.
    UntilClose,
}

/// Why a body could not be relayed.
#[derive(Debug)]
pub enum BodyError {
    /// Reading failed or the stream ended early.
    Read(io::Error),
    /// Writing failed.
    Write(io::Error),
    /// The chunked framing was malformed.
    Malformed(&'static str),
    /// Neither side moved a byte for the stream idle timeout.
    Idle,
}

impl BodyError {
    /// A short reason for logs.
    pub fn reason(&self) -> String {
        match self {
            Self::Read(e) => format!("read: {e}"),
            Self::Write(e) => format!("write: {e}"),
            Self::Malformed(why) => format!("malformed chunked body: {why}"),
            Self::Idle => "stream idle timeout".into(),
        }
    }
}

/// What [`relay_body`] keeps of a body for a retry.
pub struct Replay {
    /// The bytes kept, if the body fitted.
    pub bytes: Option<Vec<u8>>,
    limit: usize,
}

impl Replay {
    /// Keep at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            bytes: Some(Vec::new()),
            limit,
        }
    }

    /// Keep nothing.
    pub fn none() -> Self {
        Self {
            bytes: None,
            limit: 0,
        }
    }

    fn keep(&mut self, chunk: &[u8]) {
        if let Some(b) = &mut self.bytes {
            if b.len() + chunk.len() > self.limit {
                self.bytes = None;
            } else {
                b.extend_from_slice(chunk);
            }
        }
    }
}

/// Write `head`, then relay a body framed as `body` from `src` to `dst`. Body bytes already
/// buffered are written with the head in one call when small. Each read and write must make
/// progress within `idle` (Envoy's stream idle timeout): a side that stops reading or sending
/// ends the exchange instead of holding it forever. Returns the body bytes relayed.
pub async fn relay_body<R: AsyncReadRent, W: AsyncWriteRent>(
    head: Vec<u8>,
    src: &mut Buffered<R>,
    dst: &mut W,
    body: Body,
    replay: &mut Replay,
    timer: &CoarseTimer,
    idle: std::time::Duration,
) -> Result<u64, BodyError> {
    let mut left = match body {
        Body::Length(n) => n,
        _ => u64::MAX,
    };
    let mut tracker = Tracker::new();
    let mut done = body == Body::None;
    let mut relayed = 0u64;
    // How many buffered bytes belong to the body, and whether it ends with them.
    let mut take = |data: &[u8], left: &mut u64| -> Result<(usize, bool), BodyError> {
        match body {
            Body::None => Ok((0, true)),
            Body::Length(_) => {
                let n = (*left).min(data.len() as u64) as usize;
                *left -= n as u64;
                Ok((n, *left == 0))
            }
            Body::Chunked => {
                let n = tracker.feed(data).map_err(|m| BodyError::Malformed(m.0))?;
                Ok((n, tracker.done()))
            }
            Body::UntilClose => Ok((data.len(), false)),
        }
    };
    // The head, with the body bytes already read when few.
    let mut head = head;
    if !done && !src.data().is_empty() {
        let data = src.data();
        let room = COALESCE.min(data.len());
        let (n, end) = take(&data[..room], &mut left)?;
        head.extend_from_slice(&data[..n]);
        replay.keep(&data[..n]);
        relayed += n as u64;
        src.consume(n);
        done = end;
    }
    let (res, head) = timer
        .timeout(idle, dst.write_all(head))
        .await
        .map_err(|_| BodyError::Idle)?;
    src.keep_spare(head);
    res.map_err(BodyError::Write)?;
    while !done {
        if src.data().is_empty() {
            match timer
                .timeout(idle, src.fill(BODY_BUFFER))
                .await
                .map_err(|_| BodyError::Idle)?
            {
                Ok(0) if body == Body::UntilClose => break,
                Ok(0) => {
                    return Err(BodyError::Read(io::ErrorKind::UnexpectedEof.into()));
                }
                Ok(_) => {}
                Err(e) => return Err(BodyError::Read(e)),
            }
        }
        let (n, end) = take(src.data(), &mut left)?;
        replay.keep(&src.data()[..n]);
        relayed += n as u64;
        timer
            .timeout(idle, src.forward(dst, n))
            .await
            .map_err(|_| BodyError::Idle)?
            .map_err(BodyError::Write)?;
        done = end;
    }
    dst.flush().await.map_err(BodyError::Write)?;
    Ok(relayed)
}

/// An upstream connection, plaintext or TLS-originated.
pub enum UpstreamIo {
    /// Plaintext.
    Plain(TcpStream),
    /// TLS (DestinationRule SIMPLE or MUTUAL); the descriptor of its TCP socket kept for
    /// liveness checks.
    Tls(Box<monoio_rustls::ClientTlsStream<TcpStream>>, RawFd),
}

impl UpstreamIo {
    /// The TCP socket's descriptor.
    pub fn raw_fd(&self) -> RawFd {
        match self {
            Self::Plain(s) => s.as_raw_fd(),
            Self::Tls(_, fd) => *fd,
        }
    }
}

impl AsyncReadRent for UpstreamIo {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> monoio::BufResult<usize, T> {
        match self {
            Self::Plain(s) => s.read(buf).await,
            Self::Tls(s, _) => s.read(buf).await,
        }
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> monoio::BufResult<usize, T> {
        match self {
            Self::Plain(s) => s.readv(buf).await,
            Self::Tls(s, _) => s.readv(buf).await,
        }
    }
}

impl AsyncWriteRent for UpstreamIo {
    async fn write<T: IoBuf>(&mut self, buf: T) -> monoio::BufResult<usize, T> {
        match self {
            Self::Plain(s) => s.write(buf).await,
            Self::Tls(s, _) => s.write(buf).await,
        }
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> monoio::BufResult<usize, T> {
        match self {
            Self::Plain(s) => s.writev(buf).await,
            Self::Tls(s, _) => s.writev(buf).await,
        }
    }

    async fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(s) => s.flush().await,
            Self::Tls(s, _) => s.flush().await,
        }
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(s) => s.shutdown().await,
            Self::Tls(s, _) => s.shutdown().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    /// Relay `input` framed as `body` through a real socket pair; returns what the writer side
    /// received, what stayed buffered for the next message, and the result.
    fn relay(input: &[u8], body: Body, keep: usize) -> (Vec<u8>, Vec<u8>, Option<Vec<u8>>, bool) {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        let input = input.to_vec();
        rt.block_on(async move {
            let src_l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let dst_l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let (src_addr, dst_addr) = (src_l.local_addr().unwrap(), dst_l.local_addr().unwrap());
            let feeder = std::thread::spawn(move || {
                let (mut s, _) = src_l.accept().unwrap();
                s.write_all(&input).unwrap();
                // Keep the connection open: framing, not EOF, must end the body.
                std::thread::sleep(std::time::Duration::from_millis(300));
            });
            let sink = std::thread::spawn(move || {
                let (mut s, _) = dst_l.accept().unwrap();
                let mut got = Vec::new();
                let _ = s.read_to_end(&mut got);
                got
            });
            let src = TcpStream::connect(src_addr).await.unwrap();
            let mut dst = TcpStream::connect(dst_addr).await.unwrap();
            let mut src = Buffered::new(src, Vec::new());
            // Wait until every input byte is buffered, as a pipelined client would send them.
            monoio::time::sleep(std::time::Duration::from_millis(100)).await;
            let mut replay = Replay::new(keep);
            let idle = std::time::Duration::from_secs(5);
            let ok = relay_body(
                b"HEAD\r\n".to_vec(),
                &mut src,
                &mut dst,
                body,
                &mut replay,
                &CoarseTimer::default(),
                idle,
            )
            .await
            .is_ok();
            drop(dst);
            let rest = src.data().to_vec();
            feeder.join().unwrap();
            (sink.join().unwrap(), rest, replay.bytes, ok)
        })
    }

    #[test]
    fn chunked_body_with_trailers_ends_at_its_framing() {
        let body = b"5\r\nhello\r\n0\r\nX-Checksum: 42\r\n\r\n";
        let next = b"GET /next HTTP/1.1\r\n\r\n";
        let input = [&body[..], &next[..]].concat();
        let (out, rest, kept, ok) = relay(&input, Body::Chunked, 1024);
        assert!(ok);
        assert_eq!(out, [&b"HEAD\r\n"[..], &body[..]].concat(), "trailers kept");
        assert_eq!(
            rest, next,
            "the pipelined request stays for the next exchange"
        );
        assert_eq!(kept.as_deref(), Some(&body[..]));
    }

    #[test]
    fn length_body_and_replay_limit() {
        let (out, rest, kept, ok) = relay(b"abcdefXYZ", Body::Length(6), 4);
        assert!(ok);
        assert_eq!(out, b"HEAD\r\nabcdef");
        assert_eq!(rest, b"XYZ");
        assert_eq!(kept, None, "a body over the replay limit is not kept");
    }

    #[test]
    fn malformed_chunk_size_is_an_error() {
        let (_, _, _, ok) = relay(b"zz\r\nabc\r\n0\r\n\r\n", Body::Chunked, 0);
        assert!(!ok);
    }
}
