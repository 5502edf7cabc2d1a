//! What to do with one request once its virtual host is known (spec §9.2): the default route
//! or the first matching VirtualService rule, a weighted destination, timeout, retry policy,
//! fault, rewrites and header operations; or a reply the proxy makes itself (404 when no rule
//! matches, redirects, direct responses). Pure: randomness comes from the caller.

use std::sync::OnceLock;
use std::time::Duration;

use dataplane_config::spec::{
    AbortStatus, HeaderOps, HttpAction, RetryPolicy, StringMatch, UriRewrite,
};
use dataplane_config::table::{ClusterId, VirtualHost};

use super::matching::{self, Request};

/// A reply made by the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    /// Status.
    pub status: u16,
    /// Body.
    pub body: Vec<u8>,
    /// Extra headers (`location`, `grpc-status`).
    pub headers: Vec<(String, String)>,
    /// Envoy response flag (`NR`, `FI`, ...) or `-`.
    pub flag: &'static str,
    /// Why, for the access log.
    pub reason: &'static str,
}

impl LocalReply {
    /// A reply with a text body.
    pub fn new(status: u16, body: &str, flag: &'static str, reason: &'static str) -> Self {
        Self {
            status,
            body: body.as_bytes().to_vec(),
            headers: Vec::new(),
            flag,
            reason,
        }
    }
}

/// A request to forward.
#[derive(Debug)]
pub struct Forward<'t> {
    /// The cluster; `None`: the destination is not a service (503, cluster not found).
    pub cluster: Option<ClusterId>,
    /// Whole-exchange timeout, retries included.
    pub timeout: Option<Duration>,
    /// Retry policy.
    pub retries: &'t RetryPolicy,
    /// Injected delay.
    pub delay: Option<Duration>,
    /// Injected abort (after the delay).
    pub abort: Option<LocalReply>,
    /// New path (and query), if rewritten.
    pub path: Option<String>,
    /// New authority, if rewritten.
    pub authority: Option<String>,
    /// Request header operations, route then destination.
    pub request_ops: Vec<&'t HeaderOps>,
    /// Response header operations, route then destination.
    pub response_ops: Vec<&'t HeaderOps>,
    /// The rule's name, for logs.
    pub rule: Option<&'t str>,
}

impl<'t> Forward<'t> {
    /// A route with no rule: no timeout, fault, rewrite or header operation.
    pub fn plain(cluster: Option<ClusterId>, retries: &'t RetryPolicy) -> Self {
        Self {
            cluster,
            timeout: None,
            retries,
            delay: None,
            abort: None,
            path: None,
            authority: None,
            request_ops: Vec::new(),
            response_ops: Vec::new(),
            rule: None,
        }
    }
}

/// The outcome for one request.
#[derive(Debug)]
pub enum Plan<'t> {
    /// Answer locally.
    Reply(LocalReply),
    /// Forward upstream.
    Forward(Forward<'t>),
}

fn default_retries() -> &'static RetryPolicy {
    static POLICY: OnceLock<RetryPolicy> = OnceLock::new();
    POLICY.get_or_init(RetryPolicy::istio_default)
}

/// Whether a fault given as a percentage fires; `roll` is uniform in [0, 1).
fn fires(percentage: f64, roll: f64) -> bool {
    percentage > 0.0 && roll * 100.0 < percentage
}

/// Plan `request` on `vh`. `roll` yields uniform numbers in [0, 1) (weights, faults).
pub fn plan<'t>(
    vh: &'t VirtualHost,
    request: &Request<'_>,
    roll: &mut impl FnMut() -> f64,
) -> Plan<'t> {
    let Some(routes) = &vh.routes else {
        return Plan::Forward(Forward::plain(vh.cluster, default_retries()));
    };
    let Some(route) = matching::select(routes, request) else {
        return Plan::Reply(LocalReply::new(404, "", "NR", "no route matched"));
    };
    let rule = &route.rule;
    let (cluster, dest_ops) = match &rule.action {
        HttpAction::Route(dests) => {
            let i = pick(route.destinations.iter().map(|d| d.weight), roll());
            let cluster = route.destinations.get(i).and_then(|d| d.cluster);
            (cluster, dests.get(i).map(|(_, h)| h))
        }
        HttpAction::Redirect {
            uri,
            authority,
            port,
            scheme,
            port_from_request,
            code,
        } => {
            let scheme = scheme.as_deref().unwrap_or("http");
            let host = authority
                .clone()
                .unwrap_or_else(|| strip_port(request.authority).to_owned());
            let port = match (port, port_from_request) {
                (Some(p), _) => Some(*p),
                (None, true) => Some(request.port),
                (None, false) => None,
            };
            let path = uri.clone().unwrap_or_else(|| request.path.to_owned());
            let location = match port {
                Some(p) => format!("{scheme}://{host}:{p}{path}"),
                None => format!("{scheme}://{host}{path}"),
            };
            return Plan::Reply(LocalReply {
                status: *code,
                body: Vec::new(),
                headers: vec![("location".into(), location)],
                flag: "-",
                reason: "redirect",
            });
        }
        HttpAction::DirectResponse { status, body } => {
            return Plan::Reply(LocalReply {
                status: *status,
                body: body.clone(),
                headers: Vec::new(),
                flag: "-",
                reason: "direct response",
            });
        }
    };
    let (delay, abort) = match &rule.fault {
        None => (None, None),
        Some(f) => {
            let delay = f
                .delay
                .as_ref()
                .filter(|(_, pct)| fires(*pct, roll()))
                .map(|(d, _)| *d);
            let abort =
                f.abort
                    .as_ref()
                    .filter(|(_, pct)| fires(*pct, roll()))
                    .map(|(status, _)| match status {
                        AbortStatus::Http(code) => {
                            LocalReply::new(*code, "fault filter abort", "FI", "fault abort")
                        }
                        AbortStatus::Grpc(name) => LocalReply {
                            status: 200,
                            body: Vec::new(),
                            headers: vec![
                                ("content-type".into(), "application/grpc".into()),
                                ("grpc-status".into(), grpc_code(name).to_string()),
                                ("grpc-message".into(), "fault filter abort".into()),
                            ],
                            flag: "FI",
                            reason: "fault abort",
                        },
                    });
            (delay, abort)
        }
    };
    let mut request_ops = vec![&rule.headers.request];
    let mut response_ops = vec![&rule.headers.response];
    if let Some(h) = dest_ops {
        request_ops.push(&h.request);
        response_ops.push(&h.response);
    }
    Plan::Forward(Forward {
        cluster,
        timeout: rule.timeout,
        retries: &rule.retries,
        delay,
        abort,
        path: rule
            .uri_rewrite
            .as_ref()
            .map(|rw| rewrite_path(rw, rule_prefix(&rule.matches, request), request.path)),
        authority: rule.authority_rewrite.clone(),
        request_ops,
        response_ops,
        rule: Some(&rule.name),
    })
}

/// Index of a weighted pick: `roll` in [0, 1). Zero weights get nothing when others exist.
fn pick(weights: impl Iterator<Item = u32> + Clone, roll: f64) -> usize {
    let total: u64 = weights.clone().map(u64::from).sum();
    if total == 0 {
        return 0;
    }
    let mut at = (roll * total as f64) as u64;
    for (i, w) in weights.enumerate() {
        let w = u64::from(w);
        if at < w {
            return i;
        }
        at -= w;
    }
    0
}

/// The uri prefix the matching block matched on, if it was a prefix match.
fn rule_prefix<'a>(
    matches: &'a [dataplane_config::spec::HttpMatch],
    request: &Request<'_>,
) -> Option<&'a str> {
    let path = request
        .path
        .split_once('?')
        .map_or(request.path, |(p, _)| p);
    matches.iter().find_map(|m| match &m.uri {
        Some(StringMatch::Prefix(p)) if path.starts_with(p.as_str()) => Some(p.as_str()),
        _ => None,
    })
}

/// Apply a path rewrite (spec §9.2 `rewrite.uri`, `uriRegexRewrite`); the query is kept.
fn rewrite_path(rewrite: &UriRewrite, matched_prefix: Option<&str>, full: &str) -> String {
    let (path, query) = match full.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (full, None),
    };
    let new = match rewrite {
        UriRewrite::Prefix(to) => match matched_prefix {
            Some(prefix) => format!("{to}{}", &path[prefix.len()..]),
            None => to.clone(),
        },
        UriRewrite::Regex(re, with) => re.replace_all(path, with.as_str()).into_owned(),
    };
    match query {
        Some(q) => format!("{new}?{q}"),
        None => new,
    }
}

fn strip_port(authority: &str) -> &str {
    match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => &authority[..i],
        _ => authority,
    }
}

/// gRPC status numbers by name (`grpcStatus` in a fault abort): validation allows only the
/// names it lists, in code order.
fn grpc_code(name: &str) -> usize {
    dataplane_config::validate::http_route::GRPC_STATUS
        .iter()
        .position(|n| n.eq_ignore_ascii_case(name))
        .unwrap_or(2)
}

#[cfg(test)]
mod tests {
    use dataplane_config::table::{Decision, Detected, HostRoute, RouteTable};
    use dataplane_config::{Options, Source, build};

    use super::*;

    const CONFIG: &str = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: a}\nspec:\n  hosts: [a.com, v1.a.com, v2.a.com]\n  ports: [{number: 80, name: http}]\n  resolution: DNS\n---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: plain}\nspec:\n  hosts: [plain.com]\n  ports: [{number: 80, name: http}]\n  resolution: DNS\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: v}\nspec:\n  hosts: [a.com]\n  http:\n  - name: fault\n    match: [{uri: {prefix: /fault}}]\n    fault: {abort: {httpStatus: 418, percentage: {value: 50}}, delay: {fixedDelay: 5s, percentage: {value: 100}}}\n    route: [{destination: {host: a.com}}]\n  - name: rewrite\n    match: [{uri: {prefix: /old/}}]\n    rewrite: {uri: /new/, authority: b.com}\n    timeout: 3s\n    retries: {attempts: 5, retryOn: '503'}\n    route: [{destination: {host: a.com}}]\n  - name: redirect\n    match: [{uri: {exact: /moved}}]\n    redirect: {uri: /here, authority: c.com}\n  - name: direct\n    match: [{uri: {exact: /direct}}]\n    directResponse: {status: 204}\n  - name: split\n    match: [{uri: {prefix: /split}}]\n    route: [{destination: {host: v1.a.com}, weight: 80}, {destination: {host: nowhere.com}, weight: 20}]\n";

    fn table() -> RouteTable {
        let b = build(&[Source::new("t.yaml", CONFIG)], None, &Options::default());
        b.table.unwrap_or_else(|| panic!("{:?}", b.findings))
    }

    fn vh<'t>(t: &'t RouteTable, host: &str) -> &'t VirtualHost {
        let Decision::Http(id) =
            t.decide(t.listener("1.2.3.4:80".parse().unwrap()), Detected::Http)
        else {
            panic!("not http")
        };
        let HostRoute::VirtualHost(vh) = t.http_config(id).route(host.as_bytes()) else {
            panic!("no vhost")
        };
        vh
    }

    fn request(path: &str) -> Request<'_> {
        Request {
            method: "GET",
            path,
            authority: "a.com:80",
            scheme: "http",
            headers: &[],
            port: 80,
        }
    }

    #[test]
    fn default_route_has_istio_retries_and_no_timeout() {
        let t = table();
        let Plan::Forward(f) = plan(vh(&t, "plain.com"), &request("/x"), &mut || 0.0) else {
            panic!()
        };
        assert_eq!((f.timeout, f.retries.attempts), (None, 2));
        assert!(f.cluster.is_some());
    }

    #[test]
    fn rules_table() {
        let t = table();
        let a = vh(&t, "a.com");
        // No rule: 404.
        let Plan::Reply(r) = plan(a, &request("/none"), &mut || 0.0) else {
            panic!()
        };
        assert_eq!((r.status, r.flag), (404, "NR"));
        // Fault: rolls are the destination pick, the delay (100%: always), the abort (50%).
        let mut rolls = [0.0, 0.2, 0.4].into_iter();
        let Plan::Forward(f) = plan(a, &request("/fault"), &mut || rolls.next().unwrap()) else {
            panic!()
        };
        assert_eq!(f.delay, Some(Duration::from_secs(5)));
        assert_eq!(f.abort.map(|r| (r.status, r.flag)), Some((418, "FI")));
        let mut rolls = [0.0, 0.2, 0.6].into_iter();
        let Plan::Forward(f) = plan(a, &request("/fault"), &mut || rolls.next().unwrap()) else {
            panic!()
        };
        assert!(f.abort.is_none(), "a roll of 60 is not under 50%");
        // Rewrite keeps the rest of the path and the query.
        let Plan::Forward(f) = plan(a, &request("/old/x/y?q=1"), &mut || 0.0) else {
            panic!()
        };
        assert_eq!(f.path.as_deref(), Some("/new/x/y?q=1"));
        assert_eq!(f.authority.as_deref(), Some("b.com"));
        assert_eq!(f.timeout, Some(Duration::from_secs(3)));
        assert_eq!(f.retries.attempts, 5);
        assert_eq!(f.retries.retry_on.status_codes, vec![503]);
        // Redirect and direct response.
        let Plan::Reply(r) = plan(a, &request("/moved"), &mut || 0.0) else {
            panic!()
        };
        assert_eq!(r.status, 301);
        assert_eq!(
            r.headers,
            vec![("location".into(), "http://c.com/here".into())]
        );
        let Plan::Reply(r) = plan(a, &request("/direct"), &mut || 0.0) else {
            panic!()
        };
        assert_eq!(r.status, 204);
        // Split: 80/20 by the roll; the 20% goes nowhere (no cluster: 503).
        let Plan::Forward(f) = plan(a, &request("/split"), &mut || 0.79) else {
            panic!()
        };
        assert!(f.cluster.is_some());
        let Plan::Forward(f) = plan(a, &request("/split"), &mut || 0.81) else {
            panic!()
        };
        assert!(f.cluster.is_none());
    }

    #[test]
    fn weighted_pick_table() {
        let cases: &[(&[u32], f64, usize)] = &[
            (&[80, 20], 0.0, 0),
            (&[80, 20], 0.799, 0),
            (&[80, 20], 0.8, 1),
            (&[0, 5], 0.0, 1),
            (&[0, 0], 0.5, 0),
            (&[1], 0.99, 0),
        ];
        for (w, roll, want) in cases {
            assert_eq!(pick(w.iter().copied(), *roll), *want, "{w:?} {roll}");
        }
    }

    #[test]
    fn strip_port_is_bracket_aware() {
        for (a, want) in [
            ("a.com:80", "a.com"),
            ("a.com", "a.com"),
            ("[::1]:80", "[::1]"),
            ("[::1]", "[::1]"),
        ] {
            assert_eq!(strip_port(a), want);
        }
    }
}
