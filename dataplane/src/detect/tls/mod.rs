//! TLS ClientHello parsing for SNI routing: pure, sans-io, bounded.
//!
//! [`parse`] looks at the bytes a client sent first and answers with one of three states
//! (linkerd's detection contract): a complete ClientHello (`Hello`), "this is not TLS"
//! (`NotTls`), or "need more bytes" (`NeedMore`); plus `Invalid` for a TLS handshake that is
//! malformed and `TooLarge` for one over [`MAX_CLIENT_HELLO`]. The ClientHello may span several
//! TCP segments (call again with more bytes) and several TLS records (reassembled). GREASE
//! values, ECH outer hellos and large post-quantum key shares need no special handling: every
//! extension is skipped by its length, only `server_name` (0) and ALPN (16) are read.

use std::fmt;

/// Largest ClientHello accepted (Decisions 9; Envoy's tls_inspector maximum).
pub const MAX_CLIENT_HELLO: usize = 64 * 1024;

/// Longest server name kept (a DNS name is at most 255 bytes).
const MAX_SERVER_NAME: usize = 255;

const RECORD_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const RECORD_HEADER: usize = 5;
const MAX_RECORD: usize = 16_384 + 2048;
const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;

/// The outcome of looking at a connection's first bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // the hello stays on the stack: boxing it would allocate per connection
pub enum Parse {
    /// A complete ClientHello.
    Hello(ClientHello),
    /// Not a TLS handshake.
    NotTls,
    /// A TLS handshake so far; more bytes are needed.
    NeedMore,
    /// A TLS handshake that is malformed.
    Invalid(&'static str),
    /// A ClientHello larger than [`MAX_CLIENT_HELLO`].
    TooLarge,
}

/// What routing needs from a ClientHello.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientHello {
    server_name: [u8; MAX_SERVER_NAME],
    server_name_len: u8,
    has_server_name: bool,
    /// ALPN offered `h2`.
    pub alpn_h2: bool,
    /// ALPN offered `http/1.1`.
    pub alpn_http11: bool,
    /// Offset just after the ClientHello's last byte in the parsed buffer (record headers
    /// included); never more than the buffer's length.
    pub consumed: usize,
}

impl ClientHello {
    /// The server name, lower-cased, if the hello had one.
    pub fn server_name(&self) -> Option<&[u8]> {
        self.has_server_name
            .then(|| &self.server_name[..usize::from(self.server_name_len)])
    }
}

impl fmt::Debug for ClientHello {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientHello")
            .field(
                "server_name",
                &self.server_name().map(String::from_utf8_lossy),
            )
            .field("alpn_h2", &self.alpn_h2)
            .field("alpn_http11", &self.alpn_http11)
            .field("consumed", &self.consumed)
            .finish()
    }
}

/// A byte reader over one complete handshake message; every read is bounds-checked.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    /// A vector with a length prefix of `len_bytes` bytes.
    fn vec(&mut self, len_bytes: usize) -> Option<Self> {
        let len = match len_bytes {
            1 => usize::from(self.u8()?),
            _ => usize::from(self.u16()?),
        };
        self.take(len).map(|buf| Reader { buf })
    }
}

/// Look at the first bytes of a connection.
pub fn parse(buf: &[u8]) -> Parse {
    // First record header: content type, legacy version (major 3), length.
    let Some(&content_type) = buf.first() else {
        return Parse::NeedMore;
    };
    if content_type != RECORD_HANDSHAKE || buf.get(1).is_some_and(|&major| major != 3) {
        return Parse::NotTls;
    }
    if let Some(len) = record_len(buf, 0)
        && len > MAX_RECORD
    {
        return Parse::NotTls;
    }
    // Fast path: the whole ClientHello inside the first record, parsed in place.
    if let (Some(len), Some(hs)) = (record_len(buf, 0), buf.get(RECORD_HEADER..))
        && len >= 4
        && hs.len() >= 4
    {
        let message_len =
            4 + (usize::from(hs[1]) << 16 | usize::from(hs[2]) << 8 | usize::from(hs[3]));
        if let Some(early) = check_header(hs[0], message_len) {
            return early;
        }
        if len >= message_len {
            return match hs.get(4..message_len) {
                Some(body) => hello(body, RECORD_HEADER + message_len),
                None => Parse::NeedMore,
            };
        }
    }
    reassemble(buf)
}

/// Length of the record whose header starts at `at`, if the header is there.
fn record_len(buf: &[u8], at: usize) -> Option<usize> {
    Some(usize::from(u16::from_be_bytes([
        *buf.get(at + 3)?,
        *buf.get(at + 4)?,
    ])))
}

/// Handshake type and message size checks, once the 4-byte handshake header is known.
fn check_header(kind: u8, message_len: usize) -> Option<Parse> {
    if kind != HANDSHAKE_CLIENT_HELLO {
        return Some(Parse::NotTls);
    }
    if message_len > MAX_CLIENT_HELLO {
        return Some(Parse::TooLarge);
    }
    None
}

/// Slow path: the ClientHello (or even its 4-byte header) spans several handshake records;
/// copy the fragments together.
fn reassemble(buf: &[u8]) -> Parse {
    let mut message: Vec<u8> = Vec::new();
    let mut message_len: Option<usize> = None;
    let mut at = 0;
    loop {
        if let Some(total) = message_len
            && message.len() >= total
        {
            message.truncate(total);
            return hello(&message[4..], at);
        }
        let Some(header) = buf.get(at..at + RECORD_HEADER) else {
            return Parse::NeedMore;
        };
        if header[0] != RECORD_HANDSHAKE || header[1] != 3 {
            return Parse::Invalid("ClientHello interleaved with another record type");
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 || len > MAX_RECORD {
            return Parse::Invalid("bad handshake record length");
        }
        let fragment_start = at + RECORD_HEADER;
        let available = &buf[fragment_start..(fragment_start + len).min(buf.len())];
        // Take only what the message still needs from this record.
        let wanted = message_len.map_or(usize::MAX, |total| total - message.len());
        let take = available.len().min(wanted);
        message.extend_from_slice(&available[..take]);
        at = fragment_start + take;
        if message_len.is_none() && message.len() >= 4 {
            let total = 4
                + (usize::from(message[1]) << 16
                    | usize::from(message[2]) << 8
                    | usize::from(message[3]));
            if let Some(early) = check_header(message[0], total) {
                return early;
            }
            message_len = Some(total);
            if message.len() >= total {
                // `at` must point just after the message's last byte.
                at -= message.len() - total;
                continue;
            }
        }
        if message_len.is_some_and(|total| message.len() >= total) {
            continue;
        }
        if available.len() < len {
            return Parse::NeedMore;
        }
        at = fragment_start + len;
    }
}

/// Parse a complete ClientHello body.
fn hello(body: &[u8], consumed: usize) -> Parse {
    let mut out = ClientHello {
        server_name: [0; MAX_SERVER_NAME],
        server_name_len: 0,
        has_server_name: false,
        alpn_h2: false,
        alpn_http11: false,
        consumed,
    };
    match hello_fields(&mut Reader { buf: body }, &mut out) {
        Ok(()) => Parse::Hello(out),
        Err(why) => Parse::Invalid(why),
    }
}

fn hello_fields(r: &mut Reader<'_>, out: &mut ClientHello) -> Result<(), &'static str> {
    let version = r.u16().ok_or("truncated version")?;
    if version >> 8 != 3 {
        return Err("not a TLS 1.x ClientHello");
    }
    r.take(32).ok_or("truncated random")?;
    let session_id = r.vec(1).ok_or("truncated session id")?;
    if session_id.buf.len() > 32 {
        return Err("session id longer than 32 bytes");
    }
    let suites = r.vec(2).ok_or("truncated cipher suites")?;
    if suites.buf.is_empty() || suites.buf.len() % 2 != 0 {
        return Err("bad cipher suites");
    }
    let compression = r.vec(1).ok_or("truncated compression methods")?;
    if compression.buf.is_empty() {
        return Err("no compression methods");
    }
    if r.buf.is_empty() {
        // SSLv3-style hello without extensions: no SNI.
        return Ok(());
    }
    let mut extensions = r.vec(2).ok_or("truncated extensions")?;
    if !r.buf.is_empty() {
        return Err("trailing bytes after extensions");
    }
    let mut seen_sni = false;
    while !extensions.buf.is_empty() {
        let kind = extensions.u16().ok_or("truncated extension")?;
        let mut data = extensions.vec(2).ok_or("truncated extension")?;
        match kind {
            EXT_SERVER_NAME => {
                if seen_sni {
                    return Err("duplicate server_name extension");
                }
                seen_sni = true;
                server_name(&mut data, out)?;
            }
            EXT_ALPN => {
                let mut list = data.vec(2).ok_or("truncated ALPN")?;
                while !list.buf.is_empty() {
                    let proto = list.vec(1).ok_or("truncated ALPN protocol")?;
                    match proto.buf {
                        b"h2" => out.alpn_h2 = true,
                        b"http/1.1" => out.alpn_http11 = true,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// The `server_name` extension: the first `host_name` entry, checked and lower-cased.
fn server_name(data: &mut Reader<'_>, out: &mut ClientHello) -> Result<(), &'static str> {
    let mut list = data.vec(2).ok_or("truncated server_name")?;
    while !list.buf.is_empty() {
        let name_type = list.u8().ok_or("truncated server_name")?;
        let name = list.vec(2).ok_or("truncated server_name")?.buf;
        if name_type != 0 || out.has_server_name {
            continue;
        }
        // RFC 6066: a host name, ASCII, no trailing NUL; BoringSSL (Envoy) rejects these too.
        if name.is_empty()
            || name.len() > MAX_SERVER_NAME
            || !name.iter().all(|b| b.is_ascii_graphic())
        {
            return Err("malformed server name");
        }
        out.server_name[..name.len()].copy_from_slice(name);
        out.server_name[..name.len()].make_ascii_lowercase();
        out.server_name_len = name.len() as u8;
        out.has_server_name = true;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
