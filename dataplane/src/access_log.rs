//! One JSON line per connection (per request on HTTP connections) on stdout: who, where, what
//! was detected and matched, bytes, duration, and the outcome or refusal reason.
//!
//! Workers never write to stdout themselves (a slow reader would stall them): each worker
//! serializes its lines into its own buffer (a mutex only the writer thread ever contends, every
//! 50 ms), and one writer thread swaps the buffers out and writes them. A buffer that reaches
//! [`MAX_BUFFERED`] drops further lines and counts them, never waits. Other threads hand lines
//! to a bounded channel. [`flush_all`] writes whatever is left when the process exits.

use std::borrow::Cow;
use std::cell::RefCell;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Lines queued from non-worker threads (workers buffer their own). The queue is allocated
/// whole at start: 65,536 lines were 2 MB of the idle proxy's RSS (S9).
const QUEUE: usize = 4096;
/// Bytes a worker buffers between two writes at most.
pub const MAX_BUFFERED: usize = 8 << 20;
/// How often the writer thread collects the workers' buffers.
const COLLECT: Duration = Duration::from_millis(50);

type Buffer = Arc<Mutex<Vec<u8>>>;

struct Sink {
    tx: crossbeam_channel::Sender<Vec<u8>>,
    rx: crossbeam_channel::Receiver<Vec<u8>>,
    buffers: Mutex<Vec<Buffer>>,
}

static SINK: OnceLock<Sink> = OnceLock::new();

thread_local! {
    static MINE: RefCell<Option<Buffer>> = const { RefCell::new(None) };
}

/// Access-log lines dropped because the writer could not keep up.
pub static DROPPED: AtomicU64 = AtomicU64::new(0);

/// The sink, made by the first caller; `true` for that caller.
fn sink() -> bool {
    let mut made = false;
    SINK.get_or_init(|| {
        made = true;
        let (tx, rx) = crossbeam_channel::bounded::<Vec<u8>>(QUEUE);
        Sink {
            tx,
            rx,
            buffers: Mutex::new(Vec::new()),
        }
    });
    made
}

/// Start the writer thread (once); lines emitted before are written directly.
pub fn start_writer() {
    if !sink() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("access-log".into())
        .spawn(|| {
            let Some(sink) = SINK.get() else { return };
            let mut spare = Vec::new();
            loop {
                let first = sink.rx.recv_timeout(COLLECT).ok();
                write_out(sink, first, &mut spare);
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("no access-log thread ({e}): lines are written at exit");
    }
}

/// Write queued lines and every worker buffer to stdout.
fn write_out(sink: &Sink, first: Option<Vec<u8>>, spare: &mut Vec<u8>) {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if let Some(line) = first {
        let _ = out.write_all(&line);
    }
    while let Ok(more) = sink.rx.try_recv() {
        let _ = out.write_all(&more);
    }
    let buffers: Vec<Buffer> = sink.buffers.lock().map(|b| b.clone()).unwrap_or_default();
    for buffer in buffers {
        if let Ok(mut b) = buffer.lock() {
            std::mem::swap(&mut *b, spare);
        }
        let _ = out.write_all(spare);
        spare.clear();
    }
    let _ = out.flush();
}

/// Give the calling thread a buffer of its own that nothing writes out: the lines it emits are
/// kept (up to [`MAX_BUFFERED`]) and never printed. For tests of a worker's request path.
#[cfg(test)]
pub(crate) fn buffer_without_writer() {
    sink();
    register_worker();
}

/// Give the calling thread (a worker) its own buffer.
pub fn register_worker() {
    let Some(sink) = SINK.get() else { return };
    let buffer: Buffer = Arc::new(Mutex::new(Vec::with_capacity(64 * 1024)));
    if let Ok(mut all) = sink.buffers.lock() {
        all.push(buffer.clone());
    }
    MINE.with(|m| *m.borrow_mut() = Some(buffer));
}

/// Write everything still buffered (at exit).
pub fn flush_all() {
    if let Some(sink) = SINK.get() {
        write_out(sink, None, &mut Vec::new());
    }
}

/// The access-log record of one connection. Lines are written by [`Entry::write_json`]; the
/// `Serialize` form is the reference its test holds it to.
#[derive(Debug, Default, Serialize)]
pub struct Entry<'a> {
    /// Start, milliseconds since the Unix epoch.
    pub start_ms: u64,
    /// Start, for the duration (kept here rather than beside the record: the forwarding task
    /// of every idle connection would carry it).
    #[serde(skip)]
    pub started: Option<Instant>,
    /// Client address.
    #[serde(serialize_with = "address")]
    pub source: Option<SocketAddr>,
    /// Original destination.
    #[serde(serialize_with = "address")]
    pub destination: Option<SocketAddr>,
    /// SNI, when a ClientHello was read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// HTTP Host, when a request head was read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<Cow<'a, str>>,
    /// HTTP method (one line per request on HTTP connections).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<Cow<'a, str>>,
    /// HTTP path and query as the client sent them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<Cow<'a, str>>,
    /// HTTP status answered to the client.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_code: Option<u16>,
    /// Envoy-style response flags (`UF`, `UT`, `NR`, `FI`, `DI`, `UO`, ...), `-` for none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_flags: Option<&'static str>,
    /// The matched cluster (`outbound|port||host`), or `PassthroughCluster`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<Cow<'a, str>>,
    /// The upstream address connected to.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(serialize_with = "address")]
    pub upstream: Option<SocketAddr>,
    /// Bytes client -> upstream.
    pub bytes_sent: u64,
    /// Bytes upstream -> client.
    pub bytes_received: u64,
    /// What detection found (`tls`, `http`, `opaque`), for metrics; not logged.
    #[serde(skip)]
    pub detected: Option<&'static str>,
    /// Not written: an HTTP connection whose requests were logged one by one.
    #[serde(skip)]
    pub silent: bool,
    /// Whether an upstream connection was established (for metrics, not logged).
    #[serde(skip)]
    pub connected: bool,
    /// Duration in milliseconds.
    pub duration_ms: u64,
    /// `forwarded`, `denied`, `local_reply` or `error`.
    pub outcome: &'static str,
    /// Why, for anything but a clean forward.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// An address as the log writes it (`1.2.3.4:5`, `[::1]:5`, or `null`). IPv4 addresses are
/// written digit by digit: through `Display`, the three addresses of each line were about half
/// of the line's encoding and 2-3% of an HTTP request's CPU.
fn address<S: serde::Serializer>(a: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
    match a {
        None => s.serialize_none(),
        Some(SocketAddr::V4(v4)) => {
            let mut text = [0u8; 21]; // 255.255.255.255:65535
            let len = write_v4(v4, &mut text);
            s.serialize_str(std::str::from_utf8(&text[..len]).unwrap_or_default())
        }
        Some(v6) => s.collect_str(v6),
    }
}

/// Write `a` into `out`; the length written. Digit by digit into the fixed array: through
/// `itoa` and a slice copy per part, each address cost five calls to `memcpy` (callgrind).
fn write_v4(a: &std::net::SocketAddrV4, out: &mut [u8; 21]) -> usize {
    let mut len = 0;
    for (i, octet) in a.ip().octets().into_iter().enumerate() {
        if i > 0 {
            out[len] = b'.';
            len += 1;
        }
        len = put_decimal(out, len, u32::from(octet));
    }
    out[len] = b':';
    put_decimal(out, len + 1, u32::from(a.port()))
}

/// Write `n` (at most 65,535) in decimal into `out` at `at`; where it ends.
fn put_decimal(out: &mut [u8; 21], at: usize, n: u32) -> usize {
    let digits = match n {
        0..=9 => 1,
        10..=99 => 2,
        100..=999 => 3,
        1_000..=9_999 => 4,
        _ => 5,
    };
    let mut rest = n;
    for i in (0..digits).rev() {
        out[at + i] = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    at + digits
}

/// A JSON string (quoted and escaped as serde_json escapes it). Most strings need no escape:
/// those are checked eight bytes at a time and copied whole.
fn put_str(out: &mut Vec<u8>, s: &str) {
    if needs_escape(s.as_bytes()) {
        let _ = serde_json::to_writer(&mut *out, s);
    } else {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
}

/// Whether `bytes` holds a control character, a quote or a backslash: what JSON escapes
/// (serde_json escapes nothing else).
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    // Whether any byte of `x` is below `n` (at most 0x80): exact for the word as a whole.
    let any_below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH != 0;
    let any_is = |x: u64, b: u8| any_below(x ^ (ONES * u64::from(b)), 1);
    let odd = |x: u64| any_below(x, 0x20) || any_is(x, b'"') || any_is(x, b'\\');
    let mut words = bytes.chunks_exact(8);
    if words.any(|w| odd(u64::from_ne_bytes(w.try_into().unwrap_or_default()))) {
        return true;
    }
    // The last few bytes as one more word, made up with letters.
    let mut last = [b'a'; 8];
    let rest = words.remainder();
    last[..rest.len()].copy_from_slice(rest);
    odd(u64::from_ne_bytes(last))
}

/// The last IPv4 address written in one of a line's address fields, and its text: a worker's
/// lines repeat the same destination and upstream, so those are copied rather than written.
#[derive(Debug, Clone, Copy)]
struct Rendered {
    addr: Option<std::net::SocketAddrV4>,
    text: [u8; 21],
    len: u8,
}

impl Rendered {
    const NONE: Self = Self {
        addr: None,
        text: [0; 21],
        len: 0,
    };
}

thread_local! {
    /// This thread's last source, destination and upstream.
    static RENDERED: RefCell<[Rendered; 3]> = const { RefCell::new([Rendered::NONE; 3]) };
}

/// An address value: `"1.2.3.4:5"`, `"[::1]:5"` or `null`; `last` is the field's last IPv4
/// address.
fn put_address(out: &mut Vec<u8>, a: Option<SocketAddr>, last: &mut Rendered) {
    match a {
        None => out.extend_from_slice(b"null"),
        Some(SocketAddr::V4(v4)) => {
            if last.addr != Some(v4) {
                last.len = write_v4(&v4, &mut last.text) as u8;
                last.addr = Some(v4);
            }
            out.push(b'"');
            out.extend_from_slice(&last.text[..usize::from(last.len)]);
            out.push(b'"');
        }
        Some(v6) => put_str(out, &v6.to_string()),
    }
}

impl Entry<'_> {
    /// Append the record as one JSON object, byte for byte what `serde_json` makes of its
    /// `Serialize` form (a test holds the two together), with the keys written as they are:
    /// through `serde_json`, which escapes every key again, a request's line took 276 ns
    /// against 108 (criterion `access_log`).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        RENDERED.with_borrow_mut(|[source, destination, upstream]| {
            self.write_json_with(out, source, destination, upstream);
        });
    }

    fn write_json_with(
        &self,
        out: &mut Vec<u8>,
        source: &mut Rendered,
        destination: &mut Rendered,
        upstream: &mut Rendered,
    ) {
        let mut digits = itoa::Buffer::new();
        out.extend_from_slice(b"{\"start_ms\":");
        out.extend_from_slice(digits.format(self.start_ms).as_bytes());
        out.extend_from_slice(b",\"source\":");
        put_address(out, self.source, source);
        out.extend_from_slice(b",\"destination\":");
        put_address(out, self.destination, destination);
        let texts = [
            (&b",\"sni\":"[..], self.sni.as_deref()),
            (b",\"host\":", self.host.as_deref()),
            (b",\"method\":", self.method.as_deref()),
            (b",\"path\":", self.path.as_deref()),
        ];
        for (key, value) in texts {
            if let Some(v) = value {
                out.extend_from_slice(key);
                put_str(out, v);
            }
        }
        if let Some(code) = self.response_code {
            out.extend_from_slice(b",\"response_code\":");
            out.extend_from_slice(digits.format(code).as_bytes());
        }
        if let Some(flags) = self.response_flags {
            out.extend_from_slice(b",\"response_flags\":");
            put_str(out, flags);
        }
        if let Some(cluster) = &self.cluster {
            out.extend_from_slice(b",\"cluster\":");
            put_str(out, cluster);
        }
        if self.upstream.is_some() {
            out.extend_from_slice(b",\"upstream\":");
            put_address(out, self.upstream, upstream);
        }
        out.extend_from_slice(b",\"bytes_sent\":");
        out.extend_from_slice(digits.format(self.bytes_sent).as_bytes());
        out.extend_from_slice(b",\"bytes_received\":");
        out.extend_from_slice(digits.format(self.bytes_received).as_bytes());
        out.extend_from_slice(b",\"duration_ms\":");
        out.extend_from_slice(digits.format(self.duration_ms).as_bytes());
        out.extend_from_slice(b",\"outcome\":");
        put_str(out, self.outcome);
        if let Some(reason) = &self.reason {
            out.extend_from_slice(b",\"reason\":");
            put_str(out, reason);
        }
        out.push(b'}');
    }

    /// A record starting now.
    pub fn start() -> Self {
        let start_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, millis);
        Self {
            start_ms,
            started: Some(Instant::now()),
            outcome: "error",
            ..Self::default()
        }
    }

    /// Time since [`Entry::start`].
    pub fn elapsed(&self) -> Duration {
        self.started.map_or(Duration::ZERO, |s| s.elapsed())
    }

    /// Write the record as one line.
    pub fn emit(&mut self, elapsed: Duration) {
        if self.silent {
            return;
        }
        self.duration_ms = millis(elapsed);
        let written = MINE.with(|m| {
            let mine = m.borrow();
            let buffer = mine.as_ref()?;
            let Ok(mut b) = buffer.lock() else {
                return Some(());
            };
            if b.len() >= MAX_BUFFERED {
                DROPPED.fetch_add(1, Ordering::Relaxed);
            } else {
                self.write_json(&mut b);
                b.push(b'\n');
            }
            Some(())
        });
        if written.is_some() {
            return;
        }
        let mut line = Vec::with_capacity(256);
        self.write_json(&mut line);
        line.push(b'\n');
        match SINK.get() {
            Some(sink) => {
                if sink.tx.try_send(line).is_err() {
                    DROPPED.fetch_add(1, Ordering::Relaxed);
                }
            }
            // No writer (tests of the library): one write of one line.
            None => {
                let _ = std::io::stdout().lock().write_all(&line);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_lines_are_what_serde_json_writes() {
        let v4: SocketAddr = "10.0.0.1:443".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:8080".parse().unwrap();
        let full = Entry {
            start_ms: u64::MAX,
            source: Some(v4),
            destination: Some(v6),
            sni: Some("a.example".into()),
            host: Some("h\"o\\st\u{7}\u{1f}".into()),
            method: Some("GET".into()),
            path: Some("/p?q=\u{e9}\u{1F600}\n\t</script>".into()),
            response_code: Some(503),
            response_flags: Some("UF"),
            cluster: Some("outbound|443||a.example".into()),
            upstream: Some(v4),
            bytes_sent: 1,
            bytes_received: 0,
            duration_ms: 12,
            outcome: "error",
            reason: Some("upstream: \u{0}reset".into()),
            ..Entry::default()
        };
        let sparse = Entry {
            host: Some(String::new().into()),
            upstream: None,
            reason: None,
            ..Entry::default()
        };
        for entry in [full, sparse, Entry::default()] {
            let mut line = Vec::new();
            entry.write_json(&mut line);
            let want = serde_json::to_vec(&entry).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&line),
                String::from_utf8_lossy(&want)
            );
        }
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        let cases = [
            "0.0.0.0:0",
            "1.2.3.4:5",
            "10.20.30.40:80",
            "255.255.255.255:65535",
            "127.0.0.1:15001",
            "[::1]:443",
            "[2001:db8::7]:8080",
        ];
        // Each field remembers its last address: in turn, repeated, and back again, with the
        // upstream one case behind the source.
        let order = cases.iter().chain(cases.iter().rev()).chain(&cases);
        let mut before: SocketAddr = cases[0].parse().unwrap();
        for text in order {
            let a: SocketAddr = text.parse().unwrap();
            let entry = Entry {
                source: Some(a),
                destination: None,
                upstream: Some(before),
                ..Entry::default()
            };
            let line = written(&entry);
            assert_eq!(line["source"], a.to_string(), "{text}");
            assert_eq!(line["upstream"], before.to_string(), "{text}");
            assert!(line["destination"].is_null(), "{text}");
            before = a;
        }
        let none = written(&Entry::default());
        assert!(none.get("upstream").is_none(), "skipped when unknown");
    }

    #[test]
    fn every_character_json_escapes_is_found_wherever_it_is() {
        let odd = ['\u{0}', '\u{1f}', '"', '\\', '\n'];
        let plain = [' ', '\u{7f}', '\u{e9}', '#', ']', '}'];
        for c in odd.into_iter().chain(plain) {
            for at in 0..17 {
                let mut s: String = "a".repeat(17);
                s.insert(at, c);
                let mut out = Vec::new();
                put_str(&mut out, &s);
                assert_eq!(out, serde_json::to_vec(&s).unwrap(), "{c:?} at {at}");
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn any_v4_address_is_written_as_display_writes_it(ip: u32, port: u16) {
            let a = std::net::SocketAddrV4::new(ip.into(), port);
            let mut text = [0u8; 21];
            let len = write_v4(&a, &mut text);
            let want = a.to_string();
            proptest::prop_assert_eq!(&text[..len], want.as_bytes());
        }

        #[test]
        fn any_string_is_written_as_serde_json_writes_it(
            s in "[\\x00-\\x7f]{0,40}|\\PC{0,40}|.{0,40}"
        ) {
            let mut out = b"x".to_vec();
            put_str(&mut out, &s);
            let mut want = b"x".to_vec();
            serde_json::to_writer(&mut want, &s).unwrap();
            proptest::prop_assert_eq!(out, want);
        }
    }

    /// The line a worker writes, parsed back.
    fn written(entry: &Entry<'_>) -> serde_json::Value {
        let mut line = Vec::new();
        entry.write_json(&mut line);
        serde_json::from_slice(&line).unwrap()
    }
}
