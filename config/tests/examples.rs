//! Every bundled example loads: each file alone, each directory as a whole, and every example
//! with an injected unknown field is rejected (hickory's mutation test).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::path::{Path, PathBuf};

use dataplane_config::table::{Decision, Detected, HostRoute};
use dataplane_config::{Code, Options, Source, build};

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    files
}

fn source(path: &Path) -> Source {
    Source::new(path.display().to_string(), std::fs::read(path).unwrap())
}

fn mesh() -> Source {
    source(&Path::new(env!("CARGO_MANIFEST_DIR")).join("mesh/registry-only.yaml"))
}

#[test]
fn each_example_file_is_valid_alone() {
    let mut files = yaml_files(&examples_dir());
    files.extend(yaml_files(&examples_dir().join("egress")));
    assert!(files.len() >= 16, "{files:?}");
    for f in files {
        let b = build(&[source(&f)], Some(&mesh()), &Options::default());
        assert_eq!(b.errors(), 0, "{}: {:#?}", f.display(), b.error_messages());
        assert!(b.table.is_some());
    }
}

#[test]
fn seed_directory_validates_with_expected_warnings() {
    let sources: Vec<Source> = yaml_files(&examples_dir())
        .iter()
        .map(|p| source(p))
        .collect();
    let b = build(&sources, None, &Options::default());
    let mut codes: Vec<Code> = b.findings.iter().map(|f| f.code).collect();
    codes.sort();
    codes.dedup();
    assert_eq!(
        codes,
        vec![
            Code::DUPLICATE_OBJECT,
            Code::DEPRECATED_FIELD,
            Code::SE_DNS_WILDCARD
        ],
        "{:#?}",
        b.findings
    );
    let t = b.table.expect("valid");
    // The seed's two TCP services on 3306, told apart by VIP.
    let name = |dst: &str| match t.decide(t.listener(dst.parse().unwrap()), Detected::Other) {
        Decision::Forward(dataplane_config::table::Target::Cluster(c)) => {
            t.cluster(*c).name.clone()
        }
        other => format!("{other:?}"),
    };
    assert_eq!(name("10.0.0.0:3306"), "outbound|3306||fqdna.fqdn.com");
    assert_eq!(name("10.1.0.0:3306"), "outbound|3306||fqdnb.fqdn.com");
    assert_eq!(name("10.0.0.5:3306"), "outbound|3306||mysql-01.foo.bar");
    assert_eq!(name("10.0.0.6:3306"), "outbound|3306||mysql-01.foo.bar");
}

#[test]
fn egress_example_is_clean_and_routes() {
    let sources: Vec<Source> = yaml_files(&examples_dir().join("egress"))
        .iter()
        .map(|p| source(p))
        .collect();
    let b = build(&sources, Some(&mesh()), &Options::default());
    assert!(b.findings.is_empty(), "{:#?}", b.findings);
    let t = b.table.unwrap();
    let l = t.listener("203.0.113.1:80".parse().unwrap());
    let Decision::Http(id) = t.decide(l, Detected::Http) else {
        panic!()
    };
    assert!(matches!(
        t.http_config(id).route(b"httpbin.example.com"),
        HostRoute::VirtualHost(_)
    ));
    assert!(matches!(
        t.http_config(id).route(b"unregistered.example.org"),
        HostRoute::Block
    ));
    let l = t.listener("203.0.113.1:443".parse().unwrap());
    assert!(matches!(
        t.decide(
            l,
            Detected::Tls {
                sni: Some(b"x.storage.example.com")
            }
        ),
        Decision::Forward(_)
    ));
    assert!(
        matches!(
            t.decide(
                l,
                Detected::Tls {
                    sni: Some(b"ledger.example.org")
                }
            ),
            Decision::Deny
        ),
        "exportTo . hides it"
    );
}

#[test]
fn an_unknown_field_in_any_example_is_rejected() {
    let mut files = yaml_files(&examples_dir());
    files.extend(yaml_files(&examples_dir().join("egress")));
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let documents = text.matches("\nspec:\n").count();
        assert!(documents > 0, "{}", f.display());
        let mutated = text.replace("\nspec:\n", "\nspec:\n  bogusField: true\n");
        let b = build(&[Source::new("m.yaml", mutated)], None, &Options::default());
        let unknown = b
            .findings
            .iter()
            .filter(|x| x.code == Code::UNKNOWN_FIELD && x.path == "spec.bogusField")
            .count();
        assert_eq!(unknown, documents, "{}: {:#?}", f.display(), b.findings);
        assert!(b.table.is_none());
    }
}

#[test]
fn every_reason_code_is_documented() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("REASON_CODES.md"))
            .unwrap();
    for code in Code::ALL {
        let sev = match code.severity() {
            dataplane_config::Severity::Error => "error",
            dataplane_config::Severity::Warning => "warning",
        };
        let row = format!("| {} | {sev} |", code.as_str());
        assert!(doc.contains(&row), "REASON_CODES.md lacks the row {row:?}");
    }
}
