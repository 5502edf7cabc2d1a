//! Route lookup and compilation (scenario S7, issue 2's goals): SNI and Host lookups at 10, 1k
//! and 100k hosts (10% wildcards), destination lookup at 1k CIDRs, compiling 10,000
//! ServiceEntries. Compare against `std_hashmap` in the same run: a plain `HashMap<String, _>`
//! lookup of the same names is the floor PEERS.md measured (21-58 ns at 1k hosts).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark may panic on bad setup

use std::collections::HashMap;
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use dataplane_config::table::{Decision, Detected, RouteTable};
use dataplane_config::{Options, Source, build};
use dataplane_perf::{cidr_yaml, exact_host, service_entries_yaml, tls_hosts_yaml, wildcard_name};

fn table(yaml: String) -> RouteTable {
    let b = build(&[Source::new("gen.yaml", yaml)], None, &Options::default());
    assert_eq!(b.errors(), 0);
    b.table.expect("valid")
}

fn sni(t: &RouteTable, dst: SocketAddr, name: &[u8]) -> bool {
    let l = t.listener(dst);
    matches!(
        t.decide(l, Detected::Tls { sni: Some(name) }),
        Decision::Forward(_)
    )
}

/// 65,536 names `f(k)` with `k` spread evenly (multiplicatively hashed) over `0..n`.
fn spread(n: usize, f: fn(usize) -> String) -> Vec<String> {
    (0..65_536u64)
        .map(|k| f((k.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) as usize % n.max(1)))
        .collect()
}

fn lookups(c: &mut Criterion) {
    let dst: SocketAddr = "203.0.113.7:443".parse().unwrap_or_else(|_| unreachable!());
    let mut g = c.benchmark_group("sni_lookup");
    for hosts in [10usize, 1_000, 100_000] {
        let t = table(tls_hosts_yaml(hosts, 10));
        let exact = exact_host(hosts / 3);
        let wild = wildcard_name(hosts / 10 / 2);
        assert!(sni(&t, dst, exact.as_bytes()) && sni(&t, dst, wild.as_bytes()));
        g.bench_with_input(BenchmarkId::new("exact", hosts), &exact, |b, n| {
            b.iter(|| sni(&t, dst, black_box(n.as_bytes())))
        });
        g.bench_with_input(BenchmarkId::new("wildcard", hosts), &wild, |b, n| {
            b.iter(|| sni(&t, dst, black_box(n.as_bytes())))
        });
        g.bench_with_input(
            BenchmarkId::new("miss", hosts),
            "nothing.here.example.org",
            |b, n| b.iter(|| sni(&t, dst, black_box(n.as_bytes()))),
        );
        let map: HashMap<String, usize> = (0..hosts).map(|i| (exact_host(i), i)).collect();
        g.bench_with_input(BenchmarkId::new("std_hashmap", hosts), &exact, |b, n| {
            b.iter(|| map.get(black_box(n.as_str())).copied())
        });
        // The same lookups cycling over 65,536 names spread across the table: cache misses
        // included, as on a busy proxy.
        let exact_names = spread(hosts - hosts / 10, exact_host);
        let wild_names = spread(hosts / 10, wildcard_name);
        let mut i = 0;
        g.bench_function(BenchmarkId::new("exact_spread", hosts), |b| {
            b.iter(|| {
                i = (i + 1) & 65_535;
                sni(&t, dst, black_box(exact_names[i].as_bytes()))
            })
        });
        g.bench_function(BenchmarkId::new("wildcard_spread", hosts), |b| {
            b.iter(|| {
                i = (i + 1) & 65_535;
                sni(&t, dst, black_box(wild_names[i].as_bytes()))
            })
        });
        g.bench_function(BenchmarkId::new("std_hashmap_spread", hosts), |b| {
            b.iter(|| {
                i = (i + 1) & 65_535;
                map.get(black_box(exact_names[i].as_str())).copied()
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("cidr_lookup");
    let t = table(cidr_yaml(1_000));
    for (name, dst) in [
        ("slash24", "10.1.2.3:5432"),
        ("slash16", "10.130.9.9:5432"),
        ("miss", "192.0.2.1:5432"),
    ] {
        let dst: SocketAddr = dst.parse().unwrap_or_else(|_| unreachable!());
        g.bench_function(BenchmarkId::new(name, 1_000), |b| {
            b.iter(|| black_box(t.decide(t.listener(black_box(dst)), Detected::Other)))
        });
    }
    g.finish();
}

fn compile(c: &mut Criterion) {
    let yaml = service_entries_yaml(10_000);
    let mut g = c.benchmark_group("compile");
    g.sample_size(10);
    g.bench_function("load_validate_compile_10k", |b| {
        b.iter(|| {
            let built = build(
                &[Source::new("gen.yaml", yaml.as_str())],
                None,
                &Options::default(),
            );
            assert!(built.table.is_some());
        })
    });
    let b = build(
        &[Source::new("gen.yaml", yaml.as_str())],
        None,
        &Options::default(),
    );
    assert_eq!(b.errors(), 0);
    let opts = dataplane_config::table::CompileOptions {
        namespace: "default",
        reserved_ports: dataplane_config::validate::RESERVED_PORTS,
        age: None,
    };
    g.bench_function("compile_only_10k", |bn| {
        bn.iter(|| {
            dataplane_config::table::compile(&b.registry, &opts)
                .clusters
                .len()
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! { name = benches; config = config(); targets = lookups, compile }
criterion_main!(benches);
