//! `dataplane validate` and `dataplane routes` as users run them: exit codes, every finding on
//! its own line in `file:line: Kind ns/name: path: message [CODE]` form, text and JSON routes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::fs;

use dataplane_tests::{dataplane, dataplane_env};

const SE: &str = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: NAME\nspec:\n  hosts: [HOST]\n  ports: [{number: 443, name: https, protocol: HTTPS}]\n  resolution: DNS\n";

#[test]
fn seed_examples_validate() {
    let r = dataplane(&["validate", "config/examples/"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains("[FILE_NOT_FOUND]"),
        "certificate paths of the seed DestinationRule: {}",
        r.stdout
    );
    assert!(r.stdout.contains("[SE_DNS_WILDCARD]"));
    assert!(
        r.stdout
            .lines()
            .last()
            .unwrap()
            .starts_with("valid: 8 object(s), 0 error(s)"),
        "{}",
        r.stdout
    );
}

#[test]
fn each_seed_file_validates() {
    for entry in fs::read_dir(dataplane_tests::workspace().join("config/examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let r = dataplane(&["validate", path.to_str().unwrap()]);
            assert_eq!(r.code, 0, "{}: {r:?}", path.display());
        }
    }
}

#[test]
fn egress_example_is_clean_and_strict_passes() {
    let r = dataplane(&[
        "validate",
        "--strict",
        "--mesh",
        "config/mesh/registry-only.yaml",
        "config/examples/egress",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains("0 error(s), 0 warning(s)"),
        "{}",
        r.stdout
    );
}

#[test]
fn strict_fails_on_warnings() {
    let r = dataplane(&["validate", "--strict", "config/examples/"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.lines().last().unwrap().starts_with("invalid:"));
}

#[test]
fn three_documents_three_errors_all_reported() {
    let dir = tempfile::tempdir().unwrap();
    let text = [
        SE.replace("NAME", "one").replace("HOST", "'*'"),
        SE.replace("NAME", "two")
            .replace("HOST", "two.example.com")
            .replace("resolution: DNS", "resolution: DNZ"),
        SE.replace("NAME", "three")
            .replace("HOST", "three.example.com")
            .replace("name: https,", "name: https, protocl: TLS,"),
    ]
    .join("---\n");
    let file = dir.path().join("bad.yaml");
    fs::write(&file, text).unwrap();
    let r = dataplane(&["validate", file.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{r:?}");
    let f = file.display();
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            format!(
                "{f}:6: ServiceEntry default/one: spec.hosts[0]: invalid host * [SE_HOST_FULL_WILDCARD]"
            ),
            format!(
                "{f}:17: ServiceEntry default/two: spec.resolution: unsupported resolution type DNZ (one of NONE, STATIC, DNS, DNS_ROUND_ROBIN, DYNAMIC_DNS) [SE_RESOLUTION_UNSUPPORTED]"
            ),
            format!(
                "{f}:25: ServiceEntry default/three: spec.ports[0].protocl: unknown field \"protocl\" [UNKNOWN_FIELD]"
            ),
            "invalid: 3 object(s), 3 error(s), 0 warning(s)".to_owned(),
        ]
    );
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(dataplane(&["validate"]).code, 2);
    assert_eq!(dataplane(&["validate", "--bogus", "x"]).code, 2);
    assert_eq!(dataplane(&["frobnicate"]).code, 2);
}

#[test]
fn unreadable_path_is_a_clear_error() {
    let r = dataplane(&["validate", "/nonexistent/dir"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("cannot read /nonexistent/dir"), "{r:?}");
}

#[test]
fn configmap_mount_layout_is_read_once() {
    // kubelet: files are links into `..data`, itself a link to a hidden timestamped directory.
    let dir = tempfile::tempdir().unwrap();
    let stamp = dir.path().join("..2026_11_24_00_00_00.000");
    fs::create_dir(&stamp).unwrap();
    fs::write(
        stamp.join("a.yaml"),
        SE.replace("NAME", "a").replace("HOST", "a.example.com"),
    )
    .unwrap();
    fs::write(stamp.join("notes.txt"), "not yaml").unwrap();
    std::os::unix::fs::symlink(&stamp, dir.path().join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/a.yaml", dir.path().join("a.yaml")).unwrap();
    let r = dataplane(&["validate", dir.path().to_str().unwrap()]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("valid: 1 object(s)"), "{}", r.stdout);
}

#[test]
fn routes_text() {
    let r = dataplane(&[
        "routes",
        "--mesh",
        "config/mesh/registry-only.yaml",
        "config/examples/egress",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout
            .starts_with("namespace default, outboundTrafficPolicy REGISTRY_ONLY"),
        "{}",
        r.stdout
    );
    for want in [
        "to 10.0.0.5                             tcp  -> outbound|3306||orders-db.example.com",
        "to 10.0.0.6                             tcp  -> outbound|3306||billing-db.example.com",
        "sni *.storage.example.com -> outbound|443||*.storage.example.com",
        "other hosts                           -> 502 (block_all)",
        "any other port -> closed",
    ] {
        assert!(r.stdout.contains(want), "missing {want:?} in\n{}", r.stdout);
    }
}

#[test]
fn routes_json_and_env() {
    let r = dataplane_env(
        &["routes", "--json", "config/examples/egress"],
        &[("DATAPLANE_MESH", "config/mesh/allow-any.yaml")],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["outboundTrafficPolicy"], "ALLOW_ANY");
    assert_eq!(v["fallthrough"], "passthrough to the original destination");
    let ports: Vec<u64> = v["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["port"].as_u64().unwrap())
        .collect();
    assert_eq!(ports, [80, 443, 3306, 6379, 8443]);
    let clusters = v["clusters"].as_array().unwrap();
    let secure = clusters
        .iter()
        .find(|c| c["name"] == "outbound|80||secure.example.com")
        .unwrap();
    assert_eq!(secure["tls"], "SIMPLE");
    assert_eq!(
        secure["upstream"],
        "resolve secure.example.com:443 (every address)"
    );
}

#[test]
fn routes_refuses_an_invalid_configuration() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("x.yaml"),
        SE.replace("NAME", "x").replace("HOST", "'*'"),
    )
    .unwrap();
    let r = dataplane(&["routes", dir.path().to_str().unwrap()]);
    assert_eq!(r.code, 1);
    assert!(r.stdout.is_empty());
    assert!(
        r.stderr.contains("[SE_HOST_FULL_WILDCARD]") && r.stderr.contains("no routes"),
        "{r:?}"
    );
}

#[test]
fn namespace_changes_visibility() {
    let r = dataplane(&[
        "routes",
        "--namespace",
        "billing",
        "--json",
        "config/examples/egress",
    ]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("outbound|443||ledger.example.org"));
    let r = dataplane(&["routes", "--json", "config/examples/egress"]);
    assert!(!r.stdout.contains("ledger.example.org"));
}
