//! Table-driven tests of every validation rule, accept side and reject side. Each case is a
//! whole YAML object run through the full pipeline; it asserts that every expected code is
//! reported and that no error other than the expected ones is.

use crate::finding::{Code, Severity};
use crate::{Options, Source, build};

fn doc(kind: &str, spec: &str) -> String {
    let body: Vec<String> = spec.lines().map(|l| format!("  {l}")).collect();
    format!(
        "apiVersion: networking.istio.io/v1\nkind: {kind}\nmetadata:\n  name: t\n  namespace: ns1\nspec:\n{}\n",
        body.join("\n")
    )
}

fn codes_of(text: &str, mesh: Option<&str>) -> Vec<(Code, String)> {
    let exists = |p: &str| p.starts_with("/exists/");
    let opts = Options {
        file_exists: Some(&exists),
        namespace: "ns1",
        ..Options::default()
    };
    let mesh = mesh.map(|m| Source::new("mesh.yaml", m));
    build(&[Source::new("t.yaml", text)], mesh.as_ref(), &opts)
        .findings
        .into_iter()
        .map(|f| (f.code, f.to_string()))
        .collect()
}

fn check(name: &str, text: &str, mesh: Option<&str>, expect: &[Code]) {
    let got = codes_of(text, mesh);
    for code in expect {
        assert!(
            got.iter().any(|(c, _)| c == code),
            "{name}: expected {code:?}, got {got:#?}"
        );
    }
    for (code, line) in &got {
        if code.severity() == Severity::Error {
            assert!(expect.contains(code), "{name}: unexpected error {line}");
        }
    }
}

const SE_CASES: &[(&str, &str, &[Code])] = &[
    // Accept side (spec §3.1 "facts").
    (
        "minimal",
        "hosts: [a.example.com]\nports: [{number: 443, name: https, protocol: HTTPS}]\nresolution: DNS",
        &[],
    ),
    (
        "static without endpoints",
        "hosts: [a.com]\naddresses: [10.0.0.1]\nports: [{number: 80, name: tcp, protocol: TCP}]\nresolution: STATIC",
        &[],
    ),
    (
        "dns with ip endpoint",
        "hosts: [a.com]\nports: [{number: 80, name: http}]\nresolution: DNS\nendpoints: [{address: 1.2.3.4}]",
        &[],
    ),
    (
        "dns wildcard with endpoints",
        "hosts: ['*.google.com']\nports: [{number: 80, name: http}]\nresolution: DNS\nendpoints: [{address: lb.example.com}]",
        &[],
    ),
    (
        "short name host",
        "hosts: [foo]\nports: [{number: 80, name: http}]\nresolution: DNS",
        &[],
    ),
    (
        "dns round robin without endpoints",
        "hosts: [a.com]\nports: [{number: 80, name: http}]\nresolution: DNS_ROUND_ROBIN",
        &[],
    ),
    (
        "multi host dns address https warns",
        "hosts: [a.com, b.com]\naddresses: [10.0.0.1]\nports: [{number: 443, name: https, protocol: HTTPS}]\nresolution: DNS",
        &[Code::SE_MULTIHOST_ADDR_TCP],
    ),
    (
        "repeat target port",
        "hosts: [a.com]\nports: [{number: 80, name: a, protocol: HTTP, targetPort: 8080}, {number: 81, name: b, protocol: HTTP, targetPort: 8080}]\nresolution: DNS",
        &[],
    ),
    (
        "none cidr empty protocol",
        "hosts: [a.com]\naddresses: [10.0.0.0/24]\nports: [{number: 80, name: p}]",
        &[],
    ),
    (
        "duplicate hosts inside one entry",
        "hosts: [a.com, a.com]\nports: [{number: 80, name: http, protocol: HTTP}]",
        &[],
    ),
    (
        "lower-case tcp without address does not warn",
        "hosts: [a.com]\nports: [{number: 5432, name: p, protocol: tcp}]",
        &[],
    ),
    (
        "dns wildcard without endpoints warns",
        "hosts: ['*.a.com']\nports: [{number: 443, name: https, protocol: HTTPS}]\nresolution: DNS",
        &[Code::SE_DNS_WILDCARD],
    ),
    (
        "dynamic dns wildcard",
        "hosts: ['*.a.com']\nports: [{number: 443, name: tls, protocol: TLS}, {number: 80, name: http, protocol: HTTP}]\nresolution: DYNAMIC_DNS",
        &[],
    ),
    (
        "enum as number",
        "hosts: [a.com]\nports: [{number: 80, name: http}]\nresolution: 2\nlocation: 1",
        &[],
    ),
    (
        "targetPort zero is unset",
        "hosts: [a.com]\nports: [{number: 80, name: http, targetPort: 0}]\nresolution: DNS",
        &[],
    ),
    (
        "ipv6 vip",
        "hosts: [a.com]\naddresses: ['2001:db8::5', '2001:db8:1::/48']\nports: [{number: 5432, name: tcp, protocol: TCP}]",
        &[],
    ),
    (
        "unix endpoint",
        "hosts: [a.com]\nports: [{number: 80, name: http}]\nresolution: STATIC\nendpoints: [{address: 'unix:///var/run/a.sock'}, {address: 'unix://@abstract'}]",
        &[],
    ),
    // Reject side, in the order of spec §3.1.
    (
        "selector empty key",
        "hosts: [a.com]\nworkloadSelector: {labels: {'': x}}\nresolution: STATIC",
        &[Code::SE_SELECTOR_EMPTY_KEY],
    ),
    (
        "selector wildcard",
        "hosts: [a.com]\nworkloadSelector: {labels: {app: '*'}}\nresolution: STATIC",
        &[Code::SE_SELECTOR_WILDCARD],
    ),
    (
        "selector without labels",
        "hosts: [a.com]\nworkloadSelector: {}\nresolution: STATIC",
        &[Code::SE_SELECTOR_NO_LABELS, Code::IGNORED_FIELD],
    ),
    (
        "selector and endpoints",
        "hosts: [a.com]\nworkloadSelector: {labels: {app: a}}\nresolution: STATIC\nendpoints: [{address: 1.1.1.1}]",
        &[Code::SE_SELECTOR_AND_ENDPOINTS],
    ),
    (
        "no hosts",
        "hosts: []\nports: [{number: 80, name: http}]",
        &[Code::SE_NO_HOSTS],
    ),
    (
        "hosts missing",
        "ports: [{number: 80, name: http}]",
        &[Code::SE_NO_HOSTS],
    ),
    ("host star", "hosts: ['*']", &[Code::SE_HOST_FULL_WILDCARD]),
    (
        "host underscore",
        "hosts: [foo_bar.com]",
        &[Code::SE_HOST_INVALID],
    ),
    (
        "host ip literal",
        "hosts: [1.2.3.4]",
        &[Code::SE_HOST_INVALID],
    ),
    (
        "host inner wildcard",
        "hosts: [foo.*.com]",
        &[Code::SE_HOST_INVALID],
    ),
    (
        "host too long",
        "hosts: [aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.com]",
        &[Code::SE_HOST_INVALID],
    ),
    (
        "partial wildcard warns",
        "hosts: ['*foo.com']\nports: [{number: 80, name: http}]",
        &[Code::SE_HOST_PARTIAL_WILDCARD],
    ),
    (
        "address not ip",
        "hosts: [a.com]\naddresses: [foo]",
        &[Code::SE_ADDRESS_INVALID],
    ),
    (
        "address bad cidr",
        "hosts: [a.com]\naddresses: [10.0.0.0/33]",
        &[Code::SE_ADDRESS_INVALID],
    ),
    (
        "cidr with dns",
        "hosts: [a.com]\naddresses: [10.0.0.0/24]\nports: [{number: 80, name: http}]\nresolution: DNS",
        &[Code::SE_CIDR_RESOLUTION],
    ),
    (
        "null port",
        "hosts: [a.com]\nports: [null]",
        &[Code::SE_PORT_NULL],
    ),
    (
        "duplicate port name",
        "hosts: [a.com]\nports: [{number: 80, name: http}, {number: 81, name: http}]",
        &[Code::SE_PORT_NAME_DUP],
    ),
    (
        "duplicate port number",
        "hosts: [a.com]\nports: [{number: 80, name: a}, {number: 80, name: b}]",
        &[Code::SE_PORT_NUMBER_DUP],
    ),
    (
        "target port range",
        "hosts: [a.com]\nports: [{number: 80, name: http, targetPort: 70000}]",
        &[Code::SE_PORT_RANGE],
    ),
    (
        "tcp without address warns",
        "hosts: [a.com]\nports: [{number: 5432, name: p, protocol: TCP}]",
        &[Code::SE_TCP_NO_ADDRESS],
    ),
    (
        "unset protocol without address warns",
        "hosts: [a.com]\nports: [{number: 5432, name: db}]",
        &[Code::SE_TCP_NO_ADDRESS],
    ),
    (
        "port name invalid",
        "hosts: [a.com]\nports: [{number: 80, name: foo_bar}]",
        &[Code::SE_PORT_NAME_INVALID],
    ),
    (
        "port name empty",
        "hosts: [a.com]\nports: [{number: 80}]",
        &[Code::SE_PORT_NAME_INVALID],
    ),
    (
        "protocol unsupported",
        "hosts: [a.com]\nports: [{number: 80, name: p, protocol: h2c}]",
        &[Code::SE_PROTOCOL_UNSUPPORTED],
    ),
    (
        "port number zero",
        "hosts: [a.com]\nports: [{number: 0, name: p, protocol: HTTP}]",
        &[Code::SE_PORT_RANGE],
    ),
    (
        "port number too big",
        "hosts: [a.com]\nports: [{number: 65536, name: p, protocol: HTTP}]",
        &[Code::SE_PORT_RANGE],
    ),
    (
        "udp warns",
        "hosts: [a.com]\naddresses: [10.0.0.1]\nports: [{number: 53, name: dns, protocol: UDP}]",
        &[Code::SE_UDP_PORT],
    ),
    (
        "none with endpoints",
        "hosts: [a.com]\nports: [{number: 80, name: http}]\nendpoints: [{address: 1.1.1.1}]",
        &[Code::SE_NONE_WITH_ENDPOINTS],
    ),
    (
        "none with selector warns",
        "hosts: [a.com]\nports: [{number: 80, name: http}]\nworkloadSelector: {labels: {app: a}}",
        &[Code::SE_NONE_WITH_SELECTOR],
    ),
    (
        "null endpoint",
        "hosts: [a.com]\nports: [{number: 80, name: http}]\nresolution: STATIC\nendpoints: [null]",
        &[Code::SE_ENDPOINT_NULL],
    ),
    (
        "endpoint address required",
        "hosts: [a.com]\nports: [{number: 80, name: http}]\nresolution: STATIC\nendpoints: [{labels: {a: b}}]",
        &[Code::SE_ENDPOINT_ADDRESS_REQUIRED],
    ),
    (
        "endpoint network only warns",
        "hosts: [a.com]\nports: [{number: 80, name: http}]\nresolution: STATIC\nendpoints: [{network: n1}]",
        &[Code::SE_ENDPOINT_NETWORK_ONLY],
    ),
    (
        "uds relative",
        "hosts: [a.com]\nports: [{number: 80, name: http}]\nresolution: STATIC\nendpoints: [{address: 'unix://relative/sock'}]",
        &[Code::SE_UDS_PATH],
    ),
    (
        "uds dir",
        "hosts: [a.com]\nports: [{number: 80, name: http}]\nresolution: STATIC\nendpoints: [{address: 'unix:///var/run/'}]",
        &[Code::SE_UDS_PATH],
    ),
    (
        "uds with ports",
        "hosts: [a.com]\nports: [{number: 80, name: http}]\nresolution: STATIC\nendpoints: [{address: 'unix:///a.sock', ports: {http: 80}}]",
        &[Code::SE_UDS_PORTS],
    ),
    (
        "uds needs one port",
        "hosts: [a.com]\nports: [{number: 80, name: http}, {number: 81, name: b}]\nresolution: STATIC\nendpoints: [{address: 'unix:///a.sock'}]",
        &[Code::SE_UDS_ONE_PORT],
    ),
    (
        "static endpoint not ip",
        "hosts: [a.com]\nports: [{number: 80, name: http}]\nresolution: STATIC\nendpoints: [{address: b.com}]",
        &[Code::SE_STATIC_ENDPOINT_NOT_IP],
    ),
    (
        "endpoint port undefined",
        "hosts: [a.com]\nports: [{number: 80, name: http}]\nresolution: STATIC\nendpoints: [{address: 1.1.1.1, ports: {nope: 80}}]",
        &[Code::SE_ENDPOINT_PORT_UNDEFINED],
    ),
    (
        "endpoint port range",
        "hosts: [a.com]\nports: [{number: 80, name: http}]\nresolution: DNS\nendpoints: [{address: 1.1.1.1, ports: {http: 70000}}]",
        &[Code::SE_ENDPOINT_PORT_INVALID],
    ),
    (
        "endpoint label invalid",
        "hosts: [a.com]\nports: [{number: 80, name: http}]\nresolution: STATIC\nendpoints: [{address: 1.1.1.1, labels: {'bad key!': x}}]",
        &[Code::SE_ENDPOINT_LABEL_INVALID],
    ),
    (
        "dns host not fqdn (round robin wildcard)",
        "hosts: ['*.a.com']\nports: [{number: 80, name: http}]\nresolution: DNS_ROUND_ROBIN",
        &[Code::SE_DNS_HOST_NOT_FQDN],
    ),
    (
        "dns round robin two endpoints",
        "hosts: [a.com]\nports: [{number: 80, name: http}]\nresolution: DNS_ROUND_ROBIN\nendpoints: [{address: b.com}, {address: c.com}]",
        &[Code::SE_DNS_RR_MULTI_ENDPOINT],
    ),
    (
        "dns endpoint wildcard",
        "hosts: [a.com]\nports: [{number: 80, name: http}]\nresolution: DNS\nendpoints: [{address: '*.b.com'}]",
        &[Code::SE_DNS_ENDPOINT_INVALID],
    ),
    (
        "dns endpoint unix",
        "hosts: [a.com]\nports: [{number: 80, name: http}]\nresolution: DNS\nendpoints: [{address: 'unix:///a'}]",
        &[Code::SE_DNS_ENDPOINT_INVALID],
    ),
    (
        "dynamic dns exact host",
        "hosts: [a.com]\nports: [{number: 80, name: http}]\nresolution: DYNAMIC_DNS",
        &[Code::SE_DYNAMIC_DNS_INVALID],
    ),
    (
        "dynamic dns tcp port",
        "hosts: ['*.a.com']\nports: [{number: 5432, name: db, protocol: TCP}]\nresolution: DYNAMIC_DNS",
        &[Code::SE_DYNAMIC_DNS_INVALID, Code::SE_TCP_NO_ADDRESS],
    ),
    (
        "dynamic dns addresses",
        "hosts: ['*.a.com']\naddresses: [10.0.0.1]\nports: [{number: 80, name: http}]\nresolution: DYNAMIC_DNS",
        &[Code::SE_DYNAMIC_DNS_INVALID],
    ),
    (
        "multi host tcp",
        "hosts: [a.com, b.com]\naddresses: [10.0.0.1]\nports: [{number: 5432, name: db, protocol: TCP}]\nresolution: DNS",
        &[Code::SE_MULTIHOST_NON_HTTP_TLS, Code::SE_MULTIHOST_ADDR_TCP],
    ),
    (
        "multi host unset protocol",
        "hosts: [a.com, b.com]\nports: [{number: 5432, name: db}]\nresolution: DNS",
        &[Code::SE_MULTIHOST_NON_HTTP_TLS],
    ),
    (
        "resolution lower case",
        "hosts: [a.com]\nresolution: dns",
        &[Code::SE_RESOLUTION_UNSUPPORTED],
    ),
    (
        "resolution number out of range",
        "hosts: [a.com]\nresolution: 9",
        &[Code::SE_RESOLUTION_UNSUPPORTED],
    ),
    (
        "location unknown",
        "hosts: [a.com]\nlocation: OUTSIDE",
        &[Code::SE_LOCATION_UNSUPPORTED],
    ),
    (
        "exportTo duplicate",
        "hosts: [a.com]\nexportTo: [a, a]",
        &[Code::EXPORTTO_DUP],
    ),
    (
        "exportTo dot and own namespace",
        "hosts: [a.com]\nexportTo: ['.', ns1]",
        &[Code::EXPORTTO_DUP],
    ),
    (
        "exportTo public mix",
        "hosts: [a.com]\nexportTo: ['*', a]",
        &[Code::EXPORTTO_PUBLIC_MIX],
    ),
    (
        "exportTo none mix",
        "hosts: [a.com]\nexportTo: ['~', a]",
        &[Code::EXPORTTO_NONE_MIX],
    ),
    (
        "exportTo invalid",
        "hosts: [a.com]\nexportTo: [Bad_NS]",
        &[Code::EXPORTTO_INVALID],
    ),
    (
        "exportTo none alone",
        "hosts: [a.com]\nexportTo: ['~']",
        &[],
    ),
    (
        "reserved port warns",
        "hosts: [a.com]\nports: [{number: 15001, name: http, protocol: HTTP}]",
        &[Code::RESERVED_PORT],
    ),
    (
        "name prefix disagrees",
        "hosts: [a.com]\naddresses: [10.0.0.1]\nports: [{number: 80, name: http, protocol: TCP}]",
        &[Code::PORT_NAME_PROTOCOL_MISMATCH],
    ),
    (
        "endpoint network ignored",
        "hosts: [a.com]\nports: [{number: 80, name: http}]\nresolution: STATIC\nendpoints: [{address: 1.1.1.1, network: n1}]",
        &[Code::IGNORED_FIELD],
    ),
    (
        "endpoint locality ignored",
        "hosts: [a.com]\nports: [{number: 80, name: http}]\nresolution: STATIC\nendpoints: [{address: 1.1.1.1, locality: r/z}]",
        &[Code::IGNORED_FIELD],
    ),
    (
        "negative weight",
        "hosts: [a.com]\nports: [{number: 80, name: http}]\nresolution: STATIC\nendpoints: [{address: 1.1.1.1, weight: -1}]",
        &[Code::SE_ENDPOINT_PORT_INVALID],
    ),
];

#[test]
fn service_entry_rules() {
    for (name, spec, expect) in SE_CASES {
        check(name, &doc("ServiceEntry", spec), None, expect);
    }
}

#[test]
fn too_many_hosts() {
    let hosts: Vec<String> = (0..257).map(|i| format!("h{i}.com")).collect();
    let spec = format!(
        "hosts: [{}]\nports: [{{number: 80, name: http}}]\nresolution: DNS",
        hosts.join(", ")
    );
    check(
        "257 hosts",
        &doc("ServiceEntry", &spec),
        None,
        &[Code::LIMIT_EXCEEDED],
    );
}

const VS_CASES: &[(&str, &str, &[Code])] = &[
    (
        "full",
        "hosts: [a.com]\nhttp:\n- name: r\n  match:\n  - uri: {prefix: /v1}\n    method: {exact: GET}\n    headers: {x-a: {regex: 'b+'}, x-present: {}}\n    withoutHeaders: {x-no: {exact: '1'}}\n    queryParams: {q: {exact: v}}\n    port: 80\n  route:\n  - destination: {host: a.com, port: {number: 80}}\n    weight: 80\n  - destination: {host: b.com, subset: v2}\n    weight: 20\n  timeout: 3s\n  retries: {attempts: 3, perTryTimeout: 1s, retryOn: '5xx,503,connect-failure'}\n  fault:\n    delay: {fixedDelay: 5s, percentage: {value: 50}}\n    abort: {httpStatus: 503, percentage: {value: 10}}\n  rewrite: {uri: /v2, authority: b.com}\n  headers: {request: {set: {x: y}, add: {z: w}, remove: [q]}}\ntls:\n- match:\n  - sniHosts: [a.com]\n    destinationSubnets: [10.0.0.0/8]\n  route:\n  - destination: {host: a.com}\ntcp:\n- match:\n  - destinationSubnets: [10.0.0.1]\n    port: 3306\n  route:\n  - destination: {host: a.com}",
        &[],
    ),
    (
        "gateways with mesh",
        "hosts: [a.com]\ngateways: [mesh, gw]\nhttp: [{route: [{destination: {host: a.com}}]}]",
        &[],
    ),
    (
        "redirect",
        "hosts: [a.com]\nhttp: [{redirect: {uri: /x, redirectCode: 302}}]",
        &[],
    ),
    (
        "redirect derive port",
        "hosts: [a.com]\nhttp: [{redirect: {scheme: https, derivePort: FROM_REQUEST_PORT}}]",
        &[],
    ),
    (
        "redirect port and derive port",
        "hosts: [a.com]\nhttp: [{redirect: {port: 8443, derivePort: FROM_REQUEST_PORT}}]",
        &[Code::VS_REDIRECT_INVALID],
    ),
    (
        "direct response",
        "hosts: [a.com]\nhttp: [{directResponse: {status: 418, body: {bytes: aGk=}}}]",
        &[],
    ),
    (
        "no hosts",
        "http: [{route: [{destination: {host: a.com}}]}]",
        &[Code::VS_NO_HOSTS],
    ),
    (
        "bad host",
        "hosts: [a_b.com]\nhttp: [{route: [{destination: {host: a.com}}]}]",
        &[Code::VS_HOST_INVALID],
    ),
    (
        "star host on mesh",
        "hosts: ['*']\nhttp: [{route: [{destination: {host: a.com}}]}]",
        &[Code::VS_HOST_FULL_WILDCARD],
    ),
    (
        "overlapping hosts",
        "hosts: ['*.foo.com', a.foo.com]\nhttp: [{route: [{destination: {host: a.com}}]}]",
        &[Code::VS_HOST_DUP],
    ),
    ("no routes", "hosts: [a.com]", &[Code::VS_NO_ROUTES]),
    (
        "gateway only",
        "hosts: [a.com]\ngateways: [istio-system/gw]\nhttp: [{route: [{destination: {host: a.com}}]}]",
        &[Code::VS_NOT_FOR_MESH],
    ),
    (
        "two string matchers",
        "hosts: [a.com]\nhttp: [{match: [{uri: {exact: /a, prefix: /b}}], route: [{destination: {host: a.com}}]}]",
        &[Code::VS_STRING_MATCH_INVALID],
    ),
    (
        "empty method prefix",
        "hosts: [a.com]\nhttp: [{match: [{method: {prefix: ''}}], route: [{destination: {host: a.com}}]}]",
        &[Code::VS_STRING_MATCH_INVALID],
    ),
    (
        "bad regex",
        "hosts: [a.com]\nhttp: [{match: [{uri: {regex: '('}}], route: [{destination: {host: a.com}}]}]",
        &[Code::VS_REGEX_INVALID],
    ),
    (
        "backreference is not RE2",
        "hosts: [a.com]\nhttp: [{match: [{uri: {regex: '(a)\\1'}}], route: [{destination: {host: a.com}}]}]",
        &[Code::VS_REGEX_INVALID],
    ),
    (
        "empty header name",
        "hosts: [a.com]\nhttp: [{match: [{headers: {'': {exact: x}}}], route: [{destination: {host: a.com}}]}]",
        &[Code::VS_HEADER_NAME_INVALID],
    ),
    (
        "match port range",
        "hosts: [a.com]\nhttp: [{match: [{port: 70000}], route: [{destination: {host: a.com}}]}]",
        &[Code::VS_PORT_RANGE],
    ),
    (
        "no action",
        "hosts: [a.com]\nhttp: [{match: [{uri: {exact: /}}]}]",
        &[Code::VS_ROUTE_REQUIRED],
    ),
    (
        "route and redirect",
        "hosts: [a.com]\nhttp: [{redirect: {uri: /x}, route: [{destination: {host: a.com}}]}]",
        &[Code::VS_ROUTE_CONFLICT],
    ),
    (
        "destination missing",
        "hosts: [a.com]\nhttp: [{route: [{weight: 1}]}]",
        &[Code::VS_DESTINATION_REQUIRED],
    ),
    (
        "destination wildcard",
        "hosts: [a.com]\nhttp: [{route: [{destination: {host: '*.a.com'}}]}]",
        &[Code::VS_DESTINATION_HOST_INVALID],
    ),
    (
        "negative weight",
        "hosts: [a.com]\nhttp: [{route: [{destination: {host: a.com}, weight: -1}]}]",
        &[Code::VS_WEIGHT_NEGATIVE],
    ),
    (
        "zero total weight",
        "hosts: [a.com]\nhttp: [{route: [{destination: {host: a.com}, weight: 0}, {destination: {host: b.com}, weight: 0}]}]",
        &[Code::VS_WEIGHT_TOTAL_ZERO],
    ),
    (
        "zero timeout",
        "hosts: [a.com]\nhttp: [{timeout: 0s, route: [{destination: {host: a.com}}]}]",
        &[Code::VS_DURATION_INVALID],
    ),
    (
        "sub-ms timeout",
        "hosts: [a.com]\nhttp: [{timeout: 1500us, route: [{destination: {host: a.com}}]}]",
        &[Code::VS_DURATION_INVALID],
    ),
    (
        "negative attempts",
        "hosts: [a.com]\nhttp: [{retries: {attempts: -1}, route: [{destination: {host: a.com}}]}]",
        &[Code::VS_RETRY_INVALID],
    ),
    (
        "disabled retries with fields",
        "hosts: [a.com]\nhttp: [{retries: {attempts: 0, perTryTimeout: 1s}, route: [{destination: {host: a.com}}]}]",
        &[Code::VS_RETRY_INVALID],
    ),
    (
        "retryOn with space",
        "hosts: [a.com]\nhttp: [{retries: {attempts: 2, retryOn: '5xx, reset'}, route: [{destination: {host: a.com}}]}]",
        &[Code::VS_RETRY_ON_INVALID],
    ),
    (
        "empty fault",
        "hosts: [a.com]\nhttp: [{fault: {}, route: [{destination: {host: a.com}}]}]",
        &[Code::VS_FAULT_EMPTY],
    ),
    (
        "fault percentage",
        "hosts: [a.com]\nhttp: [{fault: {abort: {httpStatus: 503, percentage: {value: 101}}}, route: [{destination: {host: a.com}}]}]",
        &[Code::VS_FAULT_PERCENTAGE],
    ),
    (
        "fault status",
        "hosts: [a.com]\nhttp: [{fault: {abort: {httpStatus: 700}}, route: [{destination: {host: a.com}}]}]",
        &[Code::VS_FAULT_STATUS],
    ),
    (
        "fault grpc status",
        "hosts: [a.com]\nhttp: [{fault: {abort: {grpcStatus: NOPE}}, route: [{destination: {host: a.com}}]}]",
        &[Code::VS_FAULT_STATUS],
    ),
    (
        "exponential delay",
        "hosts: [a.com]\nhttp: [{fault: {delay: {exponentialDelay: 1s}}, route: [{destination: {host: a.com}}]}]",
        &[Code::VS_FAULT_UNSUPPORTED],
    ),
    (
        "abort without error type",
        "hosts: [a.com]\nhttp: [{fault: {abort: {percentage: {value: 1}}}, route: [{destination: {host: a.com}}]}]",
        &[Code::VS_FAULT_NO_ERROR],
    ),
    (
        "delay without duration",
        "hosts: [a.com]\nhttp: [{fault: {delay: {percentage: {value: 1}}}, route: [{destination: {host: a.com}}]}]",
        &[Code::VS_FAULT_NO_DELAY],
    ),
    (
        "deprecated percent",
        "hosts: [a.com]\nhttp: [{fault: {delay: {percent: 100, fixedDelay: 5s}}, route: [{destination: {host: a.com}}]}]",
        &[Code::DEPRECATED_FIELD],
    ),
    (
        "two rewrites",
        "hosts: [a.com]\nhttp: [{rewrite: {uri: /a, uriRegexRewrite: {match: a, rewrite: b}}, route: [{destination: {host: a.com}}]}]",
        &[Code::VS_REWRITE_CONFLICT],
    ),
    (
        "authority twice",
        "hosts: [a.com]\nhttp: [{rewrite: {authority: b.com}, headers: {request: {set: {host: c.com}}}, route: [{destination: {host: a.com}}]}]",
        &[Code::VS_REWRITE_CONFLICT],
    ),
    (
        "redirect code",
        "hosts: [a.com]\nhttp: [{redirect: {uri: /x, redirectCode: 200}}]",
        &[Code::VS_REDIRECT_INVALID],
    ),
    (
        "direct response status",
        "hosts: [a.com]\nhttp: [{directResponse: {status: 100}}]",
        &[Code::VS_DIRECT_RESPONSE_INVALID],
    ),
    (
        "empty header op",
        "hosts: [a.com]\nhttp: [{headers: {request: {set: {'': x}}}, route: [{destination: {host: a.com}}]}]",
        &[Code::VS_HEADER_OP_INVALID],
    ),
    (
        "tls without match",
        "hosts: [a.com]\ntls: [{route: [{destination: {host: a.com}}]}]",
        &[Code::VS_TLS_MATCH_REQUIRED],
    ),
    (
        "tls without route",
        "hosts: [a.com]\ntls: [{match: [{sniHosts: [a.com]}]}]",
        &[Code::VS_TLS_ROUTE_REQUIRED],
    ),
    (
        "tls without sni",
        "hosts: [a.com]\ntls: [{match: [{port: 443}], route: [{destination: {host: a.com}}]}]",
        &[Code::VS_TLS_SNI_REQUIRED],
    ),
    (
        "tls sni not subset",
        "hosts: [a.com]\ntls: [{match: [{sniHosts: [b.com]}], route: [{destination: {host: a.com}}]}]",
        &[Code::VS_TLS_SNI_NOT_SUBSET],
    ),
    (
        "tls sni ip warns",
        "hosts: [a.com]\ntls: [{match: [{sniHosts: [a.com, 1.2.3.4]}], route: [{destination: {host: a.com}}]}]",
        &[Code::VS_TLS_SNI_IP],
    ),
    (
        "tcp without route",
        "hosts: [a.com]\ntcp: [{match: [{port: 3306}]}]",
        &[Code::VS_TCP_ROUTE_REQUIRED],
    ),
    (
        "bad subnet",
        "hosts: [a.com]\ntcp: [{match: [{destinationSubnets: [10.0.0.0/40]}], route: [{destination: {host: a.com}}]}]",
        &[Code::VS_SUBNET_INVALID],
    ),
    (
        "exportTo none rejected",
        "hosts: [a.com]\nexportTo: ['~']\nhttp: [{route: [{destination: {host: a.com}}]}]",
        &[Code::EXPORTTO_INVALID],
    ),
    (
        "mirror ignored",
        "hosts: [a.com]\nhttp: [{mirror: {host: b.com}, route: [{destination: {host: a.com}}]}]",
        &[Code::IGNORED_FIELD],
    ),
];

#[test]
fn virtual_service_rules() {
    for (name, spec, expect) in VS_CASES {
        check(name, &doc("VirtualService", spec), None, expect);
    }
}

const DR_CASES: &[(&str, &str, &[Code])] = &[
    (
        "full",
        "host: a.com\ntrafficPolicy:\n  loadBalancer: {simple: ROUND_ROBIN}\n  connectionPool:\n    tcp: {maxConnections: 10, connectTimeout: 30ms, idleTimeout: 1h}\n    http: {http1MaxPendingRequests: 5, maxRequestsPerConnection: 1, maxRetries: 3, idleTimeout: 10s}\n  outlierDetection: {consecutive5xxErrors: 3, consecutiveGatewayErrors: 2, interval: 1s, baseEjectionTime: 15m, maxEjectionPercent: 50}\n  tls: {mode: SIMPLE, caCertificates: /exists/ca.pem, sni: a.com, subjectAltNames: [a.com]}\n  portLevelSettings:\n  - port: {number: 80}\n    tls: {mode: MUTUAL, clientCertificate: /exists/c.pem, privateKey: /exists/k.pem}\nsubsets:\n- name: v1\n  labels: {version: v1}\n  trafficPolicy: {loadBalancer: {simple: RANDOM}}",
        &[],
    ),
    (
        "wildcard host",
        "host: '*.a.com'\ntrafficPolicy: {tls: {mode: SIMPLE}}",
        &[],
    ),
    (
        "no host",
        "trafficPolicy: {tls: {mode: SIMPLE}}",
        &[Code::DR_HOST_REQUIRED],
    ),
    ("bad host", "host: a_b.com", &[Code::DR_HOST_INVALID]),
    (
        "empty policy",
        "host: a.com\ntrafficPolicy: {}",
        &[Code::DR_TRAFFIC_POLICY_EMPTY],
    ),
    (
        "port level without port",
        "host: a.com\ntrafficPolicy: {portLevelSettings: [{tls: {mode: SIMPLE}}]}",
        &[Code::DR_PORT_REQUIRED],
    ),
    (
        "duplicate subsets",
        "host: a.com\nsubsets: [{name: v1}, {name: v1}]",
        &[Code::DR_SUBSET_INVALID],
    ),
    (
        "subset without name",
        "host: a.com\nsubsets: [{labels: {a: b}}]",
        &[Code::DR_SUBSET_INVALID],
    ),
    (
        "tls mode",
        "host: a.com\ntrafficPolicy: {tls: {mode: STRICT}}",
        &[Code::DR_TLS_MODE_UNSUPPORTED],
    ),
    (
        "mutual without files",
        "host: a.com\ntrafficPolicy: {tls: {mode: MUTUAL}}",
        &[Code::DR_TLS_CERT_REQUIRED, Code::DR_TLS_KEY_REQUIRED],
    ),
    (
        "credential with files",
        "host: a.com\ntrafficPolicy: {tls: {mode: SIMPLE, credentialName: s, caCertificates: /exists/ca}}",
        &[Code::DR_TLS_CREDENTIAL_CONFLICT],
    ),
    (
        "credential name warns",
        "host: a.com\ntrafficPolicy: {tls: {mode: SIMPLE, credentialName: s}}",
        &[Code::DR_TLS_CREDENTIAL_NAME],
    ),
    (
        "insecure with ca",
        "host: a.com\ntrafficPolicy: {tls: {mode: SIMPLE, insecureSkipVerify: true, caCertificates: /exists/ca}}",
        &[Code::DR_TLS_INSECURE_CONFLICT],
    ),
    (
        "insecure with sans (mutual)",
        "host: a.com\ntrafficPolicy: {tls: {mode: MUTUAL, insecureSkipVerify: true, subjectAltNames: [a], clientCertificate: /exists/c, privateKey: /exists/k}}",
        &[Code::DR_TLS_INSECURE_CONFLICT],
    ),
    (
        "istio mutual warns",
        "host: a.com\ntrafficPolicy: {tls: {mode: ISTIO_MUTUAL}}",
        &[Code::DR_TLS_ISTIO_MUTUAL],
    ),
    (
        "missing files warn",
        "host: a.com\ntrafficPolicy: {tls: {mode: SIMPLE, caCertificates: /missing/ca.pem}}",
        &[Code::FILE_NOT_FOUND],
    ),
    (
        "empty pool",
        "host: a.com\ntrafficPolicy: {connectionPool: {}}",
        &[Code::DR_CONNECTION_POOL_INVALID],
    ),
    (
        "negative pool",
        "host: a.com\ntrafficPolicy: {connectionPool: {tcp: {maxConnections: -1}}}",
        &[Code::DR_CONNECTION_POOL_INVALID],
    ),
    (
        "client protocol and upgrade",
        "host: a.com\ntrafficPolicy: {connectionPool: {http: {useClientProtocol: true, h2UpgradePolicy: UPGRADE}}}",
        &[Code::DR_CONNECTION_POOL_INVALID],
    ),
    (
        "outlier percent",
        "host: a.com\ntrafficPolicy: {outlierDetection: {maxEjectionPercent: 101}}",
        &[Code::DR_OUTLIER_INVALID],
    ),
    (
        "local origin without split",
        "host: a.com\ntrafficPolicy: {outlierDetection: {consecutiveLocalOriginFailures: 2}}",
        &[Code::DR_OUTLIER_INVALID],
    ),
    (
        "deprecated consecutive errors",
        "host: a.com\ntrafficPolicy: {outlierDetection: {consecutiveErrors: 2}}",
        &[Code::DEPRECATED_FIELD],
    ),
    (
        "bad lb",
        "host: a.com\ntrafficPolicy: {loadBalancer: {simple: FASTEST}}",
        &[Code::DR_LOAD_BALANCER_INVALID],
    ),
    (
        "least conn deprecated",
        "host: a.com\ntrafficPolicy: {loadBalancer: {simple: LEAST_CONN}}",
        &[Code::DEPRECATED_FIELD],
    ),
    (
        "maglev not prime",
        "host: a.com\ntrafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x, maglev: {tableSize: 4}}}}",
        &[Code::DR_LOAD_BALANCER_INVALID],
    ),
    (
        "sub-ms timeout",
        "host: a.com\ntrafficPolicy: {connectionPool: {tcp: {connectTimeout: 500us}}}",
        &[Code::DR_DURATION_INVALID],
    ),
    (
        "exportTo none",
        "host: a.com\nexportTo: ['~']\ntrafficPolicy: {tls: {mode: SIMPLE}}",
        &[Code::EXPORTTO_INVALID],
    ),
    (
        "workload selector",
        "host: a.com\nworkloadSelector: {matchLabels: {app: a}}\ntrafficPolicy: {tls: {mode: SIMPLE}}",
        &[Code::IGNORED_FIELD],
    ),
];

#[test]
fn destination_rule_rules() {
    for (name, spec, expect) in DR_CASES {
        check(name, &doc("DestinationRule", spec), None, expect);
    }
}

const MESH_CASES: &[(&str, &str, &[Code])] = &[
    (
        "registry only",
        "outboundTrafficPolicy: {mode: REGISTRY_ONLY}\nconnectTimeout: 5s\ndefaultServiceExportTo: ['.']",
        &[],
    ),
    ("empty", "", &[]),
    (
        "full mesh config loads",
        "accessLogFile: /dev/stdout\nenableTracing: true\noutboundTrafficPolicy: {mode: ALLOW_ANY}",
        &[Code::IGNORED_FIELD],
    ),
    (
        "config map",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio}\ndata:\n  mesh: |\n    outboundTrafficPolicy:\n      mode: REGISTRY_ONLY\n",
        &[],
    ),
    (
        "bad mode",
        "outboundTrafficPolicy: {mode: DENY}",
        &[Code::MESH_POLICY_INVALID],
    ),
    (
        "bad duration",
        "connectTimeout: forever",
        &[Code::MESH_DURATION_INVALID],
    ),
    (
        "bad root namespace",
        "rootNamespace: Bad_NS",
        &[Code::MESH_INVALID],
    ),
    (
        "typo",
        "outboundTraficPolicy: {mode: REGISTRY_ONLY}",
        &[Code::UNKNOWN_FIELD],
    ),
    (
        "unknown nested field",
        "outboundTrafficPolicy: {mod: REGISTRY_ONLY}",
        &[Code::UNKNOWN_FIELD],
    ),
    (
        "bad export default",
        "defaultVirtualServiceExportTo: ['~']",
        &[Code::EXPORTTO_INVALID],
    ),
];

#[test]
fn mesh_rules() {
    for (name, mesh, expect) in MESH_CASES {
        check(name, "", Some(mesh), expect);
    }
}

#[test]
fn every_code_has_a_case() {
    // Codes the loader tests (load/tests.rs) and the table above exercise; a new code must be
    // added to a case before this passes.
    let covered: Vec<Code> = SE_CASES
        .iter()
        .chain(VS_CASES)
        .chain(DR_CASES)
        .chain(MESH_CASES)
        .flat_map(|(_, _, c)| c.iter().copied())
        .chain([
            Code::LIMIT_EXCEEDED,
            Code::YAML_PARSE,
            Code::SPEC_REQUIRED,
            Code::NAME_REQUIRED,
            Code::KIND_REQUIRED,
            Code::API_VERSION_UNSUPPORTED,
            Code::UNKNOWN_KIND,
            Code::DUPLICATE_OBJECT,
        ])
        .collect();
    let missing: Vec<&str> = Code::ALL
        .iter()
        .filter(|c| !covered.contains(c))
        .map(|c| c.as_str())
        .collect();
    assert!(missing.is_empty(), "codes without a test case: {missing:?}");
}
