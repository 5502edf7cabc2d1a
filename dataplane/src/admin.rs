//! The admin server on `--admin`, and the Istio-style status port (`GET /healthz/ready` on
//! `--status-port`), each on its own thread (never a worker). Admin: `GET /ready` (200 once
//! every worker serves the current generation, 503 before and while draining), `POST /drain` (see [`crate::drain`]) and `GET /config_dump` (JSON: generation, the last reload's time, trigger,
//! outcome and errors, the objects loaded, the compiled routes). Unknown paths get 404; a
//! malformed request gets 400 and the server carries on.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::snapshot::Published;

/// Prometheus text format, as Istio's `/stats/prometheus` serves.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The outcome of the last load or reload.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReloadStatus {
    /// Milliseconds since the Unix epoch.
    pub time_ms: u128,
    /// What triggered it (`start`, `SIGHUP`, `file change`).
    pub trigger: String,
    /// `published` or `rejected`.
    pub outcome: &'static str,
    /// Every error of a rejected reload.
    pub errors: Vec<String>,
}

impl ReloadStatus {
    /// A status stamped now.
    pub fn now(trigger: &str, outcome: &'static str, errors: Vec<String>) -> Self {
        let time_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        Self {
            time_ms,
            trigger: trigger.to_owned(),
            outcome,
            errors,
        }
    }
}

/// What the admin server reads.
#[derive(Debug)]
pub struct AdminState {
    /// The published table.
    pub published: Arc<Published>,
    /// Written by the control thread.
    pub last_reload: Mutex<ReloadStatus>,
    /// Drain state: readiness, and `POST /drain`.
    pub drain: Arc<crate::drain::Drain>,
    /// The generation each worker has applied.
    pub acks: Arc<crate::snapshot::Acks>,
    /// The workers' counters.
    pub metrics: Arc<crate::metrics::Shared>,
}

#[derive(Serialize)]
struct ConfigDump {
    generation: u64,
    last_reload: ReloadStatus,
    objects: Vec<String>,
    routes: dataplane_config::table::RoutesView,
}

/// Which paths a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// `--admin`: everything.
    Admin,
    /// `--status-port`, like an Istio proxy's: `GET /healthz/ready` only, for Kubernetes probes.
    Status,
    /// `--prometheus-port`, like an Istio proxy's: `GET /stats/prometheus` only.
    Prometheus,
}

impl Surface {
    fn name(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Status => "status",
            Self::Prometheus => "prometheus",
        }
    }
}

/// Serve `surface` on `addr` in a thread of its own. A port that cannot be bound is logged,
/// not fatal.
pub fn spawn(addr: SocketAddr, surface: Surface, state: Arc<AdminState>) {
    let name = surface.name();
    let listener = match TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("{name} server not started: cannot listen on {addr}: {e}");
            return;
        }
    };
    if let Ok(local) = listener.local_addr() {
        tracing::info!(address = %local, "{name} server listening");
    }
    let spawned = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let _ = conn.set_write_timeout(Some(Duration::from_secs(5)));
                serve(conn, surface, &state);
            }
        });
    if let Err(e) = spawned {
        tracing::error!("{name} server not started: {e}");
    }
}

fn ready(conn: &mut TcpStream, state: &AdminState) {
    if state.drain.is_draining() {
        reply(conn, 503, "text/plain", b"draining\n")
    } else if !state.acks.all_applied(state.published.generation()) {
        reply(
            conn,
            503,
            "text/plain",
            b"applying the current generation\n",
        )
    } else {
        reply(conn, 200, "text/plain", b"ready\n")
    }
}

fn serve(mut conn: TcpStream, surface: Surface, state: &AdminState) {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let (method, path) = loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => {
                break (
                    req.method.unwrap_or_default().to_owned(),
                    req.path.unwrap_or_default().to_owned(),
                );
            }
            Ok(httparse::Status::Partial) if buf.len() < 16 * 1024 => {}
            _ => return reply(&mut conn, 400, "text/plain", b"bad request\n"),
        }
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let path = path.split('?').next().unwrap_or_default();
    match (surface, method.as_str(), path) {
        (Surface::Status, "GET", "/healthz/ready") => return ready(&mut conn, state),
        (Surface::Admin | Surface::Prometheus, "GET", "/stats/prometheus") => {
            let body = state
                .metrics
                .encode(state.published.generation(), &state.published.current());
            return reply(&mut conn, 200, PROMETHEUS_TEXT, body.as_bytes());
        }
        (Surface::Status, _, "/healthz/ready") | (Surface::Prometheus, _, "/stats/prometheus") => {
            return reply(&mut conn, 405, "text/plain", b"method not allowed\n");
        }
        (Surface::Status | Surface::Prometheus, _, _) => {
            return reply(&mut conn, 404, "text/plain", b"not found\n");
        }
        (Surface::Admin, _, _) => {}
    }
    match (method.as_str(), path) {
        ("GET", "/ready") => ready(&mut conn, state),
        ("POST", "/drain") => {
            state.drain.request(crate::drain::Trigger::Admin);
            reply(&mut conn, 200, "text/plain", b"draining\n")
        }
        ("GET", "/config_dump") => {
            let table = state.published.current();
            let dump = ConfigDump {
                generation: state.published.generation(),
                last_reload: state
                    .last_reload
                    .lock()
                    .map(|s| s.clone())
                    .unwrap_or_default(),
                objects: table.objects.iter().map(ToString::to_string).collect(),
                routes: table.view(),
            };
            match serde_json::to_vec_pretty(&dump) {
                Ok(body) => reply(&mut conn, 200, "application/json", &body),
                Err(_) => reply(&mut conn, 500, "text/plain", b"cannot encode\n"),
            }
        }
        (_, "/ready" | "/config_dump" | "/drain" | "/stats/prometheus") => {
            reply(&mut conn, 405, "text/plain", b"method not allowed\n")
        }
        _ => reply(&mut conn, 404, "text/plain", b"not found\n"),
    }
}

fn reply(conn: &mut TcpStream, status: u16, content_type: &str, body: &[u8]) {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(body);
}
