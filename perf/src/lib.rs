//! `dataplane-perf`: benchmark support. Synthetic configurations of a chosen size for the
//! criterion benches (route lookup, compilation), and what the load generators in `src/bin`
//! share (a TLS client configuration).
#![forbid(unsafe_code)]

use std::fmt::Write;

/// Hosts per generated ServiceEntry (Istio allows 256).
const HOSTS_PER_ENTRY: usize = 100;

/// The exact host number `i` of a synthetic table.
pub fn exact_host(i: usize) -> String {
    format!("svc{i}.team{}.example.com", i % 97)
}

/// The wildcard host number `j` (`*.zone{j}.example.net`).
pub fn wildcard_host(j: usize) -> String {
    format!("*.zone{j}.example.net")
}

/// A name matched by wildcard `j`.
pub fn wildcard_name(j: usize) -> String {
    format!("api.zone{j}.example.net")
}

/// YAML for `hosts` TLS hosts on port 443 (about `wildcard_percent` of them wildcards), packed
/// 100 hosts to a ServiceEntry.
pub fn tls_hosts_yaml(hosts: usize, wildcard_percent: usize) -> String {
    let wildcards = hosts * wildcard_percent / 100;
    let exact = hosts - wildcards;
    let mut out = String::new();
    let mut entry = 0;
    let mut push = |out: &mut String, names: Vec<String>, resolution: &str| {
        for chunk in names.chunks(HOSTS_PER_ENTRY) {
            let _ = write!(
                out,
                "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: e{entry}\nspec:\n  hosts: [{}]\n  ports: [{{number: 443, name: https, protocol: HTTPS}}]\n  resolution: {resolution}\n",
                chunk
                    .iter()
                    .map(|h| format!("'{h}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            entry += 1;
        }
    };
    push(&mut out, (0..exact).map(exact_host).collect(), "DNS");
    push(
        &mut out,
        (0..wildcards).map(wildcard_host).collect(),
        "DYNAMIC_DNS",
    );
    out
}

/// YAML for `n` TCP ServiceEntries on port 5432, each with its own CIDR (`/24`s inside
/// `10.0.0.0/8`, every tenth a `/16`).
pub fn cidr_yaml(n: usize) -> String {
    let mut out = String::new();
    for i in 0..n {
        let cidr = if i % 10 == 0 {
            format!("10.{}.0.0/16", 128 + i / 10 % 128)
        } else {
            format!("10.{}.{}.0/24", i / 256 % 128, i % 256)
        };
        let _ = write!(
            out,
            "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: db{i}\nspec:\n  hosts: [db{i}.example.com]\n  addresses: ['{cidr}']\n  ports: [{{number: 5432, name: tcp, protocol: TCP}}]\n"
        );
    }
    out
}

/// YAML for `n` realistic ServiceEntries, one object each: HTTP, HTTPS and VIP-bound TCP
/// entries in turn, with a VirtualService for every tenth HTTP entry.
pub fn service_entries_yaml(n: usize) -> String {
    let mut out = String::new();
    for i in 0..n {
        let body = match i % 3 {
            0 => format!(
                "  hosts: [web{i}.example.com]\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  resolution: DNS\n"
            ),
            1 => format!(
                "  hosts: ['*.api{i}.example.com']\n  ports: [{{number: 443, name: https, protocol: HTTPS}}]\n  resolution: DYNAMIC_DNS\n"
            ),
            _ => format!(
                "  hosts: [db{i}.example.com]\n  addresses: [10.{}.{}.{}]\n  ports: [{{number: 3306, name: mysql, protocol: MySQL}}]\n  resolution: STATIC\n  endpoints: [{{address: 192.0.{}.{}}}]\n",
                i >> 16 & 255,
                i >> 8 & 255,
                i & 255,
                i >> 8 & 255,
                i & 255
            ),
        };
        let _ = write!(
            out,
            "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: se{i}\n  namespace: ns{}\nspec:\n{body}",
            i % 20
        );
        if i % 30 == 0 {
            let _ = write!(
                out,
                "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: vs{i}\n  namespace: ns{}\nspec:\n  hosts: [web{i}.example.com]\n  http:\n  - match: [{{uri: {{prefix: /v2}}}}]\n    route: [{{destination: {{host: web{i}.example.com}}}}]\n    timeout: 2s\n  - route: [{{destination: {{host: web{i}.example.com}}}}]\n",
                i % 20
            );
        }
    }
    out
}

/// The small second file of a reload benchmark (S8's edit in criterion's `reload` and
/// `examples/reload_instructions`): one ServiceEntry whose host changes with `version`.
pub fn reload_edit_yaml(version: u64) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: extra}}\nspec:\n  hosts: [extra{version}.example.com]\n  ports: [{{number: 443, name: https, protocol: HTTPS}}]\n  resolution: NONE\n"
    )
}

/// A rustls client configuration (ring) trusting only the PEM certificates in `ca`; panics with
/// the file's name when it cannot be read (the load generators' arguments are checked by use).
pub fn tls_client_config(ca: &str) -> rustls::ClientConfig {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap_or_else(|e| panic!("{ca}: {e}")) {
        roots
            .add(cert.unwrap_or_else(|e| panic!("{ca}: {e}")))
            .unwrap_or_else(|e| panic!("{ca}: {e}"));
    }
    rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap_or_else(|e| panic!("{e}"))
    .with_root_certificates(roots)
    .with_no_client_auth()
}

#[cfg(test)]
mod tests {
    use dataplane_config::{Options, Source, build};

    use super::*;

    #[test]
    fn synthetic_configs_are_valid() {
        for yaml in [
            tls_hosts_yaml(1000, 10),
            cidr_yaml(300),
            service_entries_yaml(300),
        ] {
            let b = build(&[Source::new("gen.yaml", yaml)], None, &Options::default());
            assert_eq!(b.errors(), 0, "{:#?}", b.error_messages());
        }
    }
}
