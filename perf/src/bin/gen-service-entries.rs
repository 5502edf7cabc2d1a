//! Print N synthetic ServiceEntries (the benchmarks' mix of HTTP, wildcard HTTPS and MySQL
//! services across 20 namespaces) as one multi-document YAML stream: `gen-service-entries 10000`.

fn main() {
    let n = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    print!("{}", dataplane_perf::service_entries_yaml(n));
}
