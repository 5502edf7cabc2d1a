//! The HTTP/1.1 router's connection loop, as Envoy's HTTP connection manager serves an Istio
//! sidecar's outbound port: requests are read one at a time (pipelined requests wait in the
//! buffer and are answered in order), each routed by its own Host (spec §5.2) and planned
//! ([`super::plan`]), then forwarded over a pooled keep-alive upstream connection, plain or
//! TLS-originated (spec §10.2), with the route's timeout, retries and faults. Bodies stream
//! both ways. One access-log line per request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane_config::table::{Cluster, ClusterId, HostRoute, HttpRouteConfig};
use monoio::io::{AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use rustls::pki_types::ServerName;

use super::head::{self, Framing, RequestHead};
use super::io::{Body, BodyError, Buffered, Replay, UpstreamIo};
use super::matching::Request;
use super::plan::{self, Forward, LocalReply, Plan};
use super::pool::{self, KeyRef, Pooled};
use super::render::{self, Outbound};
use super::response::{self, BodyFraming, ResponseHead};
use crate::access_log::Entry;
use crate::coarse_timer::CoarseTimer;
use crate::conn::Worker;
use crate::origination::{Origination, Sni};
use crate::runtime::Capture;
use crate::snapshot::Snapshot;
use crate::upstream::{self, Outcome, UpstreamError};

/// How long a keep-alive client connection may sit between requests (Envoy's HTTP connection
/// manager default idle timeout).
const CLIENT_IDLE: Duration = Duration::from_secs(3600);
/// Request bodies up to this size are kept so a retry can resend them.
const REPLAY_LIMIT: usize = 64 * 1024;
/// Retry back-off is capped at this many times the base interval (Envoy: 10x).
const BACKOFF_CAP: u32 = 10;
/// How often a request pending on a full connection pool looks for a free connection.
const PENDING_POLL: Duration = Duration::from_millis(2);

/// One client connection on an HTTP route table.
pub struct Conn<'a> {
    /// The worker's state.
    pub worker: &'a Worker,
    /// The configuration the connection started with.
    pub snapshot: &'a Snapshot,
    /// The port's route table.
    pub config: &'a HttpRouteConfig,
    /// The original destination.
    pub dst: SocketAddr,
    /// The client.
    pub source: Option<SocketAddr>,
}

/// What happens to the client connection after an exchange.
enum Next {
    KeepAlive,
    Close,
    /// The upstream switched protocols: tunnel bytes both ways.
    Tunnel(TcpStream, Vec<u8>),
}

/// Serve requests on `client` until it closes, errs, or asks to close. `initial` holds the
/// bytes read during detection. Returns the number of requests answered.
pub async fn serve(cx: &Conn<'_>, client: TcpStream, initial: Vec<u8>) -> u64 {
    let mut client = Buffered::new(client, initial);
    let mut served = 0;
    // Every request's head is parsed into this one, reusing its storage.
    let mut head = RequestHead::default();
    loop {
        let read = read_head(
            &mut client,
            &mut head,
            &cx.worker.timer,
            cx.worker.settings.detect_timeout,
        )
        .await;
        // A request's record starts when its head has arrived: the wait for it on a
        // keep-alive connection is the client's idle time, not the request's duration.
        let mut log = Entry::start();
        log.source = cx.source;
        log.destination = Some(cx.dst);
        match read {
            HeadRead::Head => {}
            HeadRead::Closed => break,
            HeadRead::Refused(status, why) => {
                let reply = LocalReply::new(status, "", "-", why);
                let _ = answer(&mut client.io, &mut log, &reply, true).await;
                log.reason = Some(format!("{status}: {why}"));
                finish(cx, &mut log);
                served += 1;
                break;
            }
        }
        client.consume(head.head_len);
        log.method = Some(head.method().into());
        log.path = Some(head.target().into());
        log.host = Some(head.authority().into());
        let next = exchange(cx, &mut client, &head, &mut log).await;
        finish(cx, &mut log);
        served += 1;
        match next {
            Next::KeepAlive if !head.close => client.shrink(),
            Next::KeepAlive | Next::Close => break,
            Next::Tunnel(upstream, from_upstream) => {
                tunnel(cx, client, upstream, from_upstream).await;
                break;
            }
        }
    }
    served
}

fn finish(cx: &Conn<'_>, log: &mut Entry<'_>) {
    let elapsed = log.elapsed();
    cx.worker.metrics.request(log, elapsed);
    log.emit(elapsed);
}

enum HeadRead {
    /// The head is parsed into the caller's [`RequestHead`].
    Head,
    Closed,
    Refused(u16, &'static str),
}

/// Read the next request head: the first byte may take [`CLIENT_IDLE`], the whole head must
/// arrive within `head_timeout` of its first byte (a client sending its head a byte at a time
/// is cut there).
async fn read_head(
    client: &mut Buffered<TcpStream>,
    head: &mut RequestHead,
    timer: &CoarseTimer,
    head_timeout: Duration,
) -> HeadRead {
    let mut deadline: Option<Instant> = None;
    loop {
        if !client.data().is_empty() {
            match head.parse_into(client.data()) {
                Ok(true) => return HeadRead::Head,
                Ok(false) => {}
                Err(head::Reject::BadRequest(why)) => return HeadRead::Refused(400, why),
                Err(head::Reject::TooLarge) => {
                    return HeadRead::Refused(431, "request head too large");
                }
                Err(head::Reject::NotImplemented(why)) => return HeadRead::Refused(501, why),
            }
        }
        let wait = if client.data().is_empty() {
            CLIENT_IDLE
        } else {
            let d = *deadline.get_or_insert_with(|| Instant::now() + head_timeout);
            d.saturating_duration_since(Instant::now())
        };
        match timer.timeout(wait, client.fill(head::MAX_HEAD + 1)).await {
            Ok(Ok(n)) if n > 0 => {}
            Err(_) if !client.data().is_empty() => {
                return HeadRead::Refused(408, "request head timeout");
            }
            _ => return HeadRead::Closed,
        }
    }
}

/// Write a local reply. `Err`: the client is gone.
async fn answer(
    client: &mut TcpStream,
    log: &mut Entry<'_>,
    reply: &LocalReply,
    close: bool,
) -> std::io::Result<()> {
    log.outcome = "local_reply";
    log.response_code = Some(reply.status);
    log.response_flags = Some(reply.flag);
    if log.reason.is_none() {
        log.reason = Some(reply.reason.to_owned());
    }
    let (res, _) = client.write_all(render::local(reply, close)).await;
    res.map(|_| ())
}

/// Reply locally to a request whose body has not been read: the connection closes after the
/// reply unless there is no body.
async fn reply_unread(
    client: &mut Buffered<TcpStream>,
    head: &RequestHead,
    log: &mut Entry<'_>,
    reply: LocalReply,
) -> Next {
    let close = head.framing != Framing::None || head.close;
    match answer(&mut client.io, log, &reply, close).await {
        Ok(()) if !close => Next::KeepAlive,
        _ => Next::Close,
    }
}

/// Where a forwarded request goes.
#[derive(Clone, Copy)]
enum Dest<'t> {
    Cluster(ClusterId, &'t Cluster),
    /// ALLOW_ANY: the original destination.
    Original,
}

/// One request: route it, then answer it locally or forward it. The record may borrow from
/// the configuration the connection started with (the cluster's name).
async fn exchange<'c>(
    cx: &Conn<'c>,
    client: &mut Buffered<TcpStream>,
    head: &RequestHead,
    log: &mut Entry<'c>,
) -> Next {
    let table = &cx.snapshot.table;
    if head.method() == "CONNECT" {
        // As in Envoy without CONNECT support: no route matches a CONNECT request.
        let reply = LocalReply::new(404, "", "NR", "CONNECT is not routed");
        let _ = answer(&mut client.io, log, &reply, true).await;
        return Next::Close;
    }
    match cx.config.route(head.authority().as_bytes()) {
        HostRoute::Block => {
            log.cluster = Some("BlackHoleCluster".into());
            let reply = LocalReply::new(502, "", "-", "registry_only");
            reply_unread(client, head, log, reply).await
        }
        HostRoute::Passthrough if cx.worker.settings.capture == Capture::Listeners => {
            let reply = LocalReply::new(502, "", "-", "passthrough to a local listener would loop");
            reply_unread(client, head, log, reply).await
        }
        HostRoute::Passthrough => {
            log.cluster = Some("PassthroughCluster".into());
            let fwd = Forward::plain(None, passthrough_retries());
            forward(cx, client, head, &fwd, Dest::Original, log).await
        }
        HostRoute::VirtualHost(vh) => {
            let planned = {
                // The fields as borrowed pairs, inline: dropped before the next await, so
                // they take no room in the exchange's future.
                let fields: smallvec::SmallVec<[(&str, &[u8]); 16]> = head.headers().collect();
                let request = Request {
                    method: head.method(),
                    path: head.path(),
                    authority: head.authority(),
                    scheme: "http",
                    headers: &fields,
                    port: cx.config.port,
                };
                let mut rng = cx.worker.rng.borrow_mut();
                plan::plan(vh, &request, &mut || rng.f64())
            };
            match planned {
                Plan::Reply(reply) => reply_unread(client, head, log, reply).await,
                Plan::Forward(fwd) => {
                    let Some(id) = fwd.cluster else {
                        let reply = LocalReply::new(503, "", "NC", "cluster not found");
                        return reply_unread(client, head, log, reply).await;
                    };
                    let cluster = table.cluster(id);
                    log.cluster = Some(cluster.name.as_str().into());
                    forward(cx, client, head, &fwd, Dest::Cluster(id, cluster), log).await
                }
            }
        }
    }
}

/// The allow_any route has no retry policy (spec §9.4).
fn passthrough_retries() -> &'static dataplane_config::spec::RetryPolicy {
    static NONE: std::sync::OnceLock<dataplane_config::spec::RetryPolicy> =
        std::sync::OnceLock::new();
    NONE.get_or_init(dataplane_config::spec::RetryPolicy::disabled)
}

/// Why an attempt failed before a usable response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// No connection (refused, timed out, TLS handshake failed, DNS).
    Connect,
    /// The connection closed or failed before a response head.
    Reset,
    /// The per-try timeout expired.
    PerTryTimeout,
    /// A complete response with this status.
    Status(u16),
}

/// Whether `policy` retries `failure` (Envoy's `retry_on` semantics).
fn retries_on(policy: &dataplane_config::spec::RetryPolicy, failure: Failure) -> bool {
    let has = |c: &str| policy.retry_on.conditions.iter().any(|x| x == c);
    match failure {
        Failure::Connect => {
            has("connect-failure") || has("5xx") || has("gateway-error") || has("reset")
        }
        Failure::Reset => has("reset") || has("5xx") || has("gateway-error"),
        Failure::PerTryTimeout => has("5xx") || has("gateway-error"),
        Failure::Status(code) => {
            (has("5xx") && code >= 500)
                || (has("gateway-error") && matches!(code, 502..=504))
                || (has("retriable-4xx") && code == 409)
                || policy.retry_on.status_codes.contains(&code)
        }
    }
}

fn body_of(framing: Framing) -> Body {
    match framing {
        Framing::None => Body::None,
        Framing::Length(n) => Body::Length(n),
        Framing::Chunked => Body::Chunked,
    }
}

fn response_body(framing: BodyFraming) -> Body {
    match framing {
        BodyFraming::None => Body::None,
        BodyFraming::Length(n) => Body::Length(n),
        BodyFraming::Chunked => Body::Chunked,
        BodyFraming::UntilClose => Body::UntilClose,
    }
}

/// The host part of an authority, lower-cased (the name DYNAMIC_DNS resolves and auto SNI
/// sends).
fn host_of(authority: &str) -> String {
    let host = dataplane_config::table::host::http_host(authority.as_bytes())
        .map_or_else(String::new, |h| String::from_utf8_lossy(h).into_owned());
    host.to_ascii_lowercase()
}

/// A UUID-shaped `x-request-id` (`8-4-4-4-12` lowercase hex digits), on the stack: through
/// `format!` it was two allocations and 1.7% of a keep-alive request's CPU, through a `String`
/// one allocation and 2%.
struct RequestId([u8; 36]);

impl RequestId {
    fn new(v: u128) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut id = [b'-'; 36];
        let mut at = 0;
        for (i, byte) in v.to_be_bytes().into_iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                at += 1;
            }
            id[at] = HEX[usize::from(byte >> 4)];
            id[at + 1] = HEX[usize::from(byte & 0xf)];
            at += 2;
        }
        Self(id)
    }

    fn as_str(&self) -> &str {
        // ASCII by construction.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

#[allow(clippy::too_many_lines)] // one exchange's attempts, read top to bottom
async fn forward(
    cx: &Conn<'_>,
    client: &mut Buffered<TcpStream>,
    head: &RequestHead,
    fwd: &Forward<'_>,
    dest: Dest<'_>,
    log: &mut Entry<'_>,
) -> Next {
    if let Some(delay) = fwd.delay {
        monoio::time::sleep(delay).await;
        log.response_flags = Some("DI");
    }
    if let Some(abort) = &fwd.abort {
        return reply_unread(client, head, log, abort.clone()).await;
    }
    let origination = match dest {
        Dest::Cluster(id, _) => cx.snapshot.tls.get(id),
        Dest::Original => None,
    };
    if let Some(Origination {
        config: Err(why), ..
    }) = origination
    {
        log.reason = Some(format!("tls origination: {why}"));
        let reply = LocalReply::new(503, "upstream TLS is not available", "UF", "");
        return reply_unread(client, head, log, reply).await;
    }
    let has_body = head.framing != Framing::None;
    if head.expect_continue && has_body {
        // Envoy's default: the proxy answers 100-continue itself and drops Expect upstream.
        let (res, _) = client
            .io
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n".to_vec())
            .await;
        if res.is_err() {
            return Next::Close;
        }
    }
    let deadline = fwd.timeout.map(|t| Instant::now() + t);
    let left = || deadline.map(|d| d.saturating_duration_since(Instant::now()));
    let authority = fwd.authority.as_deref().unwrap_or_else(|| head.authority());
    let path = fwd.path.as_deref().unwrap_or_else(|| head.path());
    // The requested host, lower-cased, where something reads it: an upstream resolved by the
    // requested name, a destination checked against its addresses, SNI taken from the Host.
    let needs_requested = match dest {
        Dest::Cluster(_, c) => match c.upstream {
            dataplane_config::table::Upstream::RequestedName { .. } => true,
            dataplane_config::table::Upstream::OriginalDestination { .. } => {
                cx.worker.settings.verify_original_destination
            }
            _ => false,
        },
        Dest::Original => false,
    } || origination.is_some_and(|o| matches!(o.sni, Sni::FromHost));
    let requested = if needs_requested {
        host_of(head.authority())
    } else {
        String::new()
    };
    let request_id = RequestId::new(cx.worker.rng.borrow_mut().u128(..));
    let mut replay = Replay::new(REPLAY_LIMIT);
    let mut body_sent = false;
    let mut attempt = 0u32;
    let mut fresh_retry_used = false;
    let mut tried: smallvec::SmallVec<[SocketAddr; 2]> = smallvec::SmallVec::new();
    let policy = fwd.retries;
    loop {
        attempt += 1;
        let can_retry = |failure: Failure, replay: &Replay, attempt: u32, body_sent: bool| {
            attempt <= policy.attempts
                && retries_on(policy, failure)
                && (!body_sent || replay.bytes.is_some())
                && deadline.is_none_or(|d| Instant::now() < d)
        };
        // 1. An upstream connection.
        // A connection back in the pool for under `pool::TRUSTED_FOR` is reused unasked when a
        // failure on it can be retried here: the request has no body, and the retry on a fresh
        // connection is not spent (its checkout asks, so a second stale one is not taken).
        let trust_recent = head.framing == Framing::None && !fresh_retry_used;
        let acquired = acquire(
            cx,
            dest,
            origination,
            &requested,
            &tried,
            left(),
            trust_recent,
        )
        .await;
        let mut up = match acquired {
            Ok(p) => p,
            Err(Acquire::Overflow) => {
                let reply = LocalReply::new(503, "upstream connect error: overflow", "UO", "");
                log.reason = Some("connection pool overflow".into());
                return reply_or_close(client, head, log, reply, body_sent).await;
            }
            Err(Acquire::Timeout) => {
                log.reason = Some("upstream request timeout".into());
                let reply = LocalReply::new(504, "upstream request timeout", "UT", "");
                return reply_or_close(client, head, log, reply, body_sent).await;
            }
            Err(Acquire::Failed(
                e @ (UpstreamError::DestinationMismatch(_) | UpstreamError::Loop),
            )) => {
                // Refusals, not failures: never retried.
                log.reason = Some(e.reason());
                let reply = match e {
                    UpstreamError::Loop => LocalReply::new(502, "", "-", ""),
                    _ => LocalReply::new(403, "", "-", ""),
                };
                return reply_or_close(client, head, log, reply, body_sent).await;
            }
            Err(Acquire::Failed(e)) => {
                log.reason = Some(e.reason());
                if can_retry(Failure::Connect, &replay, attempt, body_sent) {
                    backoff(cx, policy, attempt, deadline).await;
                    continue;
                }
                let (flag, body) = match e {
                    UpstreamError::NoEndpoints | UpstreamError::Dns(_) => {
                        ("UH", "no healthy upstream")
                    }
                    _ => (
                        "UF",
                        "upstream connect error or disconnect/reset before headers. reset reason: connection failure",
                    ),
                };
                let reply = LocalReply::new(503, body, flag, "");
                return reply_or_close(client, head, log, reply, body_sent).await;
            }
        };
        tried.push(up.key.addr);
        log.upstream = Some(up.key.addr);
        up.requests += 1;
        let _lease = cx.worker.balancer.lease(up.key.addr);
        // 2. The request.
        let out = render::request(
            head,
            &Outbound {
                path,
                authority,
                ops: &fwd.request_ops,
                attempt,
                request_id: request_id.as_str(),
                body_room: super::io::coalesced(client.data().len()),
            },
            client.take_spare(),
        );
        let sent = if body_sent {
            let mut out = out;
            out.extend_from_slice(replay.bytes.as_deref().unwrap_or_default());
            let (res, _) = up.conn.io.write_all(out).await;
            match res {
                Ok(_) => up.conn.io.flush().await.map(|_| 0),
                Err(e) => Err(e),
            }
        } else {
            body_sent = true;
            match super::io::relay_body(
                out,
                client,
                &mut up.conn.io,
                body_of(head.framing),
                &mut replay,
                &cx.worker.timer,
                cx.worker.settings.stream_idle_timeout,
            )
            .await
            {
                Ok(n) => Ok(n),
                Err(BodyError::Write(e)) => Err(e),
                Err(BodyError::Idle) => {
                    log.reason = Some("stream idle timeout while sending the request".into());
                    let reply = LocalReply::new(408, "stream timeout", "SI", "");
                    let _ = answer(&mut client.io, log, &reply, true).await;
                    return Next::Close;
                }
                Err(BodyError::Read(e)) => {
                    log.outcome = "error";
                    log.response_flags = Some("DC");
                    log.reason = Some(format!("client: {e}"));
                    return Next::Close;
                }
                Err(BodyError::Malformed(why)) => {
                    let reply = LocalReply::new(400, "", "-", why);
                    let _ = answer(&mut client.io, log, &reply, true).await;
                    return Next::Close;
                }
            }
        };
        match sent {
            Ok(n) if n > 0 => log.bytes_sent = n,
            Ok(_) => {}
            Err(e) => {
                log.reason = Some(format!("upstream write: {e}"));
                if up.reused && !fresh_retry_used && replay.bytes.is_some() {
                    // The origin closed an idle connection as we reused it: try a fresh one.
                    fresh_retry_used = true;
                    attempt -= 1;
                    continue;
                }
                if can_retry(Failure::Reset, &replay, attempt, body_sent) {
                    backoff(cx, policy, attempt, deadline).await;
                    continue;
                }
                let reply = LocalReply::new(
                    503,
                    "upstream connect error or disconnect/reset before headers. reset reason: connection termination",
                    "UC",
                    "",
                );
                return reply_or_close(client, head, log, reply, true).await;
            }
        }
        // 3. The response head, within the per-try and route timeouts.
        let sent_at = Instant::now();
        let bound = match (
            policy.per_try_timeout.filter(|_| policy.attempts > 0),
            left(),
        ) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // The stream idle timeout bounds the wait too; it is final, never retried.
        let idle = cx.worker.settings.stream_idle_timeout;
        let idle_binds = bound.is_none_or(|b| idle < b);
        let wait = Some(bound.map_or(idle, |b| b.min(idle)));
        let response = read_response(
            &mut up.conn,
            &mut up.response,
            &cx.worker.timer,
            head.method(),
            wait,
        )
        .await;
        if let Dest::Cluster(_, cluster) = dest {
            let outcome = match &response {
                Ok(()) => Outcome::Status(up.response.status),
                Err(_) => Outcome::Failed,
            };
            cx.worker.balancer.report(cluster, up.key.addr, outcome);
        }
        let failure = match response {
            Ok(()) => {
                let status = up.response.status;
                let failure = Failure::Status(status);
                if can_retry(failure, &replay, attempt, body_sent) {
                    log.reason = Some(format!("upstream status {status}"));
                    backoff(cx, policy, attempt, deadline).await;
                    continue;
                }
                return relay_response(cx, client, head, fwd, up, sent_at, dest, deadline, log)
                    .await;
            }
            Err(ReadFailure::Timeout) if idle_binds => {
                log.reason = Some("stream idle timeout waiting for the response".into());
                let reply = LocalReply::new(504, "stream timeout", "SI", "");
                return reply_or_close(client, head, log, reply, true).await;
            }
            Err(ReadFailure::Timeout) => {
                log.reason = Some("upstream request timeout".into());
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    let reply = LocalReply::new(504, "upstream request timeout", "UT", "");
                    return reply_or_close(client, head, log, reply, true).await;
                }
                Failure::PerTryTimeout
            }
            Err(ReadFailure::Closed(why)) => {
                log.reason = Some(format!("upstream: {why}"));
                if up.reused && !fresh_retry_used && replay.bytes.is_some() {
                    fresh_retry_used = true;
                    attempt -= 1;
                    continue;
                }
                Failure::Reset
            }
            Err(ReadFailure::Invalid(why)) => {
                log.reason = Some(format!("upstream: {why}"));
                let reply = LocalReply::new(502, "upstream sent an invalid response", "UPE", "");
                return reply_or_close(client, head, log, reply, true).await;
            }
        };
        if can_retry(failure, &replay, attempt, body_sent) {
            backoff(cx, policy, attempt, deadline).await;
            continue;
        }
        let reply = match failure {
            Failure::PerTryTimeout => LocalReply::new(504, "upstream request timeout", "UT", ""),
            _ => LocalReply::new(
                503,
                "upstream connect error or disconnect/reset before headers. reset reason: connection termination",
                "UC",
                "",
            ),
        };
        return reply_or_close(client, head, log, reply, true).await;
    }
}

/// A local reply after the request body may have been read: keep the connection only when
/// the body was consumed (or there was none).
async fn reply_or_close(
    client: &mut Buffered<TcpStream>,
    head: &RequestHead,
    log: &mut Entry<'_>,
    reply: LocalReply,
    body_consumed: bool,
) -> Next {
    if body_consumed || head.framing == Framing::None {
        let close = head.close;
        match answer(&mut client.io, log, &reply, close).await {
            Ok(()) if !close => Next::KeepAlive,
            _ => Next::Close,
        }
    } else {
        reply_unread(client, head, log, reply).await
    }
}

/// Envoy's back-off: a random wait up to base * 2^(attempt-1), capped at 10x base, and never
/// past the route deadline.
async fn backoff(
    cx: &Conn<'_>,
    policy: &dataplane_config::spec::RetryPolicy,
    attempt: u32,
    deadline: Option<Instant>,
) {
    let base = policy.backoff.max(Duration::from_millis(1));
    let factor = 1u32 << attempt.saturating_sub(1).min(10);
    let ceiling = base * factor.min(BACKOFF_CAP);
    let ms = ceiling.as_millis().max(1) as u64;
    let mut wait = Duration::from_millis(cx.worker.rng.borrow_mut().u64(0..ms));
    if let Some(d) = deadline {
        wait = wait.min(d.saturating_duration_since(Instant::now()));
    }
    monoio::time::sleep(wait).await;
}

enum Acquire {
    Overflow,
    /// The route timeout expired while waiting for a connection.
    Timeout,
    Failed(UpstreamError),
}

/// A pooled connection to `dest`, or a new one (connect, then the TLS handshake when the
/// cluster originates TLS). Endpoints not tried yet come first.
async fn acquire(
    cx: &Conn<'_>,
    dest: Dest<'_>,
    origination: Option<&Origination>,
    requested: &str,
    tried: &[SocketAddr],
    left: Option<Duration>,
    trust_recent: bool,
) -> Result<Box<Pooled>, Acquire> {
    let worker = cx.worker;
    let (mut addrs, cluster_name, connect_timeout, pool_settings) = match dest {
        Dest::Original => (
            smallvec::smallvec![cx.dst],
            "PassthroughCluster",
            worker.settings.connect_timeout,
            None,
        ),
        Dest::Cluster(_, cluster) => {
            if worker.settings.verify_original_destination
                && matches!(
                    cluster.upstream,
                    dataplane_config::table::Upstream::OriginalDestination { .. }
                )
            {
                upstream::verify_destination(&worker.resolver, requested, cx.dst.ip())
                    .await
                    .map_err(Acquire::Failed)?;
            }
            let mut rng = fastrand::Rng::with_seed(worker.rng.borrow_mut().u64(..));
            let addrs = worker
                .balancer
                .candidates(cluster, cx.dst, Some(requested), &worker.resolver, &mut rng)
                .await
                .map_err(Acquire::Failed)?;
            (
                addrs,
                cluster.name.as_str(),
                cluster.connect_timeout,
                cluster.policy.connection_pool.as_ref(),
            )
        }
    };
    addrs.sort_by_key(|a| tried.contains(a));
    let idle = pool_settings
        .and_then(|p| p.http_idle_timeout)
        .unwrap_or(pool::DEFAULT_IDLE);
    let tls = match origination {
        Some(Origination {
            config: Ok(config),
            sni,
        }) => {
            let name = match sni {
                Sni::Fixed(name) => name.as_str(),
                Sni::FromHost => requested,
            };
            Some((config, name))
        }
        _ => None,
    };
    let key_for = |addr: SocketAddr| KeyRef {
        addr,
        tls: tls.map(|(c, n)| (Arc::as_ptr(c) as usize, n)),
    };
    // Only the balancer's choice is reused from the pool (the rest are failover for connects):
    // reusing whichever endpoint has an idle connection would defeat the load balancer.
    let first = addrs.first().map(|a| key_for(*a));
    let checkout = || first.and_then(|k| worker.pool.checkout(k, idle, trust_recent));
    if let Some(p) = checkout() {
        return Ok(p);
    }
    let timeout = left.map_or(connect_timeout, |l| l.min(connect_timeout));
    if let Some(max) = pool_settings.and_then(|p| p.max_connections)
        && worker.pool.open_count(cluster_name) >= max
    {
        // At the limit: wait as one of at most `http1MaxPendingRequests` pending requests for
        // a connection to come back or close, within the connect timeout; else overflow.
        let pending_max = pool_settings
            .and_then(|p| p.http1_max_pending_requests)
            .unwrap_or(u32::MAX);
        let Some(_pending) = worker.pool.pend(cluster_name, pending_max) else {
            return Err(Acquire::Overflow);
        };
        let until = Instant::now() + timeout;
        loop {
            monoio::time::sleep(PENDING_POLL).await;
            if let Some(p) = checkout() {
                return Ok(p);
            }
            if worker.pool.open_count(cluster_name) < max {
                break;
            }
            if Instant::now() >= until {
                // The route's deadline came first: a timeout (504), as in Envoy.
                return Err(if left.is_some_and(|l| l <= connect_timeout) {
                    Acquire::Timeout
                } else {
                    Acquire::Overflow
                });
            }
        }
    }
    let slot = worker.pool.reserve(cluster_name);
    let mut last = UpstreamError::NoEndpoints;
    let failed = |addr: SocketAddr| {
        worker.metrics.connect_failed(cluster_name);
        if let Dest::Cluster(_, cluster) = dest {
            worker.balancer.report(cluster, addr, Outcome::Failed);
        }
    };
    for &addr in &addrs {
        let table = &cx.snapshot.table;
        let tcp = match upstream::connect_within(addr, worker.settings.mark, timeout, &worker.timer)
            .await
        {
            Ok(s) if worker.settings.is_self(&s, addr, |p| table.serves_port(p)) => {
                last = UpstreamError::Loop;
                continue;
            }
            Ok(s) => s,
            Err(e) => {
                failed(addr);
                last = e;
                continue;
            }
        };
        let io = match &tls {
            None => UpstreamIo::Plain(tcp),
            Some((config, name)) => {
                match handshake(config, name, addr, tcp, timeout, &worker.timer).await {
                    Ok(io) => io,
                    Err(why) => {
                        failed(addr);
                        last = UpstreamError::Tls(why);
                        continue;
                    }
                }
            }
        };
        return Ok(worker.pool.adopt(slot, key_for(addr).to_key(), io));
    }
    Err(Acquire::Failed(last))
}

async fn handshake(
    config: &Arc<rustls::ClientConfig>,
    name: &str,
    addr: SocketAddr,
    tcp: TcpStream,
    timeout: Duration,
    timer: &CoarseTimer,
) -> Result<UpstreamIo, String> {
    use std::os::fd::AsRawFd;
    let server_name = if name.is_empty() {
        ServerName::IpAddress(addr.ip().into())
    } else {
        ServerName::try_from(name.to_owned()).map_err(|e| format!("server name {name}: {e}"))?
    };
    let fd = tcp.as_raw_fd();
    let connector = monoio_rustls::TlsConnector::from(config.clone());
    match timer
        .timeout(timeout, connector.connect(server_name, tcp))
        .await
    {
        Err(_) => Err("TLS handshake timeout".into()),
        Ok(Err(e)) => Err(format!("TLS handshake: {}", error_chain(&e))),
        Ok(Ok(stream)) => Ok(UpstreamIo::Tls(Box::new(stream), fd)),
    }
}

/// An error with its sources (monoio-rustls wraps the rustls error that says why).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.contains(&text) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

enum ReadFailure {
    Timeout,
    Closed(String),
    Invalid(&'static str),
}

/// Read a final response head (interim 1xx other than 101 are skipped), within `wait`.
async fn read_response(
    up: &mut Buffered<UpstreamIo>,
    resp: &mut ResponseHead,
    timer: &CoarseTimer,
    method: &str,
    wait: Option<Duration>,
) -> Result<(), ReadFailure> {
    let read = async {
        loop {
            if !up.data().is_empty() {
                match resp.parse_into(up.data(), method) {
                    Ok(true) if (100..200).contains(&resp.status) && resp.status != 101 => {
                        up.consume(resp.head_len);
                        continue;
                    }
                    Ok(true) => return Ok(()),
                    Ok(false) => {}
                    Err(response::Invalid(why)) => return Err(ReadFailure::Invalid(why)),
                }
            }
            match up.fill(head::MAX_HEAD + 1).await {
                Ok(0) => {
                    return Err(ReadFailure::Closed(
                        "connection closed before a response".into(),
                    ));
                }
                Ok(_) => {}
                Err(e) => return Err(ReadFailure::Closed(e.to_string())),
            }
        }
    };
    match wait {
        None => read.await,
        Some(w) => timer
            .timeout(w, read)
            .await
            .unwrap_or(Err(ReadFailure::Timeout)),
    }
}

#[allow(clippy::too_many_arguments)] // the exchange's whole state, passed once
async fn relay_response(
    cx: &Conn<'_>,
    client: &mut Buffered<TcpStream>,
    head: &RequestHead,
    fwd: &Forward<'_>,
    mut up: Box<Pooled>,
    sent_at: Instant,
    dest: Dest<'_>,
    deadline: Option<Instant>,
    log: &mut Entry<'_>,
) -> Next {
    // The head parsed into the connection's storage, read there while the connection is used.
    let resp = &up.response;
    let service_ms = sent_at.elapsed().as_millis();
    log.response_code = Some(resp.status);
    log.response_flags.get_or_insert("-");
    log.outcome = "forwarded";
    up.conn.consume(resp.head_len);
    if resp.status == 101 {
        if !head.upgrade {
            let reply = LocalReply::new(502, "", "UPE", "101 without an upgrade request");
            let _ = answer(&mut client.io, log, &reply, true).await;
            return Next::Close;
        }
        let out = render::response(
            resp,
            &fwd.response_ops,
            service_ms,
            false,
            0,
            up.conn.take_spare(),
        );
        let (res, _) = client.io.write_all(out).await;
        if res.is_err() {
            return Next::Close;
        }
        let rest = up.conn.take_data();
        return match up.conn.io {
            UpstreamIo::Plain(tcp) => Next::Tunnel(tcp, rest),
            UpstreamIo::Tls(..) => {
                log.reason = Some("upgrade over TLS origination is not supported".into());
                Next::Close
            }
        };
    }
    let client_close = head.close || resp.framing == BodyFraming::UntilClose;
    let out = render::response(
        resp,
        &fwd.response_ops,
        service_ms,
        client_close,
        super::io::coalesced(up.conn.data().len()),
        up.conn.take_spare(),
    );
    let mut no_replay = Replay::none();
    let relay = super::io::relay_body(
        out,
        &mut up.conn,
        &mut client.io,
        response_body(resp.framing),
        &mut no_replay,
        &cx.worker.timer,
        cx.worker.settings.stream_idle_timeout,
    );
    let relayed = match deadline {
        None => relay.await,
        Some(d) => cx
            .worker
            .timer
            .timeout_at(d, relay)
            .await
            .unwrap_or_else(|_| Err(BodyError::Read(std::io::ErrorKind::TimedOut.into()))),
    };
    match relayed {
        Ok(n) => log.bytes_received = n,
        Err(e) => {
            log.outcome = "error";
            log.reason = Some(format!("response body: {}", e.reason()));
            return Next::Close;
        }
    }
    let max = match dest {
        Dest::Cluster(_, c) => c
            .policy
            .connection_pool
            .as_ref()
            .and_then(|p| p.max_requests_per_connection)
            .filter(|n| *n > 0),
        Dest::Original => None,
    };
    if !resp.close && up.conn.data().is_empty() && max.is_none_or(|m| up.requests < m) {
        let idle = match dest {
            Dest::Cluster(_, c) => c
                .policy
                .connection_pool
                .as_ref()
                .and_then(|p| p.http_idle_timeout),
            Dest::Original => None,
        }
        .unwrap_or(pool::DEFAULT_IDLE);
        cx.worker.pool.put(up, idle);
    }
    if client_close {
        Next::Close
    } else {
        Next::KeepAlive
    }
}

/// After `101 Switching Protocols`: bytes both ways until either side closes.
async fn tunnel(
    cx: &Conn<'_>,
    mut client: Buffered<TcpStream>,
    mut upstream: TcpStream,
    from_upstream: Vec<u8>,
) {
    if !from_upstream.is_empty() {
        let (res, _) = client.io.write_all(from_upstream).await;
        if res.is_err() {
            return;
        }
    }
    let mut to_upstream = client.take_data();
    let _ = upstream.flush().await;
    let _done = crate::forward::forward(
        &client.io,
        &upstream,
        &mut to_upstream,
        cx.worker.splice_pipes(),
        &cx.worker.settings.stream_idle_timeout,
        &cx.worker.timer,
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane_config::spec::RetryPolicy;

    #[test]
    fn request_ids_are_uuid_shaped_hex() {
        for v in [0, 1, u128::MAX, 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210] {
            let hex = format!("{v:032x}");
            let want = [
                &hex[..8],
                &hex[8..12],
                &hex[12..16],
                &hex[16..20],
                &hex[20..],
            ]
            .join("-");
            assert_eq!(RequestId::new(v).as_str(), want);
        }
    }

    #[test]
    fn retry_conditions_table() {
        let default = RetryPolicy::istio_default();
        let mut custom = RetryPolicy::istio_default();
        custom.retry_on.conditions = vec!["gateway-error".into()];
        custom.retry_on.status_codes = vec![429];
        let mut five = RetryPolicy::istio_default();
        five.retry_on.conditions = vec!["5xx".into()];
        let cases: &[(&RetryPolicy, Failure, bool)] = &[
            (&default, Failure::Connect, true),
            (&default, Failure::Status(503), false),
            (&default, Failure::Reset, false),
            (&default, Failure::PerTryTimeout, false),
            (&custom, Failure::Status(502), true),
            (&custom, Failure::Status(500), false),
            (&custom, Failure::Status(429), true),
            (&custom, Failure::PerTryTimeout, true),
            (&five, Failure::Status(500), true),
            (&five, Failure::Status(404), false),
            (&five, Failure::Reset, true),
        ];
        for (policy, failure, want) in cases {
            assert_eq!(
                retries_on(policy, *failure),
                *want,
                "{:?} on {failure:?}",
                policy.retry_on
            );
        }
    }

    #[test]
    fn host_of_strips_port_and_case() {
        for (a, want) in [
            ("API.example.com:8080", "api.example.com"),
            ("a.com.", "a.com"),
            ("a.com", "a.com"),
        ] {
            assert_eq!(host_of(a), want, "{a}");
        }
    }
}
