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

/// The published table.
#[derive(Debug)]
pub struct Published {
    table: ArcSwap<RouteTable>,
    generation: AtomicU64,
}

impl Published {
    /// Generation 1.
    pub fn new(table: RouteTable) -> Self {
        Self {
            table: ArcSwap::from_pointee(table),
            generation: AtomicU64::new(1),
        }
    }

    /// Publish a new table: one pointer swap, then the generation.
    pub fn publish(&self, table: RouteTable) -> u64 {
        self.table.store(Arc::new(table));
        self.generation.fetch_add(1, Ordering::Release) + 1
    }

    /// The current table (for the admin and control threads).
    pub fn current(&self) -> Arc<RouteTable> {
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
    cached: RefCell<(u64, Rc<Arc<RouteTable>>)>,
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
    pub fn current(&self) -> Rc<Arc<RouteTable>> {
        let generation = self.published.generation();
        let mut cached = self.cached.borrow_mut();
        if cached.0 != generation {
            *cached = (generation, Rc::new(self.published.table.load_full()));
        }
        cached.1.clone()
    }
}
