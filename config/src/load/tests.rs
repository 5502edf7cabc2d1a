//! Loader tests: stream handling, unknown fields, and hostile input (never a panic, always a
//! precise finding with a line).

use crate::finding::Code;
use crate::{Build, Options, Source, build};

fn run(text: &[u8]) -> Build {
    build(&[Source::new("f.yaml", text)], None, &Options::default())
}

fn codes(b: &Build) -> Vec<Code> {
    b.findings.iter().map(|f| f.code).collect()
}

const SE: &str = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: a\nspec:\n  hosts: [a.com]\n  ports: [{number: 80, name: http}]\n  resolution: DNS\n";

#[test]
fn multi_document_stream_with_empty_documents() {
    let text = format!(
        "---\n---\n{SE}---\n# only a comment\n---\n{}",
        SE.replace("name: a", "name: b")
    );
    let b = run(text.as_bytes());
    assert!(b.findings.is_empty(), "{:?}", b.findings);
    assert_eq!(b.registry.service_entries.len(), 2);
}

#[test]
fn list_wrapper_is_unwrapped_and_lines_point_into_items() {
    let text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: networking.istio.io/v1beta1\n  kind: ServiceEntry\n  metadata: {name: one}\n  spec: {hosts: [a.com], resolution: DNS}\n- apiVersion: networking.istio.io/v1alpha3\n  kind: ServiceEntry\n  metadata: {name: two}\n  spec:\n    hosts: [b.com]\n    resolution: BOGUS\n";
    let b = run(text.as_bytes());
    assert_eq!(codes(&b), vec![Code::SE_RESOLUTION_UNSUPPORTED]);
    assert_eq!(b.findings[0].line, 13, "{}", b.findings[0]);
    assert_eq!(b.registry.service_entries.len(), 1);
}

#[test]
fn every_unknown_field_is_reported_with_its_path() {
    let text = SE
        .replace("  resolution: DNS\n", "  resolutoin: DNS\n  ports2: []\n")
        .replace("metadata:\n", "metadata:\n  namepsace: x\n");
    let b = run(text.as_bytes());
    let unknown: Vec<(&str, usize)> = b
        .findings
        .iter()
        .filter(|f| f.code == Code::UNKNOWN_FIELD)
        .map(|f| (f.path.as_str(), f.line))
        .collect();
    assert_eq!(
        unknown,
        vec![
            ("metadata.namepsace", 4),
            ("spec.resolutoin", 9),
            ("spec.ports2", 10)
        ]
    );
    assert!(b.table.is_none(), "unknown fields reject the load");
}

#[test]
fn unknown_field_in_nested_lists() {
    let text = SE.replace(
        "{number: 80, name: http}",
        "{number: 80, name: http, protocl: HTTP}",
    );
    let b = run(text.as_bytes());
    assert_eq!(b.findings[0].path, "spec.ports[0].protocl");
    assert_eq!(b.findings[0].code, Code::UNKNOWN_FIELD);
}

#[test]
fn envelope_errors() {
    let cases: &[(&str, Code)] = &[
        (
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: a}\n",
            Code::SPEC_REQUIRED,
        ),
        (
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {}\nspec: {hosts: [a.com]}\n",
            Code::NAME_REQUIRED,
        ),
        (
            "apiVersion: networking.istio.io/v1\nmetadata: {name: a}\nspec: {}\n",
            Code::KIND_REQUIRED,
        ),
        (
            "apiVersion: networking.istio.io/v2\nkind: ServiceEntry\nmetadata: {name: a}\nspec: {hosts: [a.com]}\n",
            Code::API_VERSION_UNSUPPORTED,
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n",
            Code::UNKNOWN_KIND,
        ),
        ("- just\n- a list\n", Code::YAML_PARSE),
        (
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: a}\nspec: {hosts: a.com}\n",
            Code::YAML_PARSE,
        ),
    ];
    for (text, want) in cases {
        let b = run(text.as_bytes());
        assert_eq!(codes(&b), vec![*want], "{text}");
    }
}

#[test]
fn duplicate_objects_later_wins() {
    let text = format!("{SE}---\n{}", SE.replace("a.com", "b.com"));
    let b = run(text.as_bytes());
    assert_eq!(codes(&b), vec![Code::DUPLICATE_OBJECT]);
    assert_eq!(b.registry.service_entries.len(), 1);
    assert_eq!(b.registry.service_entries[0].hosts, vec!["b.com"]);
}

#[test]
fn syntax_error_has_line_and_column() {
    let b = run(b"apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nspec:\n  hosts: [a.com\n  ports: x\n");
    assert_eq!(codes(&b), vec![Code::YAML_PARSE]);
    assert!(b.findings[0].line >= 4, "{}", b.findings[0]);
    assert!(b.findings[0].message.contains("line"), "{}", b.findings[0]);
}

#[test]
fn duplicate_keys_are_an_error() {
    let text = SE.replace(
        "  resolution: DNS\n",
        "  resolution: DNS\n  resolution: STATIC\n",
    );
    let b = run(text.as_bytes());
    assert_eq!(codes(&b), vec![Code::YAML_PARSE]);
}

#[test]
fn non_utf8_is_reported_at_its_line() {
    let mut text = SE.as_bytes().to_vec();
    text.extend_from_slice(b"  exportTo: [\xff\xfe]\n");
    let b = run(&text);
    assert_eq!(codes(&b), vec![Code::YAML_PARSE]);
    assert_eq!(b.findings[0].line, 9);
}

#[test]
fn deep_nesting_does_not_overflow() {
    let mut text = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: a}\nspec:\n  hosts: ".to_owned();
    text.push_str(&"[".repeat(100_000));
    text.push_str(&"]".repeat(100_000));
    let b = run(text.as_bytes());
    assert_eq!(codes(&b), vec![Code::YAML_PARSE]);
}

#[test]
fn megabyte_strings_give_short_messages() {
    let host = "a".repeat(1 << 20);
    let text = SE.replace("[a.com]", &format!("[{host}]"));
    let b = run(text.as_bytes());
    assert_eq!(codes(&b), vec![Code::SE_HOST_INVALID]);
    assert!(b.findings[0].to_string().len() < 400);
}

#[test]
fn truncated_documents_never_panic() {
    let text = format!("{SE}---\n{}", VS);
    for cut in 0..text.len() {
        if text.is_char_boundary(cut) {
            let _ = run(&text.as_bytes()[..cut]);
        }
    }
}

pub(crate) const VS: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: v\nspec:\n  hosts: [a.com]\n  http:\n  - match:\n    - uri: {prefix: /a}\n    route:\n    - destination: {host: a.com}\n      weight: 100\n    timeout: 3s\n";

#[test]
fn billion_laughs_is_bounded() {
    let mut text = String::from("a: &a [\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\"]\n");
    for i in 1..10 {
        let prev = (b'a' + i - 1) as char;
        let cur = (b'a' + i) as char;
        text.push_str(&format!("{cur}: &{cur} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"));
    }
    let b = run(text.as_bytes());
    assert!(!b.findings.is_empty());
}

#[test]
fn errors_in_three_documents_are_all_reported() {
    let bad1 = SE
        .replace("name: a", "name: one")
        .replace("[a.com]", "['*']");
    let bad2 = SE
        .replace("name: a", "name: two")
        .replace("number: 80", "number: 0");
    let bad3 = VS.replace("timeout: 3s", "timeout: 0s");
    let text = format!("{bad1}---\n{bad2}---\n{bad3}");
    let b = run(text.as_bytes());
    let rows: Vec<String> = b.findings.iter().map(ToString::to_string).collect();
    assert_eq!(
        rows,
        vec![
            "f.yaml:6: ServiceEntry default/one: spec.hosts[0]: invalid host * [SE_HOST_FULL_WILDCARD]",
            "f.yaml:16: ServiceEntry default/two: spec.ports[0].number: port number 0 must be in the range 1..65535 [SE_PORT_RANGE]",
            "f.yaml:31: VirtualService default/v: spec.http[0].timeout: duration \"0s\" must be at least 1ms [VS_DURATION_INVALID]",
        ]
    );
}
