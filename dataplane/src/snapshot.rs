//! Route-table snapshots shared with the workers: one `ArcSwap` plus a generation counter.
//! A worker checks the generation (one relaxed atomic load per accept) and reloads its own
//! `Rc` handle only when it changed; each connection keeps the table it started with.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use crossbeam_utils::CachePadded;
use dataplane_config::table::RouteTable;

use crate::origination::Contexts;

/// One configuration generation as the workers use it: the route table and what was built
/// for it off the workers (TLS client configurations, from files).
#[derive(Debug)]
pub struct Snapshot {
    /// The compiled table.
    pub table: RouteTable,
    /// TLS origination per cluster.
    pub tls: Contexts,
}

impl Snapshot {
    /// Build everything `table` needs (reads certificate files: not for a worker thread).
    pub fn build(table: RouteTable) -> Self {
        let tls = Contexts::build(&table);
        for (i, why) in tls.failures() {
            tracing::warn!(cluster = %table.clusters[i].name, "TLS origination unavailable: {why}");
        }
        Self { table, tls }
    }
}

impl std::ops::Deref for Snapshot {
    type Target = RouteTable;
    fn deref(&self) -> &RouteTable {
        &self.table
    }
}

/// The published snapshot.
#[derive(Debug)]
pub struct Published {
    table: ArcSwap<Snapshot>,
    generation: AtomicU64,
}

impl Published {
    /// Generation 1.
    pub fn new(snapshot: Snapshot) -> Self {
        Self {
            table: ArcSwap::from_pointee(snapshot),
            generation: AtomicU64::new(1),
        }
    }

    /// Publish a new snapshot: one pointer swap, then the generation.
    pub fn publish(&self, snapshot: Snapshot) -> u64 {
        self.table.store(Arc::new(snapshot));
        self.generation.fetch_add(1, Ordering::Release) + 1
    }

    /// The current snapshot (for the admin and control threads).
    pub fn current(&self) -> Arc<Snapshot> {
        self.table.load_full()
    }

    /// The current generation.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

/// The generation each worker has applied (its listeners bound or closed to match), each in a
/// cache-padded cell of its own. A reload counts as applied when every cell holds it.
#[derive(Debug)]
pub struct Acks {
    applied: Box<[CachePadded<AtomicU64>]>,
}

impl Acks {
    /// Cells for `workers` workers, none applied yet.
    pub fn new(workers: usize) -> Self {
        let applied = (0..workers.max(1))
            .map(|_| CachePadded::new(AtomicU64::new(0)))
            .collect();
        Self { applied }
    }

    /// Worker `id` has applied `generation`.
    pub fn ack(&self, id: usize, generation: u64) {
        self.applied[id % self.applied.len()].store(generation, Ordering::Release);
    }

    /// Whether every worker has applied `generation`.
    pub fn all_applied(&self, generation: u64) -> bool {
        self.applied
            .iter()
            .all(|c| c.load(Ordering::Acquire) >= generation)
    }
}

/// A worker's cached view of [`Published`].
///
/// Connections clone the `Rc` (a plain increment on this core) rather than the `Arc`, whose
/// shared count would bounce between cores on every accept; the extra allocation happens once
/// per generation per worker.
#[derive(Debug)]
#[allow(clippy::redundant_allocation)]
pub struct Local {
    published: Arc<Published>,
    cached: RefCell<(u64, Rc<Arc<Snapshot>>)>,
}

impl Local {
    /// A view of `published`.
    pub fn new(published: Arc<Published>) -> Self {
        let cached = (published.generation(), Rc::new(published.table.load_full()));
        Self {
            published,
            cached: RefCell::new(cached),
        }
    }

    /// The generation of the published table (one atomic load).
    pub fn published_generation(&self) -> u64 {
        self.published.generation()
    }

    /// The current table (refreshed only when the generation changed).
    #[allow(clippy::redundant_allocation)]
    pub fn current(&self) -> Rc<Arc<Snapshot>> {
        let generation = self.published.generation();
        let mut cached = self.cached.borrow_mut();
        if cached.0 != generation {
            *cached = (generation, Rc::new(self.published.table.load_full()));
        }
        cached.1.clone()
    }
}
