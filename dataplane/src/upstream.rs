//! Choosing an upstream address for a decision and connecting to it: marked sockets (so capture
//! rules can exempt the proxy's own traffic), a connect timeout, per-worker balancing of static
//! endpoints as the DestinationRule's `loadBalancer.simple` says (least request by power of two
//! weighted choices, Istio's default; round robin; random; passthrough), and per-worker outlier
//! detection (spec §10.4: consecutive 5xx or gateway errors eject an endpoint for the base
//! ejection time times its ejection count, within the maximum ejection percent).

use rustc_hash::FxHashMap;
use smallvec::{SmallVec, smallvec};
use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dataplane_config::spec::{LoadBalancer, OutlierDetection};
use dataplane_config::table::{
    Cluster, EndpointSocket, RouteTable, Target, Upstream, WeightedCluster,
};
use monoio::net::TcpStream;
use socket2::{Domain, Socket, Type};

use crate::coarse_timer::CoarseTimer;
use crate::dns::resolver::Resolver;
use crate::sys;

/// Why no upstream could be chosen or reached.
#[derive(Debug)]
pub enum UpstreamError {
    /// The route points at a destination that is not a service.
    NoCluster,
    /// The cluster has no endpoints.
    NoEndpoints,
    /// The cluster needs something this build does not do yet.
    Unsupported(&'static str),
    /// The upstream name did not resolve.
    Dns(String),
    /// The connect attempt timed out.
    ConnectTimeout,
    /// The connect attempt failed.
    Connect(io::Error),
    /// TLS origination failed (handshake, certificate).
    Tls(String),
    /// The upstream address is the proxy itself (Decisions 12).
    Loop,
    /// The original destination is not an address of the requested name
    /// (`--verify-original-destination`).
    DestinationMismatch(String),
}

impl UpstreamError {
    /// A short label for logs and metrics.
    pub fn reason(&self) -> String {
        match self {
            Self::NoCluster => "no_cluster".into(),
            Self::NoEndpoints => "no_healthy_upstream".into(),
            Self::Unsupported(what) => format!("unsupported: {what}"),
            Self::Dns(why) => format!("dns: {why}"),
            Self::ConnectTimeout => "connect_timeout".into(),
            Self::Connect(e) => format!("connect_failed: {e}"),
            Self::Tls(why) => format!("tls: {why}"),
            Self::Loop => "loop: the upstream is the proxy itself".into(),
            Self::DestinationMismatch(why) => format!("destination_mismatch: {why}"),
        }
    }
}

/// Pick a weighted entry at random (weights of zero are skipped unless all are zero).
pub fn pick_weighted<'a>(
    list: &'a [WeightedCluster],
    rng: &mut fastrand::Rng,
) -> Option<&'a WeightedCluster> {
    let total: u64 = list.iter().map(|w| u64::from(w.weight)).sum();
    if total == 0 {
        return list.first();
    }
    let mut at = rng.u64(0..total);
    list.iter().find(|w| {
        let hit = at < u64::from(w.weight);
        at = at.saturating_sub(u64::from(w.weight));
        hit
    })
}

/// The cluster a target sends a connection to `dst` to.
pub fn cluster_for<'t>(
    table: &'t RouteTable,
    target: &Target,
    dst: SocketAddr,
    rng: &mut fastrand::Rng,
) -> Result<&'t Cluster, UpstreamError> {
    let chosen = match target {
        Target::Cluster(id) => Some(*id),
        Target::Weighted(list) => {
            pick_weighted(list, rng)
                .ok_or(UpstreamError::NoCluster)?
                .cluster
        }
        Target::TcpRules(rules, default) => {
            match rules
                .iter()
                .find(|r| r.subnets.is_empty() || r.subnets.iter().any(|n| n.contains(&dst.ip())))
            {
                Some(rule) => {
                    pick_weighted(&rule.route, rng)
                        .ok_or(UpstreamError::NoCluster)?
                        .cluster
                }
                None => Some(*default),
            }
        }
    };
    chosen
        .map(|id| table.cluster(id))
        .ok_or(UpstreamError::NoCluster)
}

/// The addresses to try for one connection, in order: inline up to four (no allocation for the
/// common single-endpoint or small clusters).
pub type Candidates = SmallVec<[SocketAddr; 4]>;

/// Endpoints with their weights, inline up to four.
type Weighted = SmallVec<[(SocketAddr, u32); 4]>;

/// Per-worker balancer state: active connections per endpoint, rotations, endpoint health.
#[derive(Debug, Default)]
pub struct Balancer {
    active: RefCell<FxHashMap<SocketAddr, u32>>,
    /// Rotation of resolved addresses.
    next: std::cell::Cell<usize>,
    /// Round-robin position per cluster.
    round_robin: RefCell<FxHashMap<String, usize>>,
    /// Outlier-detection state per endpoint.
    health: RefCell<FxHashMap<SocketAddr, Health>>,
}

/// One endpoint's outlier-detection state.
#[derive(Debug, Clone, Copy, Default)]
struct Health {
    consecutive_5xx: u32,
    consecutive_gateway: u32,
    ejections: u32,
    ejected_until: Option<Instant>,
}

/// What an exchange with an endpoint ended with, for outlier detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response with this status.
    Status(u16),
    /// No response: connect failure, reset, timeout (counted as a 503, as Envoy does when
    /// local-origin errors are not split out).
    Failed,
}

/// A weighted random pick among `(item, weight)`; weights of zero count as one.
fn weighted_pick<T: Copy>(items: &[(T, u32)], rng: &mut fastrand::Rng) -> T {
    let total: u64 = items.iter().map(|(_, w)| u64::from((*w).max(1))).sum();
    let mut at = rng.u64(0..total.max(1));
    for (item, w) in items {
        let w = u64::from((*w).max(1));
        if at < w {
            return *item;
        }
        at -= w;
    }
    items[0].0
}

/// An active connection counted against its endpoint until dropped.
#[derive(Debug)]
pub struct Lease<'b> {
    balancer: &'b Balancer,
    addr: SocketAddr,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(n) = self.balancer.active.borrow_mut().get_mut(&self.addr) {
            *n = n.saturating_sub(1);
        }
    }
}

impl Balancer {
    /// The addresses to try for `cluster`, in order (connect failures fail over to the next):
    /// the original destination (NONE); one least-request pick, as power of two weighted
    /// choices, among static endpoints (Istio's default LEAST_REQUEST); every resolved address,
    /// rotated per connection (DNS), or the first (DNS_ROUND_ROBIN); the name the client asked
    /// for, resolved (DYNAMIC_DNS).
    pub async fn candidates(
        &self,
        cluster: &Cluster,
        dst: SocketAddr,
        requested: Option<&str>,
        resolver: &Resolver,
        rng: &mut fastrand::Rng,
    ) -> Result<Candidates, UpstreamError> {
        match &cluster.upstream {
            Upstream::OriginalDestination { port } => Ok(smallvec![SocketAddr::new(
                dst.ip(),
                port.unwrap_or(dst.port())
            )]),
            _ if cluster.policy.load_balancer == Some(LoadBalancer::Passthrough) => {
                Ok(smallvec![dst])
            }
            Upstream::Static(endpoints) => {
                let all: Weighted = endpoints
                    .iter()
                    .filter_map(|e| match e.address {
                        EndpointSocket::Inet(a) => Some((a, e.weight)),
                        EndpointSocket::Unix(_) => None,
                    })
                    .collect();
                if all.is_empty() {
                    return Err(if endpoints.is_empty() {
                        UpstreamError::NoEndpoints
                    } else {
                        UpstreamError::Unsupported("unix endpoints")
                    });
                }
                // Ejected endpoints are skipped while any other remains (Envoy's panic mode
                // uses them all when none is healthy). No clock is read while no endpoint has
                // a health record (records exist only for clusters with outlier detection,
                // from their first reported exchange).
                let healthy: Weighted = {
                    let health = self.health.borrow();
                    if health.is_empty() {
                        Weighted::new()
                    } else {
                        let now = Instant::now();
                        all.iter()
                            .copied()
                            .filter(|(a, _)| {
                                health
                                    .get(a)
                                    .and_then(|h| h.ejected_until)
                                    .is_none_or(|t| t <= now)
                            })
                            .collect()
                    }
                };
                let inet = if healthy.is_empty() { &all } else { &healthy };
                let chosen = match cluster.policy.load_balancer {
                    Some(LoadBalancer::RoundRobin) => {
                        let mut rr = self.round_robin.borrow_mut();
                        let at = rr.entry(cluster.name.clone()).or_default();
                        *at = at.wrapping_add(1);
                        inet[*at % inet.len()].0
                    }
                    Some(LoadBalancer::Random) => weighted_pick(inet, rng),
                    _ => {
                        let (a, b) = (weighted_pick(inet, rng), weighted_pick(inet, rng));
                        let active = self.active.borrow();
                        let load = |x: &SocketAddr| active.get(x).copied().unwrap_or(0);
                        if load(&b) < load(&a) { b } else { a }
                    }
                };
                // The others follow, for failover on connect errors.
                let mut order: Candidates = smallvec![chosen];
                order.extend(inet.iter().map(|(a, _)| *a).filter(|a| *a != chosen));
                Ok(order)
            }
            Upstream::Dns {
                targets,
                first_address_only,
            } => {
                let weighted: SmallVec<[(usize, u32); 4]> = targets
                    .iter()
                    .enumerate()
                    .map(|(i, t)| (i, t.weight))
                    .collect();
                if weighted.is_empty() {
                    return Err(UpstreamError::NoEndpoints);
                }
                let target = &targets[weighted_pick(&weighted, rng)];
                self.resolved(resolver, &target.name, target.port, *first_address_only)
                    .await
            }
            Upstream::RequestedName {
                port,
                first_address_only,
            } => {
                let name = requested.ok_or(UpstreamError::Unsupported(
                    "a wildcard service needs SNI or Host to resolve",
                ))?;
                self.resolved(resolver, name, *port, *first_address_only)
                    .await
            }
            Upstream::Empty => Err(UpstreamError::NoEndpoints),
        }
    }

    async fn resolved(
        &self,
        resolver: &Resolver,
        name: &str,
        port: u16,
        first_only: bool,
    ) -> Result<Candidates, UpstreamError> {
        let addrs = resolver
            .lookup(name)
            .await
            .map_err(|e| UpstreamError::Dns(format!("{name}: {e}")))?;
        if first_only {
            return Ok(smallvec![SocketAddr::new(addrs[0], port)]);
        }
        let start = self.next.get();
        self.next.set(start.wrapping_add(1));
        Ok((0..addrs.len())
            .map(|i| SocketAddr::new(addrs[(start + i) % addrs.len()], port))
            .collect())
    }

    /// Record how an exchange with `addr` of `cluster` ended (outlier detection, spec §10.4).
    pub fn report(&self, cluster: &Cluster, addr: SocketAddr, outcome: Outcome) {
        let Some(od) = &cluster.policy.outlier_detection else {
            return;
        };
        let status = match outcome {
            Outcome::Status(s) => s,
            Outcome::Failed => 503,
        };
        let mut health = self.health.borrow_mut();
        let h = health.entry(addr).or_default();
        if status >= 500 {
            h.consecutive_5xx += 1;
        } else {
            h.consecutive_5xx = 0;
        }
        if matches!(status, 502..=504) {
            h.consecutive_gateway += 1;
        } else {
            h.consecutive_gateway = 0;
        }
        let tripped = (od.consecutive_5xx_errors > 0
            && h.consecutive_5xx >= od.consecutive_5xx_errors)
            || (od.consecutive_gateway_errors > 0
                && h.consecutive_gateway >= od.consecutive_gateway_errors);
        if !tripped || h.ejected_until.is_some_and(|t| t > Instant::now()) {
            return;
        }
        h.consecutive_5xx = 0;
        h.consecutive_gateway = 0;
        if !may_eject(od, cluster, &health) {
            return;
        }
        let h = health.entry(addr).or_default();
        h.ejections += 1;
        h.ejected_until = Some(Instant::now() + od.base_ejection_time * h.ejections);
        tracing::info!(
            cluster = %cluster.name,
            endpoint = %addr,
            ejections = h.ejections,
            "outlier detection ejected an endpoint"
        );
    }

    /// Count a connection against `addr` until the lease is dropped.
    pub fn lease(&self, addr: SocketAddr) -> Lease<'_> {
        *self.active.borrow_mut().entry(addr).or_default() += 1;
        Lease {
            balancer: self,
            addr,
        }
    }
}

/// Whether one more endpoint of `cluster` may be ejected: the share already ejected is below
/// `maxEjectionPercent` (Envoy ejects at least one host when the percent allows any).
fn may_eject(
    od: &OutlierDetection,
    cluster: &Cluster,
    health: &FxHashMap<SocketAddr, Health>,
) -> bool {
    let Upstream::Static(endpoints) = &cluster.upstream else {
        return od.max_ejection_percent > 0;
    };
    let now = Instant::now();
    let total = endpoints.len().max(1) as u64;
    let ejected = endpoints
        .iter()
        .filter(|e| match e.address {
            EndpointSocket::Inet(a) => health
                .get(&a)
                .and_then(|h| h.ejected_until)
                .is_some_and(|t| t > now),
            EndpointSocket::Unix(_) => false,
        })
        .count() as u64;
    ejected * 100 < u64::from(od.max_ejection_percent) * total
}

/// `--verify-original-destination`: the original destination `dst` of a connection routed to a
/// resolution-NONE service must be one of the addresses `name` (its SNI or Host) resolves to.
pub async fn verify_destination(
    resolver: &Resolver,
    name: &str,
    dst: std::net::IpAddr,
) -> Result<(), UpstreamError> {
    let addrs = resolver
        .lookup(name)
        .await
        .map_err(|e| UpstreamError::Dns(format!("{name}: {e}")))?;
    let dst = match dst {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(dst, std::net::IpAddr::V4),
        ip => ip,
    };
    if addrs.contains(&dst) {
        Ok(())
    } else {
        Err(UpstreamError::DestinationMismatch(format!(
            "{dst} is not an address of {name}"
        )))
    }
}

/// Connect to `addr` from a socket carrying `mark` (0: none), within `timeout` on the worker's
/// coarse timer (a runtime timer per connection costs a trip through the runtime's wheel). The
/// socket is non-blocking, which splice relies on.
pub async fn connect_within(
    addr: SocketAddr,
    mark: u32,
    timeout: Duration,
    timer: &CoarseTimer,
) -> Result<TcpStream, UpstreamError> {
    timer
        .timeout(timeout, connect(addr, mark))
        .await
        .unwrap_or(Err(UpstreamError::ConnectTimeout))
}

/// Connect to `addr` from a socket carrying `mark` (0: none), however long it takes: the caller
/// bounds it (see [`connect_within`]). The socket is non-blocking, which splice relies on.
pub async fn connect(addr: SocketAddr, mark: u32) -> Result<TcpStream, UpstreamError> {
    // Non-blocking from the start (`SOCK_NONBLOCK`): no system call to make it so.
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM.nonblocking(), None)
        .map_err(UpstreamError::Connect)?;
    if mark != 0 {
        socket.set_mark(mark).map_err(UpstreamError::Connect)?;
    }
    socket
        .set_tcp_nodelay(true)
        .map_err(UpstreamError::Connect)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(UpstreamError::Connect(e)),
    }
    let stream =
        TcpStream::from_std(std::net::TcpStream::from(socket)).map_err(UpstreamError::Connect)?;
    stream
        .writable(true)
        .await
        .map_err(UpstreamError::Connect)?;
    if let Some(e) =
        sys::with_socket(&stream, |s| s.take_error()).map_err(UpstreamError::Connect)?
    {
        return Err(UpstreamError::Connect(e));
    }
    Ok(stream)
}
