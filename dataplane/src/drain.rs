//! Graceful drain. SIGTERM, SIGINT or `POST /drain` asks for it; then readiness goes 503, every
//! worker closes its listeners (new connections are refused), connections in flight finish
//! until `--drain-timeout`, and the process exits 0. A signal during the drain exits at once.
//!
//! Workers count their open connections each in a cache-padded cell of their own, so the
//! count costs no shared cache line on the hot path; the main thread sums the cells.

use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use crossbeam_utils::CachePadded;

/// How often a worker looks for the drain flag, and the main thread for the last connection.
const POLL: Duration = Duration::from_millis(50);

/// Who asked for the drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// SIGTERM or SIGINT.
    Signal,
    /// `POST /drain` on the admin server.
    Admin,
}

/// Shared drain state: the flag and the per-worker connection counts.
#[derive(Debug)]
pub struct Drain {
    draining: AtomicBool,
    active: Box<[CachePadded<AtomicUsize>]>,
    requests: Sender<Trigger>,
}

/// How the drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every connection finished.
    Drained,
    /// `--drain-timeout` passed with this many connections still open.
    TimedOut(usize),
    /// A second signal: exit at once, with this many connections open.
    Forced(usize),
}

impl Drain {
    /// State for `workers` workers, and the receiver of drain requests for [`Drain::supervise`].
    pub fn new(workers: usize) -> (Arc<Self>, Receiver<Trigger>) {
        let (requests, rx) = crossbeam_channel::unbounded();
        let active = (0..workers.max(1))
            .map(|_| CachePadded::new(AtomicUsize::new(0)))
            .collect();
        let drain = Self {
            draining: AtomicBool::new(false),
            active,
            requests,
        };
        (Arc::new(drain), rx)
    }

    /// Ask for a drain (idempotent).
    pub fn request(&self, trigger: Trigger) {
        let _ = self.requests.send(trigger);
    }

    /// Whether the drain has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Open connections over every worker.
    pub fn active(&self) -> usize {
        self.active.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// The handle worker `id` counts its connections with.
    pub fn worker(self: &Arc<Self>, id: usize) -> Rc<WorkerDrain> {
        Rc::new(WorkerDrain {
            drain: self.clone(),
            id: id % self.active.len(),
        })
    }

    /// Forward SIGTERM and SIGINT as drain requests, from a thread of its own.
    pub fn watch_signals(self: &Arc<Self>) -> std::io::Result<()> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
        let drain = self.clone();
        std::thread::Builder::new()
            .name("drain-signals".into())
            .spawn(move || {
                for _ in signals.forever() {
                    drain.request(Trigger::Signal);
                }
            })?;
        Ok(())
    }

    /// On the main thread: wait for a request, drain, and say how it ended.
    pub fn supervise(&self, requests: &Receiver<Trigger>, timeout: Duration) -> Outcome {
        // `self` holds a sender, so the channel never disconnects while we wait.
        let Ok(trigger) = requests.recv() else {
            return Outcome::Drained;
        };
        self.draining.store(true, Ordering::Release);
        tracing::info!(
            ?trigger,
            active = self.active(),
            timeout = ?timeout,
            "draining: readiness is 503, listeners close, connections in flight may finish"
        );
        let deadline = Instant::now() + timeout;
        loop {
            let active = self.active();
            if active == 0 {
                return Outcome::Drained;
            }
            let now = Instant::now();
            if now >= deadline {
                return Outcome::TimedOut(active);
            }
            match requests.recv_timeout(POLL.min(deadline - now)) {
                Ok(Trigger::Signal) => return Outcome::Forced(self.active()),
                Ok(Trigger::Admin) | Err(_) => {}
            }
        }
    }
}

/// One worker's view of the drain.
#[derive(Debug)]
pub struct WorkerDrain {
    drain: Arc<Drain>,
    id: usize,
}

impl WorkerDrain {
    /// Count a connection until the returned guard drops.
    pub fn track(self: &Rc<Self>) -> Tracked {
        self.drain.active[self.id].fetch_add(1, Ordering::Relaxed);
        Tracked(self.clone())
    }

    /// Whether the drain has begun.
    pub fn is_draining(&self) -> bool {
        self.drain.is_draining()
    }

    /// Connections this worker has open.
    pub fn open(&self) -> usize {
        self.drain.active[self.id].load(Ordering::Relaxed)
    }
}

/// An open connection, counted until dropped.
#[derive(Debug)]
pub struct Tracked(Rc<WorkerDrain>);

impl Drop for Tracked {
    fn drop(&mut self) {
        self.0.drain.active[self.0.id].fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn drained_when_the_last_connection_closes() {
        let (drain, rx) = Drain::new(2);
        let (opened_tx, opened) = std::sync::mpsc::channel();
        let shared = drain.clone();
        // A worker's handle is !Send: the connection lives and ends on a thread of its own.
        let closer = std::thread::spawn(move || {
            let w = shared.worker(1);
            let conn = w.track();
            opened_tx.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(100));
            drop(conn);
        });
        opened.recv().unwrap();
        assert_eq!(drain.active(), 1);
        drain.request(Trigger::Admin);
        let outcome = drain.supervise(&rx, Duration::from_secs(10));
        closer.join().unwrap();
        assert_eq!(outcome, Outcome::Drained);
        assert!(drain.is_draining());
    }

    #[test]
    fn times_out_with_connections_open_and_a_signal_forces() {
        let (drain, rx) = Drain::new(1);
        let w = drain.worker(0);
        let _conn = w.track();
        drain.request(Trigger::Admin);
        let outcome = drain.supervise(&rx, Duration::from_millis(120));
        assert_eq!(outcome, Outcome::TimedOut(1));

        let (drain, rx) = Drain::new(1);
        let w = drain.worker(0);
        let _conn = w.track();
        drain.request(Trigger::Signal);
        drain.request(Trigger::Signal);
        assert_eq!(
            drain.supervise(&rx, Duration::from_secs(30)),
            Outcome::Forced(1)
        );
    }
}
