//! A per-worker async resolver: UDP with retransmission, TCP on truncation, servers in order,
//! answers cached by TTL (negative ones too). Sockets carry the proxy's mark so capture rules do
//! not redirect the proxy's own queries.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::io::{AsyncReadRentExt, AsyncWriteRentExt};
use monoio::net::udp::UdpSocket;
use socket2::{Domain, Socket, Type};

use super::message::{self, Answer, BadAnswer};
use crate::upstream;

/// How long one UDP attempt waits.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(1500);
/// Attempts per server.
const ATTEMPTS: usize = 2;
/// Largest UDP answer read.
const MAX_UDP: usize = 4096;

/// Why a name could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsError {
    /// The name does not exist.
    NxDomain,
    /// The name has no A records.
    NoData,
    /// No server answered usefully.
    Failed(String),
}

impl std::fmt::Display for DnsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NxDomain => f.write_str("NXDOMAIN"),
            Self::NoData => f.write_str("no A records"),
            Self::Failed(why) => f.write_str(why),
        }
    }
}

#[derive(Debug, Clone)]
struct Cached {
    result: Result<Rc<[IpAddr]>, DnsError>,
    expires: Instant,
}

/// The resolver of one worker.
#[derive(Debug)]
pub struct Resolver {
    servers: Vec<SocketAddr>,
    mark: u32,
    cache: RefCell<HashMap<String, Cached>>,
    stats: std::cell::Cell<DnsStats>,
}

/// Lookups that went to the servers (cache misses), by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DnsStats {
    /// Answered with addresses.
    pub answered: u64,
    /// NXDOMAIN.
    pub nxdomain: u64,
    /// The name exists without addresses.
    pub nodata: u64,
    /// No usable answer (timeouts, SERVFAIL, garbage, no server).
    pub failed: u64,
}

impl Resolver {
    /// A resolver asking `servers` in order.
    pub fn new(servers: Vec<SocketAddr>, mark: u32) -> Self {
        Self {
            servers,
            mark,
            cache: RefCell::new(HashMap::new()),
            stats: std::cell::Cell::new(DnsStats::default()),
        }
    }

    /// Counts so far.
    pub fn stats(&self) -> DnsStats {
        self.stats.get()
    }

    /// The addresses of `name` (an IP literal is its own answer).
    pub async fn lookup(&self, name: &str) -> Result<Rc<[IpAddr]>, DnsError> {
        if let Ok(ip) = name.parse::<IpAddr>() {
            return Ok(Rc::from([ip]));
        }
        let key = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(hit) = self
            .cache
            .borrow()
            .get(&key)
            .filter(|c| c.expires > Instant::now())
        {
            return hit.result.clone();
        }
        let (result, ttl) = self.query(&key).await;
        let mut stats = self.stats.get();
        match &result {
            Ok(_) => stats.answered += 1,
            Err(DnsError::NxDomain) => stats.nxdomain += 1,
            Err(DnsError::NoData) => stats.nodata += 1,
            Err(_) => stats.failed += 1,
        }
        self.stats.set(stats);
        if let Some(ttl) = ttl {
            let mut cache = self.cache.borrow_mut();
            if cache.len() > 10_000 {
                let now = Instant::now();
                cache.retain(|_, c| c.expires > now);
            }
            cache.insert(
                key,
                Cached {
                    result: result.clone(),
                    expires: Instant::now() + ttl,
                },
            );
        }
        result
    }

    /// Ask the servers; the TTL to cache the result for (`None`: do not cache).
    async fn query(&self, name: &str) -> (Result<Rc<[IpAddr]>, DnsError>, Option<Duration>) {
        let mut last = String::from("no DNS server configured");
        for server in &self.servers {
            for _ in 0..ATTEMPTS {
                let id = fastrand::u16(..);
                let Ok(query) = message::query(id, name) else {
                    return (
                        Err(DnsError::Failed(format!("invalid name {name:?}"))),
                        None,
                    );
                };
                let mut answer = self.udp(*server, &query, id, name).await;
                if matches!(answer, Ok(Answer::Truncated)) {
                    answer = self.tcp(*server, &query, id, name).await;
                }
                match answer {
                    Ok(Answer::Addresses { addrs, ttl }) => {
                        return (Ok(Rc::from(addrs)), Some(ttl));
                    }
                    Ok(Answer::Negative {
                        ttl,
                        nxdomain: true,
                    }) => return (Err(DnsError::NxDomain), Some(ttl)),
                    Ok(Answer::Negative {
                        ttl,
                        nxdomain: false,
                    }) => return (Err(DnsError::NoData), Some(ttl)),
                    Ok(Answer::ServerError(code)) => {
                        last = format!("{server}: {code}");
                        break;
                    }
                    Ok(Answer::Truncated) => last = format!("{server}: truncated over TCP"),
                    Err(why) => last = format!("{server}: {why}"),
                }
            }
        }
        (Err(DnsError::Failed(last)), None)
    }

    fn socket(&self, server: SocketAddr, kind: Type) -> std::io::Result<Socket> {
        let socket = Socket::new(Domain::for_address(server), kind, None)?;
        if self.mark != 0 {
            socket.set_mark(self.mark)?;
        }
        socket.set_nonblocking(true)?;
        Ok(socket)
    }

    async fn udp(
        &self,
        server: SocketAddr,
        query: &[u8],
        id: u16,
        name: &str,
    ) -> Result<Answer, String> {
        let socket = self
            .socket(server, Type::DGRAM)
            .map_err(|e| e.to_string())?;
        let bind: SocketAddr = if server.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            ([0u16; 8], 0).into()
        };
        socket.bind(&bind.into()).map_err(|e| e.to_string())?;
        let udp =
            UdpSocket::from_std(std::net::UdpSocket::from(socket)).map_err(|e| e.to_string())?;
        udp.connect(server).await.map_err(|e| e.to_string())?;
        let (res, _) = udp.send(query.to_vec()).await;
        res.map_err(|e| e.to_string())?;
        let deadline = Instant::now() + ATTEMPT_TIMEOUT;
        loop {
            let left = deadline
                .checked_duration_since(Instant::now())
                .ok_or("timeout")?;
            let buf = Vec::with_capacity(MAX_UDP);
            let (res, buf) = monoio::time::timeout(left, udp.recv(buf))
                .await
                .map_err(|_| "timeout")?;
            res.map_err(|e| e.to_string())?;
            match message::answer(&buf, id, name) {
                Ok(a) => return Ok(a),
                // An answer to another query: keep waiting for ours.
                Err(BadAnswer::Mismatch) => continue,
                Err(BadAnswer::Malformed(e)) => return Err(format!("malformed answer: {e}")),
            }
        }
    }

    async fn tcp(
        &self,
        server: SocketAddr,
        query: &[u8],
        id: u16,
        name: &str,
    ) -> Result<Answer, String> {
        let mut stream =
            monoio::time::timeout(ATTEMPT_TIMEOUT, upstream::connect(server, self.mark))
                .await
                .map_err(|_| upstream::UpstreamError::ConnectTimeout.reason())?
                .map_err(|e| e.reason())?;
        let mut framed = (query.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(query);
        let exchange = async {
            let (res, _) = stream.write_all(framed).await;
            res?;
            let (res, len) = stream.read_exact(vec![0u8; 2]).await;
            res?;
            let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
            let (res, body) = stream.read_exact(vec![0u8; len]).await;
            res?;
            Ok::<_, std::io::Error>(body)
        };
        let body = monoio::time::timeout(ATTEMPT_TIMEOUT, exchange)
            .await
            .map_err(|_| "timeout".to_owned())?
            .map_err(|e| e.to_string())?;
        message::answer(&body, id, name).map_err(|e| format!("{e:?}"))
    }
}
