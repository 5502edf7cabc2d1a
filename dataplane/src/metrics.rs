//! Metrics with Istio's standard names and labels, and the proxy's own as `dataplane_*`.
//!
//! Workers count in plain per-thread maps (no atomics, no locks on the connection path) and
//! publish a copy of their counts to their own `ArcSwap` slot every 250 ms when something
//! changed. The admin thread sums the slots and encodes with `prometheus-client` per scrape.
//!
//! TCP metrics are counted per connection that reached an upstream decision: opened when the
//! upstream connection is established, closed with its bytes when the connection ends (bytes of
//! a long stream appear when it closes). HTTP metrics are counted per request when its answer
//! is complete: `istio_requests_total` and Istio's three histograms, with Istio's buckets.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use rustc_hash::FxHashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use crate::access_log::Entry;

/// How often a worker publishes its counts.
const PUBLISH: Duration = Duration::from_millis(250);

/// Istio's TCP label set (the subset an egress proxy knows).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TcpLabels {
    reporter: &'static str,
    destination_service: String,
    destination_service_name: String,
    destination_service_namespace: String,
    request_protocol: &'static str,
    response_flags: &'static str,
}

impl TcpLabels {
    /// The labels of a cluster: it names the service (`outbound|port|subset|host`), or is
    /// `PassthroughCluster` for ALLOW_ANY traffic; `namespace` is its ServiceEntry's, when the
    /// current table still has the cluster. Computed per scrape, not per connection.
    fn of(cluster: &str, namespace: Option<&str>) -> Self {
        let service = match cluster.rsplit_once('|') {
            Some((_, host)) if cluster.starts_with("outbound|") => host,
            _ => cluster,
        };
        let (destination_service, destination_service_name) = if service == cluster {
            ("unknown".to_owned(), cluster.to_owned())
        } else {
            (service.to_owned(), service.to_owned())
        };
        Self {
            reporter: "source",
            destination_service,
            destination_service_name,
            destination_service_namespace: namespace.unwrap_or("unknown").to_owned(),
            request_protocol: "tcp",
            // Only connections that reached their upstream are counted here; connect failures
            // are `dataplane_refusals_total{reason="connect_failed"}`.
            response_flags: "-",
        }
    }
}

/// Istio's HTTP label set (the subset an egress proxy knows).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    reporter: &'static str,
    destination_service: String,
    destination_service_name: String,
    destination_service_namespace: String,
    request_protocol: &'static str,
    response_code: u16,
    response_flags: &'static str,
}

impl HttpLabels {
    fn of(cluster: &str, namespace: Option<&str>, code: u16, flags: &'static str) -> Self {
        let tcp = TcpLabels::of(cluster, namespace);
        Self {
            reporter: tcp.reporter,
            destination_service: tcp.destination_service,
            destination_service_name: tcp.destination_service_name,
            destination_service_namespace: tcp.destination_service_namespace,
            request_protocol: "http",
            response_code: code,
            response_flags: flags,
        }
    }
}

/// Istio's `istio_request_duration_milliseconds` buckets.
const DURATION_BOUNDS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];
/// Istio's `istio_request_bytes` / `istio_response_bytes` buckets (1 to 10^7, factor 10).
const BYTES_BOUNDS: [f64; 8] = [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6, 1e7];

/// Fixed-bucket histogram counts (the last cell is +Inf).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Buckets<const N: usize> {
    counts: [u64; N],
    sum: f64,
}

impl<const N: usize> Default for Buckets<N> {
    fn default() -> Self {
        Self {
            counts: [0; N],
            sum: 0.0,
        }
    }
}

impl<const N: usize> Buckets<N> {
    fn observe(&mut self, bounds: &[f64], value: f64) {
        let i = bounds.iter().position(|b| value <= *b).unwrap_or(N - 1);
        self.counts[i] += 1;
        self.sum += value;
    }

    fn add(&mut self, other: &Self) {
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a += b;
        }
        self.sum += other.sum;
    }
}

/// HTTP counts of one cluster, status and flags.
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpCounts {
    requests: u64,
    duration: Buckets<20>,
    request_bytes: Buckets<9>,
    response_bytes: Buckets<9>,
}

/// A histogram summed from the workers' buckets, encoded as Prometheus histogram samples.
#[derive(Debug)]
struct SummedHistogram<const N: usize> {
    bounds: &'static [f64],
    data: std::sync::Mutex<Buckets<N>>,
}

impl<const N: usize> SummedHistogram<N> {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            data: std::sync::Mutex::new(Buckets::default()),
        }
    }

    fn add(&self, b: &Buckets<N>) {
        if let Ok(mut d) = self.data.lock() {
            d.add(b);
        }
    }
}

impl<const N: usize> TypedMetric for SummedHistogram<N> {
    const TYPE: MetricType = MetricType::Histogram;
}

impl<const N: usize> EncodeMetric for SummedHistogram<N> {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let data = self.data.lock().map(|d| *d).unwrap_or_default();
        let buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .copied()
            .chain([f64::MAX])
            .zip(data.counts)
            .collect();
        let count = data.counts.iter().sum();
        encoder.encode_histogram::<NoLabelSet>(data.sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// Update the counts of `key`, allocating the key only the first time it is seen: the
/// connection path looks up by `&str` and allocates nothing in the steady state.
fn bump<V: Default>(map: &mut FxHashMap<String, V>, key: &str, update: impl FnOnce(&mut V)) {
    match map.get_mut(key) {
        Some(v) => update(v),
        None => {
            let mut v = V::default();
            update(&mut v);
            map.insert(key.to_owned(), v);
        }
    }
}

/// TCP counts of one label set.
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpCounts {
    opened: u64,
    closed: u64,
    sent: u64,
    received: u64,
}

/// One worker's published counts.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    /// By cluster name; labels are derived when encoding.
    tcp: FxHashMap<String, TcpCounts>,
    /// Refusals and failures by reason (`registry_only`, `loop`, ...).
    refusals: FxHashMap<String, u64>,
    /// Upstream connect failures by cluster name.
    connect_failures: FxHashMap<String, u64>,
    /// DNS lookups sent to servers, by outcome (copied from the worker's resolver).
    dns: crate::dns::resolver::DnsStats,
    /// HTTP requests by cluster name, then status and response flags.
    http: FxHashMap<String, FxHashMap<(u16, &'static str), HttpCounts>>,
    /// Detection outcomes: `tls`, `http`, `opaque`.
    detected: FxHashMap<&'static str, u64>,
    active: i64,
}

/// What the workers publish to and the admin thread reads from.
#[derive(Debug)]
pub struct Shared {
    slots: Box<[ArcSwap<Counts>]>,
    /// Reloads attempted (published or rejected).
    pub reloads: AtomicU64,
    /// Reloads rejected.
    pub reload_failures: AtomicU64,
}

impl Shared {
    /// Slots for `workers` workers.
    pub fn new(workers: usize) -> Arc<Self> {
        let slots = (0..workers.max(1))
            .map(|_| ArcSwap::from_pointee(Counts::default()))
            .collect();
        Arc::new(Self {
            slots,
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
        })
    }

    /// Encode every metric (Prometheus text), summing the workers' slots; `table` (the current
    /// one) gives each cluster's namespace.
    pub fn encode(&self, generation: u64, table: &dataplane_config::table::RouteTable) -> String {
        let namespaces: HashMap<&str, &str> = table
            .clusters
            .iter()
            .map(|c| (c.name.as_str(), c.service.key.namespace.as_str()))
            .collect();
        let ns = |cluster: &str| namespaces.get(cluster).copied();
        let opened = Family::<TcpLabels, Counter>::default();
        let closed = Family::<TcpLabels, Counter>::default();
        let sent = Family::<TcpLabels, Counter>::default();
        let received = Family::<TcpLabels, Counter>::default();
        let refusals = Family::<ReasonLabel, Counter>::default();
        let detected = Family::<ProtocolLabel, Counter>::default();
        let active = Family::<WorkerLabel, Gauge>::default();
        let requests = Family::<HttpLabels, Counter>::default();
        let connect_failures = Family::<ClusterLabel, Counter>::default();
        let dns = Family::<OutcomeLabel, Counter>::default();
        type Hist<const N: usize> =
            Family<HttpLabels, SummedHistogram<N>, fn() -> SummedHistogram<N>>;
        let duration: Hist<20> =
            Family::new_with_constructor(|| SummedHistogram::new(&DURATION_BOUNDS));
        let request_bytes: Hist<9> =
            Family::new_with_constructor(|| SummedHistogram::new(&BYTES_BOUNDS));
        let response_bytes: Hist<9> =
            Family::new_with_constructor(|| SummedHistogram::new(&BYTES_BOUNDS));
        for (worker, slot) in self.slots.iter().enumerate() {
            let counts = slot.load();
            for (cluster, c) in &counts.tcp {
                let labels = &TcpLabels::of(cluster, ns(cluster));
                opened.get_or_create(labels).inc_by(c.opened);
                closed.get_or_create(labels).inc_by(c.closed);
                sent.get_or_create(labels).inc_by(c.sent);
                received.get_or_create(labels).inc_by(c.received);
            }
            for (cluster, by_status) in &counts.http {
                for ((code, flags), c) in by_status {
                    let labels = &HttpLabels::of(cluster, ns(cluster), *code, flags);
                    requests.get_or_create(labels).inc_by(c.requests);
                    duration.get_or_create(labels).add(&c.duration);
                    request_bytes.get_or_create(labels).add(&c.request_bytes);
                    response_bytes.get_or_create(labels).add(&c.response_bytes);
                }
            }
            for (cluster, n) in &counts.connect_failures {
                connect_failures
                    .get_or_create(&ClusterLabel {
                        cluster: cluster.clone(),
                    })
                    .inc_by(*n);
            }
            for (outcome, n) in [
                ("answered", counts.dns.answered),
                ("nxdomain", counts.dns.nxdomain),
                ("nodata", counts.dns.nodata),
                ("failed", counts.dns.failed),
            ] {
                dns.get_or_create(&OutcomeLabel { outcome }).inc_by(n);
            }
            for (reason, n) in &counts.refusals {
                let label = ReasonLabel {
                    reason: reason.clone(),
                };
                refusals.get_or_create(&label).inc_by(*n);
            }
            for (protocol, n) in &counts.detected {
                detected
                    .get_or_create(&ProtocolLabel { protocol })
                    .inc_by(*n);
            }
            let label = WorkerLabel {
                worker: worker.to_string(),
            };
            active.get_or_create(&label).set(counts.active);
        }
        let mut registry = Registry::default();
        registry.register("istio_requests", "HTTP requests answered", requests);
        registry.register(
            "istio_request_duration_milliseconds",
            "HTTP request durations in milliseconds",
            duration,
        );
        registry.register(
            "istio_request_bytes",
            "HTTP request body sizes in bytes",
            request_bytes,
        );
        registry.register(
            "istio_response_bytes",
            "HTTP response body sizes in bytes",
            response_bytes,
        );
        registry.register(
            "istio_tcp_connections_opened",
            "TCP connections opened to upstreams",
            opened,
        );
        registry.register(
            "istio_tcp_connections_closed",
            "TCP connections closed",
            closed,
        );
        registry.register(
            "istio_tcp_sent_bytes",
            "Bytes sent to upstreams on closed TCP connections",
            sent,
        );
        registry.register(
            "istio_tcp_received_bytes",
            "Bytes received from upstreams on closed TCP connections",
            received,
        );
        let generation_gauge = Gauge::<i64>::default();
        generation_gauge.set(i64::try_from(generation).unwrap_or(i64::MAX));
        registry.register(
            "dataplane_config_generation",
            "Generation of the published configuration",
            generation_gauge,
        );
        for (name, help, value) in [
            (
                "dataplane_config_reloads",
                "Configuration reloads attempted",
                &self.reloads,
            ),
            (
                "dataplane_config_reload_failures",
                "Configuration reloads rejected",
                &self.reload_failures,
            ),
        ] {
            let counter = Counter::<u64>::default();
            counter.inc_by(value.load(Ordering::Relaxed));
            registry.register(name, help, counter);
        }
        registry.register(
            "dataplane_refusals",
            "Connections refused or failed, by reason",
            refusals,
        );
        registry.register(
            "dataplane_upstream_connect_failures",
            "Upstream connect attempts that failed (refused, timed out, TLS), by cluster",
            connect_failures,
        );
        registry.register(
            "dataplane_dns_queries",
            "DNS lookups sent to servers (cache misses), by outcome",
            dns,
        );
        registry.register(
            "dataplane_detections",
            "Protocol detection outcomes",
            detected,
        );
        registry.register(
            "dataplane_active_connections",
            "Open client connections per worker",
            active,
        );
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
            out.clear();
        }
        prometheus_text(&out)
    }
}

/// OpenMetrics text (what `prometheus-client` writes) as Prometheus text format 0.0.4, what
/// Istio's `/stats/prometheus` serves and `promtool check metrics` reads: a counter family is
/// named by its samples (`x_total`), and there is no `# EOF`.
fn prometheus_text(openmetrics: &str) -> String {
    let counters: Vec<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 16 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(&name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabel {
    cluster: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabel {
    protocol: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabel {
    worker: String,
}

/// A worker's counters: plain cells, published by [`WorkerMetrics::publish_loop`].
#[derive(Debug)]
pub struct WorkerMetrics {
    shared: Option<(Arc<Shared>, usize)>,
    counts: RefCell<Counts>,
    dirty: Cell<bool>,
}

impl WorkerMetrics {
    /// Counters of worker `id`, published to `shared`.
    pub fn new(shared: Arc<Shared>, id: usize) -> Self {
        let id = id % shared.slots.len();
        Self {
            shared: Some((shared, id)),
            counts: RefCell::new(Counts::default()),
            dirty: Cell::new(false),
        }
    }

    /// Counters published nowhere (tests of the library).
    pub fn detached() -> Self {
        Self {
            shared: None,
            counts: RefCell::new(Counts::default()),
            dirty: Cell::new(false),
        }
    }

    /// A client connection was accepted.
    pub fn accepted(&self) {
        self.counts.borrow_mut().active += 1;
        self.dirty.set(true);
    }

    /// An upstream connection was established for `entry`.
    pub fn opened(&self, entry: &Entry<'_>) {
        if let Some(cluster) = &entry.cluster {
            bump(&mut self.counts.borrow_mut().tcp, cluster, |c| {
                c.opened += 1
            });
            self.dirty.set(true);
        }
    }

    /// The connection of `entry` ended.
    pub fn finished(&self, entry: &Entry<'_>) {
        let mut counts = self.counts.borrow_mut();
        counts.active -= 1;
        let protocol = entry.detected.unwrap_or("opaque");
        *counts.detected.entry(protocol).or_default() += 1;
        if entry.connected
            && let Some(cluster) = &entry.cluster
        {
            bump(&mut counts.tcp, cluster, |c| {
                c.sent += entry.bytes_sent;
                c.received += entry.bytes_received;
                c.closed += 1;
            });
        }
        if entry.outcome != "forwarded" {
            let reason = entry.reason.as_deref().unwrap_or(entry.outcome);
            // Keep the label set small: the reason up to its first ':'.
            let reason = reason.split(':').next().unwrap_or(reason).trim();
            bump(&mut counts.refusals, reason, |n| *n += 1);
        }
        self.dirty.set(true);
    }

    /// An HTTP request of `entry` was answered after `elapsed`.
    pub fn request(&self, entry: &Entry<'_>, elapsed: Duration) {
        let Some(code) = entry.response_code else {
            return;
        };
        let cluster = entry.cluster.as_deref().unwrap_or("unknown");
        let flags = entry.response_flags.unwrap_or("-");
        let mut counts = self.counts.borrow_mut();
        bump(&mut counts.http, cluster, |by_status| {
            let c = by_status.entry((code, flags)).or_default();
            c.requests += 1;
            c.duration
                .observe(&DURATION_BOUNDS, elapsed.as_secs_f64() * 1000.0);
            c.request_bytes
                .observe(&BYTES_BOUNDS, entry.bytes_sent as f64);
            c.response_bytes
                .observe(&BYTES_BOUNDS, entry.bytes_received as f64);
        });
        self.dirty.set(true);
    }

    /// A connection was refused before it was served (`max_connections`, `accept_emfile`).
    pub fn refused(&self, reason: &str) {
        bump(&mut self.counts.borrow_mut().refusals, reason, |n| *n += 1);
        self.dirty.set(true);
    }

    /// An upstream connect attempt for `cluster` failed.
    pub fn connect_failed(&self, cluster: &str) {
        bump(
            &mut self.counts.borrow_mut().connect_failures,
            cluster,
            |n| {
                *n += 1;
            },
        );
        self.dirty.set(true);
    }

    /// Publish the counts every 250 ms when they changed, with the resolver's counts from
    /// `dns`. Runs for the worker's lifetime.
    pub async fn publish_loop(&self, dns: impl Fn() -> crate::dns::resolver::DnsStats) {
        let Some((shared, id)) = &self.shared else {
            return;
        };
        loop {
            monoio::time::sleep(PUBLISH).await;
            let stats = dns();
            if stats != self.counts.borrow().dns {
                self.counts.borrow_mut().dns = stats;
                self.dirty.set(true);
            }
            if self.dirty.replace(false) {
                let copy = self.counts.borrow().clone();
                shared.slots[*id].store(Arc::new(copy));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded(cluster: &str, sent: u64, received: u64) -> Entry<'static> {
        Entry {
            cluster: Some(cluster.to_owned().into()),
            connected: true,
            bytes_sent: sent,
            bytes_received: received,
            outcome: "forwarded",
            ..Entry::default()
        }
    }

    #[test]
    fn counts_sum_over_workers_in_prometheus_text() {
        let shared = Shared::new(2);
        let (a, b) = (
            WorkerMetrics::new(shared.clone(), 0),
            WorkerMetrics::new(shared.clone(), 1),
        );
        for (w, sent) in [(&a, 10), (&b, 5)] {
            let e = forwarded("outbound|443||api.example.com", sent, 7);
            w.accepted();
            w.opened(&e);
            w.finished(&e);
        }
        let denied = Entry {
            outcome: "denied",
            reason: Some("registry_only".into()),
            ..Entry::default()
        };
        a.accepted();
        a.finished(&denied);
        // What publish_loop does, without the runtime.
        for (w, id) in [(&a, 0), (&b, 1)] {
            shared.slots[id].store(Arc::new(w.counts.borrow().clone()));
        }
        let b = dataplane_config::build(&[], None, &dataplane_config::Options::default());
        let text = shared.encode(3, &b.table.expect("empty table"));
        let series = "{reporter=\"source\",destination_service=\"api.example.com\",destination_service_name=\"api.example.com\",destination_service_namespace=\"unknown\",request_protocol=\"tcp\",response_flags=\"-\"}";
        for (name, value) in [
            ("istio_tcp_connections_opened_total", 2),
            ("istio_tcp_connections_closed_total", 2),
            ("istio_tcp_sent_bytes_total", 15),
            ("istio_tcp_received_bytes_total", 14),
        ] {
            assert!(
                text.contains(&format!("{name}{series} {value}\n")),
                "{name}: {text}"
            );
            assert!(text.contains(&format!("# TYPE {name} counter\n")), "{text}");
        }
        assert!(text.contains("dataplane_refusals_total{reason=\"registry_only\"} 1\n"));
        assert!(text.contains("dataplane_config_generation 3\n"));
        assert!(text.contains("dataplane_active_connections{worker=\"0\"} 0\n"));
        assert!(!text.contains("# EOF"));
    }

    #[test]
    fn passthrough_is_named_by_its_cluster() {
        let l = TcpLabels::of("PassthroughCluster", None);
        assert_eq!(
            (
                l.destination_service.as_str(),
                l.destination_service_name.as_str()
            ),
            ("unknown", "PassthroughCluster")
        );
        let l = TcpLabels::of("outbound|443||api.example.com", Some("egress"));
        assert_eq!(l.destination_service_namespace, "egress");
        assert_eq!(l.destination_service, "api.example.com");
        // A connection without a cluster (refused before routing) opens no TCP series.
        let w = WorkerMetrics::detached();
        w.accepted();
        w.finished(&Entry::default());
        assert!(w.counts.borrow().tcp.is_empty());
    }
}
