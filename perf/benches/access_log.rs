//! Encoding one access-log line: the record of one proxied HTTP request, as a worker writes it
//! to its buffer after every request (a few percent of an HTTP request's CPU in `perf`), and the
//! same line through `serde_json` for comparison.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark may panic on bad setup

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use dataplane::access_log::Entry;

fn http_request() -> Entry<'static> {
    Entry {
        start_ms: 1_795_000_000_000,
        source: Some("127.0.0.1:40312".parse().unwrap()),
        destination: Some("127.0.0.2:18082".parse().unwrap()),
        host: Some("origin.example".into()),
        method: Some("GET".into()),
        path: Some("/1k".into()),
        response_code: Some(200),
        response_flags: Some("-"),
        cluster: Some("outbound|18082||origin.example".into()),
        upstream: Some("127.0.0.1:18080".parse().unwrap()),
        bytes_sent: 74,
        bytes_received: 1_270,
        duration_ms: 0,
        outcome: "forwarded",
        ..Entry::default()
    }
}

fn encode(c: &mut Criterion) {
    let entry = http_request();
    let mut line = Vec::with_capacity(512);
    // What a worker does.
    c.bench_function("access_log_http_line", |b| {
        b.iter(|| {
            line.clear();
            black_box(&entry).write_json(&mut line);
            black_box(line.len())
        })
    });
    // The same line through serde_json's `Serialize` (the reference the writer is tested
    // against, and how lines were written before).
    c.bench_function("access_log_http_line_serde", |b| {
        b.iter(|| {
            line.clear();
            serde_json::to_writer(&mut line, black_box(&entry)).unwrap();
            black_box(line.len())
        })
    });
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! { name = benches; config = config(); targets = encode }
criterion_main!(benches);
