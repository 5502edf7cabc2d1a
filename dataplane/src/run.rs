//! `dataplane run`: load the configuration, start the workers, serve.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use dataplane_config::validate::RESERVED_PORTS;

use crate::admin::{AdminState, ReloadStatus, Surface};
use crate::control::{Loader, Sources};
use crate::drain::{Drain, Outcome};
use crate::runtime::{self, Capture, Settings};
use crate::snapshot::{Acks, Published, Snapshot};

/// Exit code for a configuration that cannot be served (EX_USAGE).
const EXIT_CONFIG: u8 = 64;

fn duration(s: &str) -> Result<Duration, String> {
    dataplane_config::duration::parse(s)
}

/// Parse a mark: hexadecimal with `0x`, else decimal.
pub fn parse_mark(s: &str) -> Result<u32, String> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|e| format!("invalid mark {s:?}: {e}"))
}

/// `dataplane run`
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Files or directories of Istio YAML (repeatable).
    #[arg(long, env = "DATAPLANE_CONFIG", required = true, value_delimiter = ',')]
    pub config: Vec<PathBuf>,
    /// MeshConfig file.
    #[arg(long, env = "DATAPLANE_MESH")]
    pub mesh: Option<PathBuf>,
    /// The namespace the proxy serves.
    #[arg(long, env = "DATAPLANE_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// How connections reach the proxy.
    #[arg(
        long,
        env = "DATAPLANE_CAPTURE",
        value_enum,
        default_value = "redirect"
    )]
    pub capture: Capture,
    /// The capture port (redirect, tproxy).
    #[arg(long, env = "DATAPLANE_OUTBOUND_PORT", default_value_t = 15001)]
    pub outbound_port: u16,
    /// Address to listen on.
    #[arg(long, env = "DATAPLANE_BIND", default_value = "0.0.0.0")]
    pub bind: IpAddr,
    /// Admin address: GET /ready, GET /config_dump, GET /stats/prometheus, POST /drain.
    #[arg(long, env = "DATAPLANE_ADMIN", default_value = "127.0.0.1:15000")]
    pub admin: SocketAddr,
    /// Worker threads (default: one per core).
    #[arg(long, env = "DATAPLANE_WORKERS")]
    pub workers: Option<usize>,
    /// DNS servers for DNS-resolved upstreams (default: the nameservers of /etc/resolv.conf).
    #[arg(long, env = "DATAPLANE_DNS_SERVER", value_delimiter = ',')]
    pub dns_server: Vec<SocketAddr>,
    /// SO_MARK on upstream sockets, so capture rules can exempt them (0 disables).
    #[arg(long, env = "DATAPLANE_MARK", default_value = "0x539", value_parser = parse_mark)]
    pub mark: u32,
    /// How long to wait for a ClientHello or request line (Decisions 9).
    #[arg(long, env = "DATAPLANE_DETECT_TIMEOUT", default_value = "15s", value_parser = duration)]
    pub detect_timeout: Duration,
    /// How long a drain (SIGTERM, SIGINT, POST /drain) waits for connections in flight.
    #[arg(long, env = "DATAPLANE_DRAIN_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub drain_timeout: Duration,
    /// Istio status port: GET /healthz/ready on --bind, for Kubernetes probes (0: any free port).
    #[arg(long, env = "DATAPLANE_STATUS_PORT", default_value_t = 15021)]
    pub status_port: u16,
    /// How bytes are moved: copy through adaptive buffers, or splice through pooled pipes.
    #[arg(long, env = "DATAPLANE_FORWARD", value_enum, default_value = "copy")]
    pub forward: crate::forward::Mode,
    /// Istio Prometheus port: GET /stats/prometheus on --bind (0: any free port).
    #[arg(long, env = "DATAPLANE_PROMETHEUS_PORT", default_value_t = 15090)]
    pub prometheus_port: u16,
    /// Refuse a connection routed to a resolution-NONE service whose original destination is
    /// not one of the addresses its SNI (or HTTP Host) resolves to. Istio does not check: a
    /// client may name a registered host and dial any address.
    #[arg(long, env = "DATAPLANE_VERIFY_ORIGINAL_DESTINATION")]
    pub verify_original_destination: bool,
    /// An HTTP exchange in which neither side moves a byte for this long is ended (Envoy's
    /// stream idle timeout): 504 before the response starts, a close after.
    #[arg(long, env = "DATAPLANE_STREAM_IDLE_TIMEOUT", default_value = "5m", value_parser = duration)]
    pub stream_idle_timeout: Duration,
    /// Client connections each worker holds at most; more are accepted and closed at once.
    /// Default: what the open-file limit allows (two descriptors per proxied connection, 256
    /// kept for listeners, DNS and admin), shared by the workers.
    #[arg(long, env = "DATAPLANE_MAX_CONNECTIONS_PER_WORKER")]
    pub max_connections_per_worker: Option<usize>,
    /// How the kernel schedules the workers: `normal` (SCHED_OTHER), `batch` (SCHED_BATCH:
    /// a woken worker does not preempt the task on its core; for hosts whose clients share the
    /// workers' cores and mostly wait on the network, not for cores shared with busy programs)
    /// or `auto` (batch while a worker's core has idle time, normal beside a busy program).
    #[arg(
        long,
        env = "DATAPLANE_WORKER_SCHED",
        value_enum,
        default_value = "normal"
    )]
    pub worker_sched: runtime::Sched,
    /// Before a worker sleeps, it yields its core this many times to whatever else is runnable
    /// there, looking for completions after each: a client or origin on the same core replies
    /// without the worker being woken (fewer switches; on virtual machines, fewer halted-vCPU
    /// exits). When a quarter of its yields take a millisecond or more (a busy program shares
    /// the core), a worker stops yielding for 1 s, doubling to 8 s. 0 disables.
    #[arg(long, env = "DATAPLANE_IDLE_YIELDS", default_value_t = 1)]
    pub idle_yields: u32,
}

/// Connections per worker the open-file limit allows: two descriptors per proxied connection,
/// 256 kept for listeners, DNS, pipes and the admin servers.
fn default_max_connections(workers: usize) -> usize {
    let (soft, _) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap_or((1024, 1024));
    let usable = usize::try_from(soft)
        .unwrap_or(usize::MAX)
        .saturating_sub(256);
    (usable / 2 / workers.max(1)).max(1)
}

/// Diagnostic lines queued for stderr at most. The queue is allocated whole when logging
/// starts: tracing-appender's default, 128,000 lines, was 4 MB of the idle proxy's RSS (S9).
const LOG_LINES: usize = 4096;

/// Logs go to stderr through a non-blocking writer: a worker that logs never waits on the
/// terminal or pipe (lines beyond [`LOG_LINES`] queued are dropped). The guard flushes on exit.
fn init_logging() -> Option<tracing_appender::non_blocking::WorkerGuard> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DATAPLANE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(LOG_LINES)
        .finish(std::io::stderr());
    let ok = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi)
        .try_init()
        .is_ok();
    ok.then_some(guard)
}

/// Run the proxy until it is drained (SIGTERM, SIGINT, POST /drain) or killed.
pub fn run(args: &RunArgs) -> ExitCode {
    let _log_guard = init_logging();
    crate::access_log::start_writer();
    let mut reserved: Vec<u16> = RESERVED_PORTS.to_vec();
    reserved.extend([
        args.admin.port(),
        args.outbound_port,
        args.status_port,
        args.prometheus_port,
    ]);
    let mut loader = Loader::new(Sources {
        paths: args.config.clone(),
        mesh: args.mesh.clone(),
        namespace: args.namespace.clone(),
        reserved,
    });
    let table = match loader.load() {
        Ok(t) => t,
        Err(errors) => {
            for e in &errors {
                tracing::error!("{e}");
            }
            tracing::error!(
                "the configuration is invalid ({} error(s)): not starting",
                errors.len()
            );
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let dns_servers = if args.dns_server.is_empty() {
        crate::dns::nameservers(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default())
    } else {
        args.dns_server.clone()
    };
    if dns_servers.is_empty() {
        tracing::warn!(
            "no DNS server (--dns-server, /etc/resolv.conf): DNS-resolved services will fail"
        );
    }
    let mut settings = Settings {
        capture: args.capture,
        outbound_port: args.outbound_port,
        bind: args.bind,
        mark: args.mark,
        detect_timeout: args.detect_timeout,
        connect_timeout: table.connect_timeout,
        dns_servers,
        forward: args.forward,
        own_ports: [
            args.outbound_port,
            args.admin.port(),
            args.status_port,
            args.prometheus_port,
        ]
        .into_iter()
        .filter(|p| *p != 0)
        .collect(),
        verify_original_destination: args.verify_original_destination,
        stream_idle_timeout: args.stream_idle_timeout,
        max_connections: 0,
        sched: args.worker_sched,
        idle_yields: args.idle_yields,
    };
    let addresses = runtime::listen_addresses(&settings, &table.ports());
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    settings.max_connections = args
        .max_connections_per_worker
        .unwrap_or_else(|| default_max_connections(workers));
    tracing::info!(per_worker = settings.max_connections, "connection limit");
    let published = Arc::new(Published::new(Snapshot::build(table)));
    let (drain, drain_requests) = Drain::new(workers);
    let acks = Arc::new(Acks::new(workers));
    let metrics = crate::metrics::Shared::new(workers);
    if let Err(e) = drain.watch_signals() {
        tracing::error!("cannot watch SIGTERM and SIGINT: {e}");
        return ExitCode::FAILURE;
    }
    let admin = Arc::new(AdminState {
        published: published.clone(),
        last_reload: std::sync::Mutex::new(ReloadStatus::now("start", "published", Vec::new())),
        drain: drain.clone(),
        acks: acks.clone(),
        metrics: metrics.clone(),
    });
    if let Err(e) = crate::control::spawn(loader, admin.clone(), workers) {
        tracing::error!("cannot start the control thread: {e}");
        return ExitCode::FAILURE;
    }
    let handles = match runtime::start(
        published,
        settings,
        workers,
        addresses.clone(),
        &drain,
        &acks,
        &metrics,
    ) {
        Ok(h) => h,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    // Ready once every worker has bound its listeners (runtime::start returned).
    crate::admin::spawn(args.admin, Surface::Admin, admin.clone());
    let status = SocketAddr::new(args.bind, args.status_port);
    crate::admin::spawn(status, Surface::Status, admin.clone());
    let prometheus = SocketAddr::new(args.bind, args.prometheus_port);
    crate::admin::spawn(prometheus, Surface::Prometheus, admin);
    let listening: Vec<String> = addresses.iter().map(ToString::to_string).collect();
    tracing::info!(capture = ?args.capture, listening = %listening.join(" "), "serving");
    // Workers run until the process exits; the main thread waits for a drain and ends it.
    drop(handles);
    match drain.supervise(&drain_requests, args.drain_timeout) {
        Outcome::Drained => tracing::info!("drained: every connection finished"),
        Outcome::TimedOut(open) => {
            tracing::warn!(open, "drain timeout: closing the connections still open");
        }
        Outcome::Forced(open) => tracing::warn!(open, "second signal: exiting at once"),
    }
    crate::access_log::flush_all();
    ExitCode::SUCCESS
}
