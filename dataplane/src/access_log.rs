//! One JSON line per connection on stdout: who, where, what was detected and matched, bytes,
//! duration, and the outcome or refusal reason.
//!
//! Workers never write to stdout themselves (a slow reader would stall them): they hand each
//! line to a bounded channel drained by one writer thread. When the channel is full, lines are
//! dropped and counted, never waited for.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Lines buffered between the workers and the writer thread.
const QUEUE: usize = 65_536;

static SINK: OnceLock<crossbeam_channel::Sender<Vec<u8>>> = OnceLock::new();

/// Access-log lines dropped because the writer could not keep up.
pub static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Start the writer thread (once); lines emitted before are written directly.
pub fn start_writer() {
    SINK.get_or_init(|| {
        let (tx, rx) = crossbeam_channel::bounded::<Vec<u8>>(QUEUE);
        let spawned = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                let stdout = std::io::stdout();
                for line in &rx {
                    let mut out = stdout.lock();
                    let _ = out.write_all(&line);
                    // Drain what else is queued before flushing: one syscall for a burst.
                    while let Ok(more) = rx.try_recv() {
                        let _ = out.write_all(&more);
                    }
                    let _ = out.flush();
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("no access-log thread ({e}): lines are written by the workers");
        }
        tx
    });
}

/// The access-log record of one connection.
#[derive(Debug, Default, Serialize)]
pub struct Entry {
    /// Start, milliseconds since the Unix epoch.
    pub start_ms: u128,
    /// Client address.
    pub source: Option<SocketAddr>,
    /// Original destination.
    pub destination: Option<SocketAddr>,
    /// SNI, when a ClientHello was read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// HTTP Host, when a request head was read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// HTTP method (one line per request on HTTP connections).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// HTTP path and query as the client sent them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// HTTP status answered to the client.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_code: Option<u16>,
    /// Envoy-style response flags (`UF`, `UT`, `NR`, `FI`, `DI`, `UO`, ...), `-` for none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_flags: Option<&'static str>,
    /// The matched cluster (`outbound|port||host`), or `PassthroughCluster`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// The upstream address connected to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<SocketAddr>,
    /// Bytes client -> upstream.
    pub bytes_sent: u64,
    /// Bytes upstream -> client.
    pub bytes_received: u64,
    /// Not written: an HTTP connection whose requests were logged one by one.
    #[serde(skip)]
    pub silent: bool,
    /// Whether an upstream connection was established (for metrics, not logged).
    #[serde(skip)]
    pub connected: bool,
    /// Duration in milliseconds.
    pub duration_ms: u128,
    /// `forwarded`, `denied`, `local_reply` or `error`.
    pub outcome: &'static str,
    /// Why, for anything but a clean forward.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Entry {
    /// A record starting now.
    pub fn start() -> Self {
        let start_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        Self {
            start_ms,
            outcome: "error",
            ..Self::default()
        }
    }

    /// Write the record as one line.
    pub fn emit(mut self, elapsed: Duration) {
        if self.silent {
            return;
        }
        self.duration_ms = elapsed.as_millis();
        let Ok(mut line) = serde_json::to_vec(&self) else {
            return;
        };
        line.push(b'\n');
        match SINK.get() {
            Some(tx) => {
                if tx.try_send(line).is_err() {
                    DROPPED.fetch_add(1, Ordering::Relaxed);
                }
            }
            // No writer thread (tests of the library): one write of one line.
            None => {
                let _ = std::io::stdout().lock().write_all(&line);
            }
        }
    }
}
