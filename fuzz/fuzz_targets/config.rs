//! YAML -> validation -> compiled table on arbitrary bytes: never panics; a table is produced
//! exactly when there is no error, and lookups on it answer.
#![no_main]

use dataplane_config::table::Detected;
use dataplane_config::{Options, Source, build};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let b = build(&[Source::new("fuzz.yaml", data)], None, &Options::default());
    assert_eq!(b.table.is_some(), b.errors() == 0);
    for f in &b.findings {
        assert!(f.line >= 1);
    }
    if let Some(t) = &b.table {
        for port in t.ports() {
            let dst = std::net::SocketAddr::from(([192, 0, 2, 1], port));
            let l = t.listener(dst);
            let _ = t.decide(
                l,
                Detected::Tls {
                    sni: Some(b"a.example.com"),
                },
            );
            let _ = t.decide(l, Detected::Http);
            let _ = t.decide(l, Detected::Other);
        }
    }
});
