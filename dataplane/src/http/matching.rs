//! Which VirtualService HTTP rule a request takes (spec §9.2): rules in order, the first whose
//! match blocks hold (OR across blocks, AND within one); a rule without blocks matches all.
//! Pure: no I/O, no allocation beyond header-value joins.

use dataplane_config::spec::{HttpMatch, StringMatch};
use dataplane_config::table::CompiledHttpRoute;

/// What a rule can look at.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Method.
    pub method: &'a str,
    /// Path and query.
    pub path: &'a str,
    /// Authority (Host).
    pub authority: &'a str,
    /// `http` or `https`.
    pub scheme: &'a str,
    /// Header fields (names as sent).
    pub headers: &'a [(&'a str, &'a [u8])],
    /// Listener port.
    pub port: u16,
}

/// The first rule `request` matches, if any (none means 404 when the host has rules).
pub fn select<'r>(
    rules: &'r [CompiledHttpRoute],
    request: &Request<'_>,
) -> Option<&'r CompiledHttpRoute> {
    rules
        .iter()
        .find(|r| r.rule.matches.is_empty() || r.rule.matches.iter().any(|m| block(m, request)))
}

/// The value of a header as Envoy matches it: repeated fields joined with ",".
fn header(request: &Request<'_>, name: &str) -> Option<String> {
    let mut parts = request
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
        .peekable();
    parts.peek()?;
    Some(
        parts
            .map(String::from_utf8_lossy)
            .collect::<Vec<_>>()
            .join(","),
    )
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .find_map(|pair| match pair.split_once('=') {
            Some((k, v)) if k == name => Some(v),
            None if pair == name => Some(""),
            _ => None,
        })
}

fn block(m: &HttpMatch, request: &Request<'_>) -> bool {
    let (path, query) = request.path.split_once('?').unwrap_or((request.path, ""));
    if let Some(uri) = &m.uri {
        let ok = if m.ignore_uri_case {
            uri.matches(&path.to_lowercase())
        } else {
            uri.matches(path)
        };
        if !ok {
            return false;
        }
    }
    let scalar =
        |sm: &Option<StringMatch>, value: &str| sm.as_ref().is_none_or(|sm| sm.matches(value));
    if !scalar(&m.scheme, request.scheme)
        || !scalar(&m.method, request.method)
        || !scalar(&m.authority, request.authority)
    {
        return false;
    }
    if m.port.is_some_and(|p| p != request.port) {
        return false;
    }
    let headers_hold = m
        .headers
        .iter()
        .all(|(name, sm)| header(request, name).is_some_and(|v| sm.matches(&v)));
    let absent_hold = m
        .without_headers
        .iter()
        .all(|(name, sm)| header(request, name).is_none_or(|v| !sm.matches(&v)));
    let query_holds = m
        .query_params
        .iter()
        .all(|(name, sm)| query_param(query, name).is_some_and(|v| sm.matches(v)));
    headers_hold && absent_hold && query_holds
}

#[cfg(test)]
mod tests {
    use dataplane_config::table::{Decision, Detected, HostRoute};
    use dataplane_config::{Options, Source, build};

    use super::*;

    const VS: &str = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: a}\nspec:\n  hosts: [a.com]\n  ports: [{number: 80, name: http}]\n  resolution: DNS\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: v}\nspec:\n  hosts: [a.com]\n  http:\n  - name: v2\n    match: [{uri: {prefix: /v2/}, method: {exact: GET}}, {headers: {x-canary: {exact: 'yes'}}}]\n    route: [{destination: {host: a.com}}]\n  - name: query\n    match: [{queryParams: {debug: {exact: '1'}}, withoutHeaders: {x-block: {}}}]\n    route: [{destination: {host: a.com}}]\n  - name: regex\n    match: [{uri: {regex: '/items/[0-9]+'}, authority: {prefix: a.}}]\n    route: [{destination: {host: a.com}}]\n  - name: case\n    match: [{uri: {exact: /mixed}, ignoreUriCase: true}]\n    route: [{destination: {host: a.com}}]\n";

    fn rules() -> Vec<CompiledHttpRoute> {
        let b = build(&[Source::new("t.yaml", VS)], None, &Options::default());
        let t = b.table.expect("valid");
        let Decision::Http(id) =
            t.decide(t.listener("1.2.3.4:80".parse().unwrap()), Detected::Http)
        else {
            panic!()
        };
        let HostRoute::VirtualHost(vh) = t.http_config(id).route(b"a.com") else {
            panic!()
        };
        vh.routes.clone().expect("rules")
    }

    fn pick(method: &str, path: &str, headers: &[(&str, &str)]) -> Option<String> {
        let rules = rules();
        let headers: Vec<(&str, &[u8])> = headers.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
        let req = Request {
            method,
            path,
            authority: "a.com",
            scheme: "http",
            headers: &headers,
            port: 80,
        };
        select(&rules, &req).map(|r| r.rule.name.clone())
    }

    #[test]
    fn rule_selection_table() {
        type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], Option<&'a str>);
        let cases: &[Case<'_>] = &[
            ("GET", "/v2/x", &[], Some("v2")),
            ("POST", "/v2/x", &[], None),
            ("POST", "/other", &[("X-Canary", "yes")], Some("v2")),
            ("GET", "/v2?x=1", &[], None),
            ("GET", "/v2/?x=1", &[], Some("v2")),
            ("GET", "/q?debug=1", &[], Some("query")),
            ("GET", "/q?a=2&debug=1", &[], Some("query")),
            ("GET", "/q?debug=1", &[("x-block", "")], None),
            ("GET", "/q?debug=2", &[], None),
            ("GET", "/items/42", &[], Some("regex")),
            ("GET", "/items/42/more", &[], None),
            ("GET", "/items/42?x=y", &[], Some("regex")),
            ("GET", "/MIXED", &[], Some("case")),
            ("GET", "/nothing", &[], None),
        ];
        for (method, path, headers, want) in cases {
            assert_eq!(
                pick(method, path, headers).as_deref(),
                *want,
                "{method} {path} {headers:?}"
            );
        }
    }
}
