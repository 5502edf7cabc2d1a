//! Choosing an upstream address for a decision and connecting to it: marked sockets (so capture
//! rules can exempt the proxy's own traffic), a connect timeout, and per-worker least-request
//! balancing (power of two choices, weighted).

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use dataplane_config::table::{
    Cluster, EndpointSocket, RouteTable, Target, Upstream, WeightedCluster,
};
use monoio::net::TcpStream;
use socket2::{Domain, Socket, Type};

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

/// Per-worker balancer state: active connections per endpoint.
#[derive(Debug, Default)]
pub struct Balancer {
    active: RefCell<HashMap<SocketAddr, u32>>,
    /// Rotation of resolved addresses.
    next: std::cell::Cell<usize>,
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
    ) -> Result<Vec<SocketAddr>, UpstreamError> {
        match &cluster.upstream {
            Upstream::OriginalDestination { port } => {
                Ok(vec![SocketAddr::new(dst.ip(), port.unwrap_or(dst.port()))])
            }
            Upstream::Static(endpoints) => {
                let inet: Vec<(SocketAddr, u32)> = endpoints
                    .iter()
                    .filter_map(|e| match e.address {
                        EndpointSocket::Inet(a) => Some((a, e.weight)),
                        EndpointSocket::Unix(_) => None,
                    })
                    .collect();
                if inet.is_empty() {
                    return Err(if endpoints.is_empty() {
                        UpstreamError::NoEndpoints
                    } else {
                        UpstreamError::Unsupported("unix endpoints")
                    });
                }
                let (a, b) = (weighted_pick(&inet, rng), weighted_pick(&inet, rng));
                let active = self.active.borrow();
                let load = |x: &SocketAddr| active.get(x).copied().unwrap_or(0);
                Ok(vec![if load(&b) < load(&a) { b } else { a }])
            }
            Upstream::Dns {
                targets,
                first_address_only,
            } => {
                let weighted: Vec<(usize, u32)> = targets
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
    ) -> Result<Vec<SocketAddr>, UpstreamError> {
        let addrs = resolver
            .lookup(name)
            .await
            .map_err(|e| UpstreamError::Dns(format!("{name}: {e}")))?;
        if first_only {
            return Ok(vec![SocketAddr::new(addrs[0], port)]);
        }
        let start = self.next.get();
        self.next.set(start.wrapping_add(1));
        Ok((0..addrs.len())
            .map(|i| SocketAddr::new(addrs[(start + i) % addrs.len()], port))
            .collect())
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

/// Connect to `addr` from a socket carrying `mark` (0: none), within `timeout`.
pub async fn connect(
    addr: SocketAddr,
    mark: u32,
    timeout: Duration,
) -> Result<TcpStream, UpstreamError> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)
        .map_err(UpstreamError::Connect)?;
    if mark != 0 {
        socket.set_mark(mark).map_err(UpstreamError::Connect)?;
    }
    socket
        .set_nonblocking(true)
        .map_err(UpstreamError::Connect)?;
    socket
        .set_tcp_nodelay(true)
        .map_err(UpstreamError::Connect)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(115) => {} // EINPROGRESS
        Err(e) => return Err(UpstreamError::Connect(e)),
    }
    let stream =
        TcpStream::from_std(std::net::TcpStream::from(socket)).map_err(UpstreamError::Connect)?;
    match monoio::time::timeout(timeout, stream.writable(true)).await {
        Err(_) => return Err(UpstreamError::ConnectTimeout),
        Ok(Err(e)) => return Err(UpstreamError::Connect(e)),
        Ok(Ok(())) => {}
    }
    if let Some(e) =
        sys::with_socket(&stream, |s| s.take_error()).map_err(UpstreamError::Connect)?
    {
        return Err(UpstreamError::Connect(e));
    }
    Ok(stream)
}
