//! Per-worker pools of idle upstream HTTP/1.1 connections, keyed by endpoint and TLS identity
//! (the client configuration and SNI), with DestinationRule `connectionPool` limits:
//! `idleTimeout` (default 1 h), `maxRequestsPerConnection`, and `maxConnections` with
//! `http1MaxPendingRequests` counted per cluster on this worker (Envoy counts them per proxy;
//! with N workers a cluster may hold up to N times the limit).
//!
//! A connection is checked out for one exchange and put back only when the exchange left it
//! clean (response complete, no `Connection: close`). An idle connection is checked with a
//! non-blocking peek before reuse: one the origin closed (or that has stray bytes) is dropped.

use rustc_hash::FxHashMap;
use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::io::{Buffered, UpstreamIo};
use super::response::ResponseHead;
use crate::sys;

/// Istio's default idle timeout for upstream HTTP connections.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(3600);
/// Idle connections kept per key at most.
const MAX_IDLE_PER_KEY: usize = 64;
/// A sweep of expired connections runs when this many are idle.
const SWEEP_AT: usize = 1024;

/// What makes two upstream connections interchangeable.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    /// Endpoint.
    pub addr: SocketAddr,
    /// TLS client configuration (its address) and SNI; `None` for plaintext.
    pub tls: Option<(usize, String)>,
}

/// A [`Key`] with its SNI borrowed, to look up idle connections without copying the name.
/// Hashes as the `Key` it equals does (the derived `Hash` of both hashes the same fields the
/// same way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyRef<'a> {
    /// Endpoint.
    pub addr: SocketAddr,
    /// TLS client configuration (its address) and SNI; `None` for plaintext.
    pub tls: Option<(usize, &'a str)>,
}

impl KeyRef<'_> {
    /// The owned key.
    pub fn to_key(self) -> Key {
        Key {
            addr: self.addr,
            tls: self.tls.map(|(config, sni)| (config, sni.to_owned())),
        }
    }
}

impl hashbrown::Equivalent<Key> for KeyRef<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        self.addr == key.addr
            && match (self.tls, &key.tls) {
                (None, None) => true,
                (Some((c, n)), Some((kc, kn))) => c == *kc && n == kn,
                _ => false,
            }
    }
}

/// An upstream connection with its read buffer and bookkeeping.
pub struct Pooled {
    /// The stream and bytes read from it.
    pub conn: Buffered<UpstreamIo>,
    /// Its endpoint and TLS identity: where it goes back to in the pool.
    pub key: Key,
    /// Requests sent on it so far.
    pub requests: u32,
    /// Whether it came out of the pool (a failure before any response byte may be a race with
    /// the origin's idle close, and is retried once on a fresh connection).
    pub reused: bool,
    /// Where its responses' heads are parsed, reused from one response to the next.
    pub response: ResponseHead,
    _open: OpenGuard,
}

/// A connection counted against its cluster's `maxConnections` before it exists.
pub struct Slot(OpenGuard);

/// Counts an open connection against its cluster until dropped.
struct OpenGuard(Rc<Cell<u32>>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

struct Idle {
    conn: Box<Pooled>,
    since: Instant,
}

/// A worker's pool.
#[derive(Default)]
pub struct Pool {
    idle: RefCell<hashbrown::HashMap<Key, Vec<Idle>, rustc_hash::FxBuildHasher>>,
    idle_count: Cell<usize>,
    open: RefCell<FxHashMap<String, Rc<Cell<u32>>>>,
    pending: RefCell<FxHashMap<String, Rc<Cell<u32>>>>,
}

/// A request waiting for a connection of a full pool, counted until dropped.
pub struct Pending(Rc<Cell<u32>>);

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

impl Pool {
    /// An idle connection for `key` that is still usable, if any. `trust_recent`: the
    /// request can be sent again on a fresh connection if this one turns out to be closed, so
    /// one back for under [`TRUSTED_FOR`] is taken without asking the kernel.
    pub fn checkout(
        &self,
        key: KeyRef<'_>,
        idle_timeout: Duration,
        trust_recent: bool,
    ) -> Option<Box<Pooled>> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(&key)?;
        while let Some(entry) = list.pop() {
            self.idle_count.set(self.idle_count.get().saturating_sub(1));
            let usable = entry.conn.conn.data().is_empty()
                && match reuse(entry.since.elapsed(), idle_timeout, trust_recent) {
                    Reuse::Expired => false,
                    Reuse::Trusted => true,
                    Reuse::AskKernel => sys::idle_socket_is_quiet(entry.conn.conn.io.raw_fd()),
                };
            if usable {
                let mut conn = entry.conn;
                conn.reused = true;
                return Some(conn);
            }
        }
        None
    }

    /// Open connections of `cluster` on this worker.
    pub fn open_count(&self, cluster: &str) -> u32 {
        self.open.borrow().get(cluster).map_or(0, |c| c.get())
    }

    /// Count a request as pending on `cluster`'s full pool, unless `max` already wait.
    pub fn pend(&self, cluster: &str, max: u32) -> Option<Pending> {
        let counter = self
            .pending
            .borrow_mut()
            .entry(cluster.to_owned())
            .or_default()
            .clone();
        if counter.get() >= max {
            return None;
        }
        counter.set(counter.get() + 1);
        Some(Pending(counter))
    }

    /// Count a connection about to be opened against `cluster` (before connecting, so
    /// concurrent requests see it); dropping the slot uncounts it.
    pub fn reserve(&self, cluster: &str) -> Slot {
        let counter = self
            .open
            .borrow_mut()
            .entry(cluster.to_owned())
            .or_default()
            .clone();
        counter.set(counter.get() + 1);
        Slot(OpenGuard(counter))
    }

    /// A new connection, counted by its slot. Boxed once, here: checked out, relayed on and put
    /// back, it then moves as a pointer (moved whole, its 352 bytes were copied about a dozen
    /// times per request).
    pub fn adopt(&self, slot: Slot, key: Key, io: UpstreamIo) -> Box<Pooled> {
        Box::new(Pooled {
            conn: Buffered::new(io, Vec::new()),
            key,
            requests: 0,
            reused: false,
            response: ResponseHead::default(),
            _open: slot.0,
        })
    }

    /// Return a connection after a clean exchange, under the key it was opened with.
    pub fn put(&self, mut conn: Box<Pooled>, idle_timeout: Duration) {
        conn.conn.shrink();
        let mut idle = self.idle.borrow_mut();
        if self.idle_count.get() >= SWEEP_AT {
            let mut kept = 0;
            idle.retain(|_, list| {
                list.retain(|e| e.since.elapsed() < idle_timeout);
                kept += list.len();
                !list.is_empty()
            });
            self.idle_count.set(kept);
        }
        // The key is copied only for the first idle connection under it.
        let list = match idle.get_mut(&conn.key) {
            Some(list) => list,
            None => idle.entry(conn.key.clone()).or_default(),
        };
        if list.len() >= MAX_IDLE_PER_KEY {
            return;
        }
        list.push(Idle {
            conn,
            since: Instant::now(),
        });
        self.idle_count.set(self.idle_count.get() + 1);
    }
}

/// How long a connection back in the pool is reused, for a request that can be retried,
/// without asking the kernel whether the origin closed it or wrote to it meanwhile. Asking is
/// a `recv` that would block: under load, the one system call an S4 or S6 request makes on its
/// own (the runtime's `io_uring_enter` and yields are shared by many requests). Its answer only
/// narrows the race with an origin's close (the origin may close just after it), so a request
/// that fails on a reused connection before any response byte is already sent again on a
/// fresh one (`http::proxy`); a bodyless request always can be. An origin closes an idle
/// connection at its keep-alive timeout (nginx's default is 75 s), rarely within a
/// millisecond of a response that did not announce it.
pub const TRUSTED_FOR: Duration = Duration::from_millis(1);

/// What to do with an idle connection of `age` when a request would reuse it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reuse {
    /// Idle for the pool's idle timeout or longer: closed, not reused.
    Expired,
    /// Back so recently that a failure is cheaper to retry than to look for.
    Trusted,
    /// Ask the kernel whether the origin closed it or sent anything.
    AskKernel,
}

fn reuse(age: Duration, idle_timeout: Duration, trust_recent: bool) -> Reuse {
    if age >= idle_timeout {
        Reuse::Expired
    } else if trust_recent && age < TRUSTED_FOR {
        Reuse::Trusted
    } else {
        Reuse::AskKernel
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_retriable_request_reuses_a_just_returned_connection_without_asking() {
        let ms = Duration::from_millis;
        let us = Duration::from_micros;
        for (age, idle_timeout, trust_recent, want) in [
            (us(10), ms(60_000), true, Reuse::Trusted),
            (us(999), ms(60_000), true, Reuse::Trusted),
            (ms(1), ms(60_000), true, Reuse::AskKernel),
            (ms(5_000), ms(60_000), true, Reuse::AskKernel),
            (us(10), ms(60_000), false, Reuse::AskKernel),
            (ms(60_000), ms(60_000), true, Reuse::Expired),
            (ms(61_000), ms(60_000), false, Reuse::Expired),
            // An idle timeout shorter than the trusted time still expires first.
            (us(600), us(500), true, Reuse::Expired),
        ] {
            assert_eq!(
                reuse(age, idle_timeout, trust_recent),
                want,
                "{age:?} {idle_timeout:?} {trust_recent}"
            );
        }
    }

    #[test]
    fn a_borrowed_key_finds_exactly_its_owned_key() {
        let addr: SocketAddr = "192.0.2.1:443".parse().unwrap();
        let other: SocketAddr = "192.0.2.2:443".parse().unwrap();
        let mut map: hashbrown::HashMap<Key, u8, rustc_hash::FxBuildHasher> =
            hashbrown::HashMap::default();
        let tls = KeyRef {
            addr,
            tls: Some((7, "a.example")),
        };
        let plain = KeyRef { addr, tls: None };
        map.insert(tls.to_key(), 1);
        map.insert(plain.to_key(), 2);
        assert_eq!(map.get(&tls), Some(&1));
        assert_eq!(map.get(&plain), Some(&2));
        for miss in [
            KeyRef {
                addr,
                tls: Some((7, "b.example")),
            },
            KeyRef {
                addr,
                tls: Some((8, "a.example")),
            },
            KeyRef {
                addr,
                tls: Some((7, "")),
            },
            KeyRef {
                addr: other,
                tls: Some((7, "a.example")),
            },
            KeyRef {
                addr: other,
                tls: None,
            },
        ] {
            assert_eq!(map.get(&miss), None, "{miss:?}");
        }
    }
}
