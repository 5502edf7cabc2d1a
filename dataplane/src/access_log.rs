//! One JSON line per connection on stdout: who, where, what was detected and matched, bytes,
//! duration, and the outcome or refusal reason.

use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

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
        self.duration_ms = elapsed.as_millis();
        if let Ok(mut line) = serde_json::to_vec(&self) {
            line.push(b'\n');
            // One write of one line: lines from several workers never interleave. A closed
            // stdout is not worth failing a connection for.
            let _ = std::io::stdout().lock().write_all(&line);
        }
    }
}
