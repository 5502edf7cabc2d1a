//! Route lookups allocate nothing (the table's contract for the workers' hot path).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::alloc::System;

use dataplane_config::table::{Decision, Detected};
use dataplane_config::{Options, Source, build};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

#[test]
fn lookups_do_not_allocate() {
    let yaml = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: a}\nspec:\n  hosts: [a.example.com, '*.w.example.com']\n  ports: [{number: 443, name: https, protocol: HTTPS}, {number: 80, name: http, protocol: HTTP}]\n  resolution: DNS\n---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: db}\nspec:\n  hosts: [db.example.com]\n  addresses: [10.0.0.0/24, 10.1.0.1]\n  ports: [{number: 3306, name: tcp, protocol: TCP}]\n";
    let b = build(&[Source::new("t.yaml", yaml)], None, &Options::default());
    let t = b.table.unwrap();
    let tls_dst = "192.0.2.1:443".parse().unwrap();
    let http_dst = "192.0.2.1:80".parse().unwrap();
    let tcp_dsts = [
        "10.0.0.7:3306".parse().unwrap(),
        "10.1.0.1:3306".parse().unwrap(),
        "[::ffff:10.0.0.9]:3306".parse().unwrap(),
    ];
    let names: [&[u8]; 5] = [
        b"a.example.com",
        b"X.W.Example.Com",
        b"nope.org",
        b"q.w.example.com.",
        &[b'a'; 300],
    ];

    let region = Region::new(GLOBAL);
    let mut found = 0;
    for _ in 0..100 {
        for name in names {
            let l = t.listener(tls_dst);
            if matches!(
                t.decide(l, Detected::Tls { sni: Some(name) }),
                Decision::Forward(_)
            ) {
                found += 1;
            }
            let l = t.listener(http_dst);
            if let Decision::Http(id) = t.decide(l, Detected::Http) {
                let _ = std::hint::black_box(t.http_config(id).route(name));
            }
        }
        for dst in tcp_dsts {
            let _ = std::hint::black_box(t.decide(t.listener(dst), Detected::Other));
        }
    }
    let stats = region.change();
    assert_eq!(found, 200);
    assert_eq!(stats.allocations, 0, "{stats:?}");
    assert_eq!(stats.reallocations, 0, "{stats:?}");
}
