//! Workers: one OS thread per core, pinned, each running its own monoio runtime (io_uring, or
//! epoll when the kernel refuses io_uring) with its own SO_REUSEPORT listeners. Workers share
//! nothing mutable but the published table, read through [`crate::snapshot::Local`], and their
//! own cells in [`crate::snapshot::Acks`] (generation applied) and [`crate::drain::Drain`]
//! (open connections). In `listeners` mode each worker re-binds its listeners to every new
//! generation's ports (`Open`).

use std::cell::Cell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use monoio::{FusionDriver, RuntimeBuilder};
use socket2::{Domain, Socket, Type};

use crate::conn::{self, Worker};
use crate::drain::{Drain, WorkerDrain};
use crate::snapshot::{Acks, Local, Published};
use crate::upstream::Balancer;

/// How connections reach the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Capture {
    /// iptables/nftables REDIRECT to the outbound port; the destination is SO_ORIGINAL_DST.
    Redirect,
    /// TPROXY to the outbound port; the socket's local address is the destination.
    Tproxy,
    /// Every ServiceEntry port bound on --bind; the local address is the destination.
    Listeners,
}

/// What every worker needs to know.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Capture mode.
    pub capture: Capture,
    /// The capture port (redirect, tproxy).
    pub outbound_port: u16,
    /// The address listeners bind to.
    pub bind: IpAddr,
    /// SO_MARK on upstream sockets (0: none).
    pub mark: u32,
    /// Detection bound in time.
    pub detect_timeout: Duration,
    /// Connect timeout for passthrough (clusters carry their own).
    pub connect_timeout: Duration,
    /// DNS servers, in order.
    pub dns_servers: Vec<SocketAddr>,
    /// How bytes are moved.
    pub forward: crate::forward::Mode,
    /// Ports the proxy itself listens on (capture, admin, status, Prometheus; 0 excluded).
    pub own_ports: Vec<u16>,
    /// Check that a resolution-NONE destination is one of the requested name's addresses.
    pub verify_original_destination: bool,
    /// HTTP stream idle timeout.
    pub stream_idle_timeout: Duration,
    /// Client connections a worker holds at most.
    pub max_connections: usize,
    /// The workers' scheduling policy.
    pub sched: Sched,
    /// Yields a worker makes after its connections' last activity before it sleeps.
    pub idle_yields: u32,
}

/// How the kernel schedules the worker threads (`--worker-sched`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Sched {
    /// `SCHED_OTHER`: a worker woken by a socket preempts the task running on its core.
    Normal,
    /// `SCHED_BATCH`: a woken worker waits for the task on its core to sleep or use up its
    /// slice. It pays where clients share the workers' cores and mostly wait on the network
    /// (fewer switches per exchange); it costs milliseconds where they compute. perf/README
    /// has the figures both ways.
    Batch,
    /// Each worker under `SCHED_BATCH` while its core has idle time and it does not queue long
    /// for it, else under `SCHED_OTHER`, decided every 250 ms.
    Auto,
}

impl Settings {
    /// Whether an upstream socket connected to `peer` leads back to this proxy (Decisions 12's
    /// loop guard, for upstream addresses from DNS or endpoints): `peer` is on a port the proxy
    /// serves and on this host (loopback, or the same address the kernel chose as our source).
    /// The port is checked first, so the common case costs no system call.
    pub fn is_self(
        &self,
        upstream: &monoio::net::TcpStream,
        peer: SocketAddr,
        serves: impl Fn(u16) -> bool,
    ) -> bool {
        let ours = self.own_ports.contains(&peer.port())
            || (self.capture == Capture::Listeners && serves(peer.port()));
        ours && (peer.ip().is_loopback()
            || upstream
                .local_addr()
                .is_ok_and(|local| local.ip() == peer.ip()))
    }
}

fn listen(addr: SocketAddr, transparent: bool) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        // IPv4 has its own listener: each socket sees one family, so the right
        // SO_ORIGINAL_DST (IPv4 or IPv6) is always used.
        socket.set_only_v6(true)?;
    }
    if transparent {
        if addr.is_ipv4() {
            socket.set_ip_transparent_v4(true)?
        } else {
            socket.set_ip_transparent_v6(true)?
        }
    }
    socket.set_nonblocking(true)?;
    // Small writes (a TLS handshake, an HTTP head) go out at once, as Envoy and HAProxy set on
    // both sides. Accepted sockets inherit it from the listener: no system call per connection.
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// The addresses a worker listens on. An unspecified IPv4 bind address (the default) also
/// listens on `[::]` (IPv6 only), so captured IPv6 connections are served too.
pub fn listen_addresses(settings: &Settings, service_ports: &[u16]) -> Vec<SocketAddr> {
    let ports: Vec<u16> = match settings.capture {
        Capture::Listeners => service_ports.to_vec(),
        Capture::Redirect | Capture::Tproxy => vec![settings.outbound_port],
    };
    let mut binds = vec![settings.bind];
    if settings.bind == IpAddr::from([0, 0, 0, 0]) && ipv6_available() {
        binds.push(IpAddr::from([0u16; 8]));
    }
    ports
        .iter()
        .flat_map(|&p| binds.iter().map(move |&b| SocketAddr::new(b, p)))
        .collect()
}

/// Whether this host (namespace) has IPv6 at all.
fn ipv6_available() -> bool {
    std::net::TcpListener::bind("[::1]:0").is_ok()
}

/// Start `workers` pinned workers. Returns once every worker has bound its listeners (or the
/// first error).
pub fn start(
    published: Arc<Published>,
    settings: Settings,
    workers: usize,
    addresses: Vec<SocketAddr>,
    drain: &Arc<Drain>,
    acks: &Arc<Acks>,
    metrics: &Arc<crate::metrics::Shared>,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let forced_epoll = std::env::var("DATAPLANE_IO_DRIVER").is_ok_and(|d| d == "epoll");
    let uring = monoio::utils::detect_uring() && !forced_epoll;
    if uring {
        tracing::info!(workers, "I/O driver: io_uring");
    } else {
        let why = if forced_epoll {
            "DATAPLANE_IO_DRIVER=epoll"
        } else {
            "the kernel refused io_uring"
        };
        tracing::warn!(workers, "I/O driver: epoll ({why})");
    }
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let mut handles = Vec::with_capacity(workers);
    let worker_threads = crate::worker_sched::WorkerThreads::new(workers);
    if settings.sched == Sched::Auto {
        crate::worker_sched::spawn(worker_threads.clone(), cores)?;
    }
    for id in 0..workers {
        let published = published.clone();
        let settings = settings.clone();
        let addresses = addresses.clone();
        let ready = ready_tx.clone();
        let drain = drain.clone();
        let acks = acks.clone();
        let metrics = metrics.clone();
        let threads = worker_threads.clone();
        let use_uring = uring;
        let handle = std::thread::Builder::new()
            .name(format!("worker-{id}"))
            .spawn(move || {
                if let Err(e) = monoio::utils::bind_to_cpu_set([id % cores]) {
                    tracing::warn!(worker = id, "cannot pin to a core: {e:?}");
                }
                if settings.sched == Sched::Batch
                    && let Err(e) = crate::sys::set_thread_scheduling(0, true)
                {
                    tracing::warn!(worker = id, "cannot use SCHED_BATCH: {e}");
                }
                threads.set(id, crate::sys::thread_id());
                let listeners: Result<Vec<_>, String> = addresses
                    .iter()
                    .map(|a| {
                        listen(*a, settings.capture == Capture::Tproxy)
                            .map_err(|e| format!("cannot listen on {a}: {e}"))
                    })
                    .collect();
                let listeners = match listeners {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                let ready_on_error = ready.clone();
                crate::access_log::register_worker();
                let serve = async move {
                    let local = Rc::new(Local::new(published));
                    let drain = drain.worker(id);
                    let resolver = crate::dns::resolver::Resolver::new(
                        settings.dns_servers.clone(),
                        settings.mark,
                    );
                    let worker = Rc::new(Worker {
                        settings: Rc::new(settings),
                        balancer: Balancer::default(),
                        resolver,
                        pipes: crate::forward::splice::PipePool::default(),
                        rng: std::cell::RefCell::new(fastrand::Rng::new()),
                        metrics: crate::metrics::WorkerMetrics::new(metrics.clone(), id),
                        pool: crate::http::pool::Pool::default(),
                        timer: crate::coarse_timer::CoarseTimer::default(),
                    });
                    monoio::spawn(worker.timer.clone().sweep());
                    if worker.settings.idle_yields > 0 {
                        monoio::spawn(crate::idle_yield::run(worker.settings.idle_yields));
                    }
                    let publisher = worker.clone();
                    monoio::spawn(async move {
                        publisher
                            .metrics
                            .publish_loop(|| publisher.resolver.stats())
                            .await;
                    });
                    let mut open = Open::new(id, local, worker, drain);
                    for (addr, l) in addresses.iter().zip(listeners) {
                        if let Err(e) = open.serve(*addr, l) {
                            let _ = ready.send(Err(format!("cannot register a listener: {e}")));
                            return;
                        }
                    }
                    let _ = ready.send(Ok(()));
                    open.follow_reloads(&acks).await;
                };
                // DATAPLANE_IO_DRIVER=epoll forces the epoll driver (tests run both drivers).
                let result = if use_uring {
                    // Cooperative task running: io_uring completes this worker's operations
                    // when it next enters the kernel (every turn of its loop) instead of
                    // interrupting it with an inter-processor interrupt for each one.
                    let mut uring = io_uring::IoUring::builder();
                    uring.setup_coop_taskrun();
                    RuntimeBuilder::<FusionDriver>::new()
                        .uring_builder(uring)
                        .enable_timer()
                        .with_entries(1024)
                        .build()
                        .map(|mut rt| rt.block_on(serve))
                } else {
                    RuntimeBuilder::<monoio::LegacyDriver>::new()
                        .enable_timer()
                        .build()
                        .map(|mut rt| rt.block_on(serve))
                };
                if let Err(e) = result {
                    let _ = ready_on_error.send(Err(format!("cannot build the runtime: {e}")));
                }
            })?;
        handles.push(handle);
    }
    drop(ready_tx);
    for _ in 0..workers {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => anyhow::bail!(e),
            Err(_) => anyhow::bail!("a worker exited while starting"),
        }
    }
    Ok(handles)
}

/// How often a worker looks for a new generation, a drain, or a listener to close.
const POLL: Duration = Duration::from_millis(50);

/// A worker's listeners: each address with the flag that stops its accept loop.
struct Open {
    id: usize,
    local: Rc<Local>,
    worker: Rc<Worker>,
    drain: Rc<WorkerDrain>,
    listeners: HashMap<SocketAddr, Rc<Cell<bool>>>,
}

impl Open {
    fn new(id: usize, local: Rc<Local>, worker: Rc<Worker>, drain: Rc<WorkerDrain>) -> Self {
        Self {
            id,
            local,
            worker,
            drain,
            listeners: HashMap::new(),
        }
    }

    /// Accept on `listener` (bound to `addr`) until it is closed or the drain begins.
    fn serve(&mut self, addr: SocketAddr, listener: std::net::TcpListener) -> std::io::Result<()> {
        let listener = monoio::net::TcpListener::from_std(listener)?;
        let closed = Rc::new(Cell::new(false));
        monoio::spawn(crate::idle_yield::Active::new(accept_loop(
            listener,
            self.local.clone(),
            self.worker.clone(),
            self.drain.clone(),
            closed.clone(),
        )));
        self.listeners.insert(addr, closed);
        Ok(())
    }

    /// Apply every new generation: in `listeners` mode, bind the ports it adds and close the
    /// ones it removes (connections already accepted carry on); then acknowledge it. Never
    /// returns: the runtime must outlive the connections, drain or not.
    async fn follow_reloads(mut self, acks: &Acks) {
        let mut applied = 0;
        loop {
            let generation = self.local.published_generation();
            if generation != applied && !self.drain.is_draining() {
                if self.worker.settings.capture == Capture::Listeners {
                    let table = self.local.current();
                    let wanted = listen_addresses(&self.worker.settings, &table.ports());
                    self.apply(&wanted);
                }
                acks.ack(self.id, generation);
                applied = generation;
            }
            monoio::time::sleep(POLL).await;
        }
    }

    fn apply(&mut self, wanted: &[SocketAddr]) {
        let worker = self.id;
        self.listeners.retain(|addr, closed| {
            let keep = wanted.contains(addr);
            if !keep {
                closed.set(true);
                tracing::info!(worker, %addr, "listener closed: its port left the configuration");
            }
            keep
        });
        for &addr in wanted {
            if self.listeners.contains_key(&addr) {
                continue;
            }
            match listen(addr, false).and_then(|l| self.serve(addr, l)) {
                Ok(()) => tracing::info!(worker, %addr, "listener opened: a new port"),
                Err(e) => tracing::error!(worker, %addr, "cannot listen on a new port: {e}"),
            }
        }
    }
}

/// Resolves once the drain has begun or `closed` is set (checked every 50 ms).
async fn stop_requested(drain: &WorkerDrain, closed: &Cell<bool>) {
    while !drain.is_draining() && !closed.get() {
        monoio::time::sleep(POLL).await;
    }
}

/// Accept until the listener is closed by a reload or the drain begins, then drop it: new
/// connections are refused while the ones accepted run on, each counted until it ends.
async fn accept_loop(
    listener: monoio::net::TcpListener,
    local: Rc<Local>,
    worker: Rc<Worker>,
    drain: Rc<WorkerDrain>,
    closed: Rc<Cell<bool>>,
) {
    // One for the loop's lifetime: made per accept, it would put a runtime timer in and out of
    // the wheel for every connection.
    let mut stop = std::pin::pin!(stop_requested(&drain, &closed));
    loop {
        let accept = listener.accept();
        let mut accept = std::pin::pin!(accept);
        let (accepted, last) = monoio::select! {
            accepted = &mut accept => (accepted, false),
            () = stop.as_mut() => {
                // Stop the listener in the kernel first (connections waiting in its queue are
                // reset, so they are refused, not left waiting), then let the accept in flight
                // finish: an io_uring accept dropped just as it completes would leave its
                // connection open, owned by no task (seen: a client hung in a reload test).
                let _ = crate::sys::with_socket(&listener, |s| s.shutdown(std::net::Shutdown::Read));
                (accept.await, true)
            }
        };
        if last && accepted.is_err() {
            break;
        }
        match accepted {
            Ok((stream, _)) if drain.open() >= worker.settings.max_connections => {
                // At the limit: close at once (the client sees a reset or EOF, not a hang),
                // and count it; the loop goes straight back to accepting, nothing spins.
                drop(stream);
                worker.metrics.refused("max_connections");
            }
            Ok((stream, peer)) => {
                let table = local.current();
                let tracked = drain.track();
                // Two tasks per forwarded connection: setup (detection, routing, connecting),
                // then forwarding, which keeps none of the setup's state. Each future is made
                // inside its task: one made outside and awaited inside would be stored twice.
                let worker = worker.clone();
                monoio::spawn(crate::idle_yield::Active::new(async move {
                    if let Some(handoff) = conn::serve(&worker, table, stream, peer).await {
                        monoio::spawn(crate::idle_yield::Active::new(conn::forward_connected(
                            worker, handoff, tracked,
                        )));
                    }
                }));
            }
            Err(e) => {
                // EMFILE and friends: back off and keep serving the connections we have; the
                // pending connections wait in the kernel's backlog until descriptors free up.
                let emfile = e.raw_os_error() == Some(libc::EMFILE)
                    || e.raw_os_error() == Some(libc::ENFILE);
                worker.metrics.refused(if emfile {
                    "accept_emfile"
                } else {
                    "accept_error"
                });
                tracing::warn!("accept failed: {e}");
                monoio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        if last {
            break;
        }
    }
}

/// Run `future` to completion on a fresh runtime with a timer, on io_uring or epoll (tests
/// that hold a property under both drivers).
#[cfg(test)]
pub(crate) fn block_on_driver<F: Future>(uring: bool, future: F) -> F::Output {
    if uring {
        RuntimeBuilder::<monoio::IoUringDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
            .block_on(future)
    } else {
        RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
            .block_on(future)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_connections_inherit_nodelay_from_the_listener() {
        let listener = listen("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let accepted = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        assert!(accepted.nodelay().unwrap());
    }
}
