//! HTTP rules of a VirtualService (spec §9.2, §9.4): matches, destinations, timeouts, retries,
//! faults, rewrites, redirects, direct responses and header operations, into typed routes.

use super::Context;
use super::names::truncate;
use super::virtual_service::{check_total_weight, destination, port, source_applies};
use crate::duration;
use crate::finding::{Code, Findings};
use crate::model::{
    EnumValue, Headers, HttpFaultInjection, HttpMatchRequest, HttpRetry,
    HttpRoute as WireHttpRoute, StringMatch as WireStringMatch,
};
use crate::spec::{
    AbortStatus, Fault, HeaderOps, HeaderRules, HttpAction, HttpMatch, HttpRoute, RetryOn,
    RetryPolicy, StringMatch, UriRewrite,
};

/// `retryOn` conditions Istio accepts (spec §9.4).
const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "envoy-ratelimited",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// gRPC status names an abort may use, in code order (the index is the status code).
pub const GRPC_STATUS: &[&str] = &[
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// Maximum regex length (Istio).
const MAX_REGEX_LEN: usize = 1024;

fn string_match(
    m: &WireStringMatch,
    at: &str,
    non_empty_prefix: bool,
    out: &mut Findings<'_>,
) -> Option<StringMatch> {
    let set = usize::from(m.exact.is_some())
        + usize::from(m.prefix.is_some())
        + usize::from(m.regex.is_some());
    if set > 1 {
        out.push(
            Code::VS_STRING_MATCH_INVALID,
            at,
            "only one of exact, prefix or regex may be set",
        );
        return None;
    }
    if let Some(e) = &m.exact {
        return Some(StringMatch::Exact(e.clone()));
    }
    if let Some(p) = &m.prefix {
        if p.is_empty() && non_empty_prefix {
            out.push(
                Code::VS_STRING_MATCH_INVALID,
                format!("{at}.prefix"),
                "prefix string match should not be empty",
            );
            return None;
        }
        return Some(StringMatch::Prefix(p.clone()));
    }
    if let Some(r) = &m.regex {
        return regex(r, &format!("{at}.regex"), out).map(StringMatch::Regex);
    }
    Some(StringMatch::Present)
}

/// Compile an RE2-style pattern anchored at both ends (Envoy `safe_regex` matches the whole
/// value).
fn regex(pattern: &str, at: &str, out: &mut Findings<'_>) -> Option<regex::Regex> {
    if pattern.len() > MAX_REGEX_LEN {
        out.push(
            Code::VS_REGEX_INVALID,
            at,
            format!(
                "regex is {} bytes, at most {MAX_REGEX_LEN} allowed",
                pattern.len()
            ),
        );
        return None;
    }
    match regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(1 << 20)
        .build()
    {
        Ok(re) => Some(re),
        Err(e) => {
            out.push(
                Code::VS_REGEX_INVALID,
                at,
                format!(
                    "invalid RE2 regex {:?}: {}",
                    truncate(pattern),
                    e.to_string().lines().last().unwrap_or_default()
                ),
            );
            None
        }
    }
}

fn http_match(
    m: &HttpMatchRequest,
    at: &str,
    ctx: &Context<'_>,
    out: &mut Findings<'_>,
) -> Option<HttpMatch> {
    let mut hm = HttpMatch {
        ignore_uri_case: m.ignore_uri_case,
        ..HttpMatch::default()
    };
    if let Some(u) = &m.uri {
        hm.uri = string_match(u, &format!("{at}.uri"), false, out);
        if m.ignore_uri_case {
            hm.uri = hm.uri.map(|u| match u {
                StringMatch::Exact(s) => StringMatch::Exact(s.to_lowercase()),
                StringMatch::Prefix(s) => StringMatch::Prefix(s.to_lowercase()),
                other => other,
            });
        }
    }
    hm.scheme = m
        .scheme
        .as_ref()
        .and_then(|s| string_match(s, &format!("{at}.scheme"), true, out));
    hm.method = m
        .method
        .as_ref()
        .and_then(|s| string_match(s, &format!("{at}.method"), true, out));
    hm.authority = m
        .authority
        .as_ref()
        .and_then(|s| string_match(s, &format!("{at}.authority"), true, out));
    let headers = |map: &std::collections::BTreeMap<String, WireStringMatch>,
                   field: &str,
                   out: &mut Findings<'_>| {
        let mut list = Vec::new();
        for (name, sm) in map {
            let at = format!("{at}.{field}.{name}");
            if name.is_empty()
                || name
                    .bytes()
                    .any(|b| b.is_ascii_whitespace() || b == b':' && name.len() == 1)
            {
                out.push(
                    Code::VS_HEADER_NAME_INVALID,
                    &at,
                    format!("invalid header name {name:?}"),
                );
                continue;
            }
            if let Some(sm) = string_match(sm, &at, true, out) {
                list.push((name.to_ascii_lowercase(), sm));
            }
        }
        list
    };
    hm.headers = headers(&m.headers, "headers", out);
    hm.without_headers = headers(&m.without_headers, "withoutHeaders", out);
    hm.query_params = m
        .query_params
        .iter()
        .filter_map(|(k, v)| {
            string_match(v, &format!("{at}.queryParams.{k}"), false, out).map(|sm| (k.clone(), sm))
        })
        .collect();
    hm.port = port(m.port, &format!("{at}.port"), out);
    if !m.stat_prefix.is_empty() {
        out.push(
            Code::IGNORED_FIELD,
            format!("{at}.statPrefix"),
            "stat prefixes are not used by the egress proxy",
        );
    }
    source_applies(
        &m.source_labels,
        &m.source_namespace,
        &m.gateways,
        at,
        ctx,
        out,
    )
    .then_some(hm)
}

fn header_ops(
    ops: Option<&crate::model::HeaderOperations>,
    at: &str,
    out: &mut Findings<'_>,
) -> HeaderOps {
    let Some(ops) = ops else {
        return HeaderOps::default();
    };
    let mut check = |name: &str, at: String| {
        if name.is_empty() {
            out.push(
                Code::VS_HEADER_OP_INVALID,
                at,
                "header name must not be empty",
            );
            false
        } else {
            true
        }
    };
    let set = ops
        .set
        .iter()
        .filter(|(k, _)| check(k, format!("{at}.set")))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    let add = ops
        .add
        .iter()
        .filter(|(k, _)| check(k, format!("{at}.add")))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    let remove = ops
        .remove
        .iter()
        .filter(|k| check(k, format!("{at}.remove")))
        .map(|k| k.to_ascii_lowercase())
        .collect();
    HeaderOps { set, add, remove }
}

fn header_rules(h: Option<&Headers>, at: &str, out: &mut Findings<'_>) -> HeaderRules {
    HeaderRules {
        request: header_ops(
            h.and_then(|h| h.request.as_ref()),
            &format!("{at}.request"),
            out,
        ),
        response: header_ops(
            h.and_then(|h| h.response.as_ref()),
            &format!("{at}.response"),
            out,
        ),
    }
}

fn duration_at(
    s: Option<&String>,
    at: &str,
    out: &mut Findings<'_>,
) -> Option<std::time::Duration> {
    let s = s?;
    duration::parse_istio(s)
        .map_err(|e| out.push(Code::VS_DURATION_INVALID, at, e))
        .ok()
}

fn retries(r: Option<&HttpRetry>, at: &str, out: &mut Findings<'_>) -> RetryPolicy {
    let Some(r) = r else {
        return RetryPolicy::istio_default();
    };
    if r.attempts < 0 {
        out.push(
            Code::VS_RETRY_INVALID,
            format!("{at}.attempts"),
            "attempts cannot be negative",
        );
        return RetryPolicy::disabled();
    }
    if r.attempts == 0 {
        if r.per_try_timeout.is_some()
            || !r.retry_on.is_empty()
            || r.retry_remote_localities.is_some()
            || r.backoff.is_some()
        {
            out.push(
                Code::VS_RETRY_INVALID,
                at.to_owned(),
                "http retry policy configured when attempts are set to 0 (disabled)",
            );
        }
        return RetryPolicy::disabled();
    }
    let mut policy = RetryPolicy::istio_default();
    policy.attempts = u32::try_from(r.attempts).unwrap_or(u32::MAX);
    policy.per_try_timeout = duration_at(
        r.per_try_timeout.as_ref(),
        &format!("{at}.perTryTimeout"),
        out,
    );
    if let Some(b) = duration_at(r.backoff.as_ref(), &format!("{at}.backoff"), out) {
        policy.backoff = b;
    }
    if let Some(v) = r.retry_ignore_previous_hosts {
        policy.retry_ignore_previous_hosts = v;
    }
    if r.retry_remote_localities.is_some() {
        out.push(
            Code::IGNORED_FIELD,
            format!("{at}.retryRemoteLocalities"),
            "localities are not used by the egress proxy",
        );
    }
    if !r.retry_on.is_empty() {
        let mut on = RetryOn::default();
        // Istio checks each item without trimming spaces (spec §9.4).
        for item in r.retry_on.split(',') {
            if RETRY_ON.contains(&item) {
                on.conditions.push(item.to_owned());
            } else if let Some(code) = item.parse::<u16>().ok().filter(|c| (100..=599).contains(c))
            {
                on.status_codes.push(code);
            } else {
                out.push(
                    Code::VS_RETRY_ON_INVALID,
                    format!("{at}.retryOn"),
                    format!("{:?} is not a valid retryOn policy", truncate(item)),
                );
            }
        }
        if !on.status_codes.is_empty()
            && !on.conditions.iter().any(|c| c == "retriable-status-codes")
        {
            on.conditions.push("retriable-status-codes".into());
        }
        policy.retry_on = on;
    }
    policy
}

fn percentage(p: Option<&crate::model::Percent>, at: &str, out: &mut Findings<'_>) -> Option<f64> {
    let v = p?.value;
    if v != 0.0 && !(0.0001..=100.0).contains(&v) {
        out.push(
            Code::VS_FAULT_PERCENTAGE,
            format!("{at}.percentage"),
            format!("percentage {v} is neither 0.0, nor in range [0.0001, 100.0]"),
        );
        return None;
    }
    Some(v)
}

fn fault(f: &HttpFaultInjection, at: &str, out: &mut Findings<'_>) -> Fault {
    let mut fault = Fault::default();
    if f.delay.is_none() && f.abort.is_none() {
        out.push(
            Code::VS_FAULT_EMPTY,
            at,
            "HTTP fault injection must have an abort and/or a delay",
        );
    }
    if let Some(d) = &f.delay {
        let at = format!("{at}.delay");
        let mut pct = percentage(d.percentage.as_ref(), &at, out);
        if let Some(p) = d.percent
            && d.percentage.is_none()
        {
            if (0..=100).contains(&p) {
                out.push(
                    Code::DEPRECATED_FIELD,
                    format!("{at}.percent"),
                    "percent is deprecated; use percentage.value (honoured)",
                );
                pct = Some(p as f64);
            } else {
                out.push(
                    Code::VS_FAULT_PERCENTAGE,
                    format!("{at}.percent"),
                    format!("percent {p} must be in range 0..100"),
                );
            }
        }
        if d.exponential_delay.is_some() {
            out.push(
                Code::VS_FAULT_UNSUPPORTED,
                format!("{at}.exponentialDelay"),
                "exponentialDelay not supported yet",
            );
        }
        match &d.fixed_delay {
            Some(s) => {
                if let Some(dur) = duration_at(Some(s), &format!("{at}.fixedDelay"), out) {
                    fault.delay = Some((dur, pct.unwrap_or(0.0)));
                }
            }
            None if d.exponential_delay.is_none() => {
                out.push(Code::VS_FAULT_NO_DELAY, &at, "delay must set fixedDelay");
            }
            None => {}
        }
    }
    if let Some(a) = &f.abort {
        let at = format!("{at}.abort");
        let pct = percentage(a.percentage.as_ref(), &at, out).unwrap_or(0.0);
        if a.http2_error.is_some() {
            out.push(
                Code::VS_FAULT_UNSUPPORTED,
                format!("{at}.http2Error"),
                "http2Error not supported yet",
            );
        }
        let status = match (a.http_status, &a.grpc_status) {
            (Some(s), _) if !(200..=600).contains(&s) => {
                out.push(
                    Code::VS_FAULT_STATUS,
                    format!("{at}.httpStatus"),
                    format!("HTTP status {s} is not in range 200-599"),
                );
                None
            }
            (Some(s), _) => Some(AbortStatus::Http(s as u16)),
            (None, Some(g)) if !GRPC_STATUS.contains(&g.as_str()) => {
                out.push(
                    Code::VS_FAULT_STATUS,
                    format!("{at}.grpcStatus"),
                    format!("gRPC status {:?} is not a valid status", truncate(g)),
                );
                None
            }
            (None, Some(g)) => Some(AbortStatus::Grpc(g.clone())),
            (None, None) => {
                if a.http2_error.is_none() {
                    out.push(
                        Code::VS_FAULT_NO_ERROR,
                        &at,
                        "abort configured, but error type not set",
                    );
                }
                None
            }
        };
        fault.abort = status.map(|s| (s, pct));
    }
    fault
}

pub(super) fn http_route(
    r: &WireHttpRoute,
    at: &str,
    ctx: &Context<'_>,
    out: &mut Findings<'_>,
) -> Option<HttpRoute> {
    let errors = out.errors();
    let mut matches = Vec::new();
    let mut dropped = 0;
    for (j, m) in r.matches.iter().enumerate() {
        match http_match(m, &format!("{at}.match[{j}]"), ctx, out) {
            Some(m) => matches.push(m),
            None => dropped += 1,
        }
    }
    let actions = usize::from(!r.route.is_empty())
        + usize::from(r.redirect.is_some())
        + usize::from(r.direct_response.is_some());
    if actions == 0 && r.delegate.is_none() {
        out.push(
            Code::VS_ROUTE_REQUIRED,
            at,
            "HTTP route, redirect or direct_response is required",
        );
    }
    if !r.route.is_empty() && r.redirect.is_some() {
        out.push(
            Code::VS_ROUTE_CONFLICT,
            at,
            "HTTP route cannot contain both route and redirect",
        );
    }
    if !r.route.is_empty() && r.direct_response.is_some() {
        out.push(
            Code::VS_ROUTE_CONFLICT,
            at,
            "HTTP route cannot contain both route and direct_response",
        );
    }
    if r.redirect.is_some() && r.direct_response.is_some() {
        out.push(
            Code::VS_ROUTE_CONFLICT,
            at,
            "HTTP route cannot contain both redirect and direct_response",
        );
    }
    for (field, set) in [
        ("delegate", r.delegate.is_some()),
        ("mirror", r.mirror.is_some()),
        ("mirrors", r.mirrors.is_some()),
        ("mirrorPercentage", r.mirror_percentage.is_some()),
        ("mirrorPercent", r.mirror_percent.is_some()),
        ("corsPolicy", r.cors_policy.is_some()),
    ] {
        if set {
            out.push(
                Code::IGNORED_FIELD,
                format!("{at}.{field}"),
                format!("{field} is not supported by the egress proxy; ignored"),
            );
        }
    }
    let mut dests = Vec::new();
    for (i, d) in r.route.iter().enumerate() {
        let dat = format!("{at}.route[{i}]");
        if let Some(dest) = destination(d.destination.as_ref(), d.weight, &dat, out) {
            dests.push((
                dest,
                header_rules(d.headers.as_ref(), &format!("{dat}.headers"), out),
            ));
        }
    }
    check_total_weight(
        r.route.len(),
        dests.iter().map(|(d, _)| u64::from(d.weight)).sum(),
        at,
        out,
    );
    let action = if let Some(red) = &r.redirect {
        let code = red.redirect_code.unwrap_or(301);
        if !(300..=399).contains(&code) {
            out.push(
                Code::VS_REDIRECT_INVALID,
                format!("{at}.redirect.redirectCode"),
                format!("redirect code {code} must be a 3xx status"),
            );
        }
        if red.uri.is_empty()
            && red.authority.is_empty()
            && red.scheme.is_empty()
            && red.port.is_none()
            && red.derive_port.is_none()
        {
            out.push(
                Code::VS_REDIRECT_INVALID,
                format!("{at}.redirect"),
                "redirect must specify URI, authority, scheme, or port",
            );
        }
        let port = port(red.port, &format!("{at}.redirect.port"), out);
        let port_from_request = match &red.derive_port {
            None => false,
            Some(EnumValue::Name(n)) if n == "FROM_PROTOCOL_DEFAULT" => false,
            Some(EnumValue::Name(n)) if n == "FROM_REQUEST_PORT" => true,
            Some(EnumValue::Number(0)) => false,
            Some(EnumValue::Number(1)) => true,
            Some(_) => {
                out.push(
                    Code::VS_REDIRECT_INVALID,
                    format!("{at}.redirect.derivePort"),
                    "derivePort must be FROM_PROTOCOL_DEFAULT or FROM_REQUEST_PORT",
                );
                false
            }
        };
        if port.is_some() && red.derive_port.is_some() {
            out.push(
                Code::VS_REDIRECT_INVALID,
                format!("{at}.redirect"),
                "redirect may set port or derivePort, not both",
            );
        }
        HttpAction::Redirect {
            uri: (!red.uri.is_empty()).then(|| red.uri.clone()),
            authority: (!red.authority.is_empty()).then(|| red.authority.clone()),
            port,
            scheme: (!red.scheme.is_empty()).then(|| red.scheme.clone()),
            port_from_request,
            code: code.clamp(300, 399) as u16,
        }
    } else if let Some(dr) = &r.direct_response {
        if !(200..=599).contains(&dr.status) {
            out.push(
                Code::VS_DIRECT_RESPONSE_INVALID,
                format!("{at}.directResponse.status"),
                format!("status {} is not in range 200-599", dr.status),
            );
        }
        let body = match dr.body.as_ref().map(|b| (&b.string, &b.bytes)) {
            Some((Some(_), Some(_))) => {
                out.push(
                    Code::VS_DIRECT_RESPONSE_INVALID,
                    format!("{at}.directResponse.body"),
                    "only one of string or bytes may be set",
                );
                Vec::new()
            }
            Some((Some(s), None)) => s.clone().into_bytes(),
            Some((None, Some(b))) => base64_decode(b).unwrap_or_else(|| {
                out.push(
                    Code::VS_DIRECT_RESPONSE_INVALID,
                    format!("{at}.directResponse.body.bytes"),
                    "bytes must be base64",
                );
                Vec::new()
            }),
            _ => Vec::new(),
        };
        HttpAction::DirectResponse {
            status: dr.status.clamp(200, 599) as u16,
            body,
        }
    } else {
        HttpAction::Route(dests)
    };
    let timeout = duration_at(r.timeout.as_ref(), &format!("{at}.timeout"), out);
    let retries = retries(r.retries.as_ref(), &format!("{at}.retries"), out);
    let fault = r
        .fault
        .as_ref()
        .map(|f| fault(f, &format!("{at}.fault"), out));
    let headers = header_rules(r.headers.as_ref(), &format!("{at}.headers"), out);
    let (mut uri_rewrite, mut authority_rewrite) = (None, None);
    if let Some(rw) = &r.rewrite {
        if !rw.uri.is_empty() && rw.uri_regex_rewrite.is_some() {
            out.push(
                Code::VS_REWRITE_CONFLICT,
                format!("{at}.rewrite"),
                "rewrite may only contain one of uri and uriRegexRewrite",
            );
        }
        if !rw.uri.is_empty() {
            uri_rewrite = Some(UriRewrite::Prefix(rw.uri.clone()));
        } else if let Some(rr) = &rw.uri_regex_rewrite {
            // Not anchored: the pattern replaces what it matches in the path.
            match regex::Regex::new(&rr.pattern) {
                Ok(re) if rr.pattern.len() <= MAX_REGEX_LEN => {
                    uri_rewrite = Some(UriRewrite::Regex(re, rr.rewrite.clone()))
                }
                _ => out.push(
                    Code::VS_REGEX_INVALID,
                    format!("{at}.rewrite.uriRegexRewrite.match"),
                    format!("invalid RE2 regex {:?}", truncate(&rr.pattern)),
                ),
            }
        }
        if !rw.authority.is_empty() {
            authority_rewrite = Some(rw.authority.clone());
        }
    }
    let sets_authority = |h: &HeaderRules| {
        h.request
            .set
            .iter()
            .any(|(k, _)| k == ":authority" || k == "host")
    };
    let dest_sets = match &action {
        HttpAction::Route(d) => d.iter().any(|(_, h)| sets_authority(h)),
        _ => false,
    };
    let authority_sets = usize::from(authority_rewrite.is_some())
        + usize::from(sets_authority(&headers))
        + usize::from(dest_sets);
    if authority_sets > 1 {
        out.push(
            Code::VS_REWRITE_CONFLICT,
            at,
            "authority may be set only once, in rewrite or in headers",
        );
    }
    if out.errors() > errors {
        return None;
    }
    if dropped > 0 && matches.is_empty() {
        // Every match block needs a workload or gateway this proxy is not: the rule never applies.
        return None;
    }
    Some(HttpRoute {
        name: r.name.clone(),
        matches,
        action,
        timeout,
        retries,
        fault,
        uri_rewrite,
        authority_rewrite,
        headers,
    })
}

/// Standard base64 (with or without padding); `None` when malformed.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let bytes: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let trimmed = bytes
        .strip_suffix(b"==")
        .or_else(|| bytes.strip_suffix(b"="))
        .unwrap_or(&bytes);
    if trimmed.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(trimmed.len() * 3 / 4);
    for chunk in trimmed.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= val(c)? << (18 - 6 * i);
        }
        let take = chunk.len() - 1;
        out.extend_from_slice(&n.to_be_bytes()[1..=take]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::base64_decode;

    #[test]
    fn base64() {
        assert_eq!(base64_decode("aGVsbG8="), Some(b"hello".to_vec()));
        assert_eq!(base64_decode("aGVsbG8"), Some(b"hello".to_vec()));
        assert_eq!(base64_decode("aGk="), Some(b"hi".to_vec()));
        assert_eq!(base64_decode("a"), None);
        assert_eq!(base64_decode("a$=="), None);
    }
}
