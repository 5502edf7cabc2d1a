//! DestinationRule validation (spec §10): Istio's `ValidateDestinationRule` and the TLS,
//! connection pool, outlier detection and load balancer rules, into typed policies.

use std::time::Duration;

use crate::duration;
use crate::finding::{Code, Findings, ObjectKey};
use crate::model::{
    ClientTlsSettings, ConnectionPoolSettings, DestinationRuleSpec, EnumValue,
    LoadBalancerSettings, OutlierDetection as WireOutlier, PortTrafficPolicy,
    TrafficPolicy as WirePolicy,
};
use crate::spec::{
    ClientTls, ConnectionPool, DestinationRule, LoadBalancer, OutlierDetection, PolicySettings,
    Subset, TlsMode, TrafficPolicy,
};

use super::names::{self, truncate};
use super::{Context, export_to};

/// Validate one DestinationRule; `Err` when invalid, `Ok(None)` when valid but not applicable
/// to this proxy (a workload selector).
pub(super) fn validate(
    key: &ObjectKey,
    dr: &DestinationRuleSpec,
    ctx: &Context<'_>,
    out: &mut Findings<'_>,
) -> Result<Option<DestinationRule>, ()> {
    let errors = out.errors();
    if dr.host.is_empty() {
        out.push(Code::DR_HOST_REQUIRED, "spec.host", "host: Required value");
    } else if dr.host == "*" {
        // Allowed by Istio: applies to every host.
    } else if let Err(e) = names::wildcard_domain(&dr.host) {
        out.push(Code::DR_HOST_INVALID, "spec.host", e);
    }
    let policy = dr
        .traffic_policy
        .as_ref()
        .map(|tp| traffic_policy(tp, "spec.trafficPolicy", ctx, out));
    let mut subsets: Vec<Subset> = Vec::new();
    for (i, s) in dr.subsets.iter().enumerate() {
        let at = format!("spec.subsets[{i}]");
        if !names::is_dns1123_label(&s.name) {
            out.push(
                Code::DR_SUBSET_INVALID,
                format!("{at}.name"),
                format!(
                    "subset name {:?} is not a valid DNS 1123 label",
                    truncate(&s.name)
                ),
            );
        } else if subsets.iter().any(|o| o.name == s.name) {
            out.push(
                Code::DR_SUBSET_INVALID,
                format!("{at}.name"),
                format!("duplicate subset names: {}", s.name),
            );
        }
        for (k, v) in &s.labels {
            if let Err(e) = names::label_key(k).and_then(|()| names::label_value(v)) {
                out.push(Code::DR_SUBSET_INVALID, format!("{at}.labels.{k}"), e);
            }
        }
        let tp = s
            .traffic_policy
            .as_ref()
            .map(|tp| traffic_policy(tp, &format!("{at}.trafficPolicy"), ctx, out));
        subsets.push(Subset {
            name: s.name.clone(),
            labels: s.labels.clone(),
            traffic_policy: tp,
        });
    }
    let export_to = export_to::check(
        &dr.export_to,
        &ctx.mesh.default_destination_rule_export_to,
        &key.namespace,
        false,
        "spec.exportTo",
        out,
    );
    if out.errors() > errors {
        return Err(());
    }
    if dr.workload_selector.is_some() {
        out.push(Code::IGNORED_FIELD, "spec.workloadSelector", "the egress proxy is not a selected workload: this DestinationRule does not apply to it");
        return Ok(None);
    }
    Ok(Some(DestinationRule {
        key: key.clone(),
        host: names::normalize_host(&dr.host),
        traffic_policy: policy,
        subsets,
        export_to: export_to.ok_or(())?,
    }))
}

fn traffic_policy(
    tp: &WirePolicy,
    at: &str,
    ctx: &Context<'_>,
    out: &mut Findings<'_>,
) -> TrafficPolicy {
    let empty = tp.load_balancer.is_none()
        && tp.connection_pool.is_none()
        && tp.outlier_detection.is_none()
        && tp.tls.is_none()
        && tp.port_level_settings.is_empty()
        && tp.tunnel.is_none()
        && tp.proxy_protocol.is_none()
        && tp.retry_budget.is_none();
    if empty {
        out.push(
            Code::DR_TRAFFIC_POLICY_EMPTY,
            at,
            "traffic policy must have at least one field",
        );
    }
    for (field, set) in [
        ("tunnel", tp.tunnel.is_some()),
        ("proxyProtocol", tp.proxy_protocol.is_some()),
        ("retryBudget", tp.retry_budget.is_some()),
    ] {
        if set {
            out.push(
                Code::IGNORED_FIELD,
                format!("{at}.{field}"),
                format!("{field} is not supported by the egress proxy; ignored"),
            );
        }
    }
    let default = settings(
        tp.load_balancer.as_ref(),
        tp.connection_pool.as_ref(),
        tp.outlier_detection.as_ref(),
        tp.tls.as_ref(),
        at,
        ctx,
        out,
    );
    let mut ports: Vec<(u16, PolicySettings)> = Vec::new();
    for (i, p) in tp.port_level_settings.iter().enumerate() {
        let pat = format!("{at}.portLevelSettings[{i}]");
        let number = p.port.as_ref().map_or(0, |p| p.number);
        if number == 0 {
            out.push(
                Code::DR_PORT_REQUIRED,
                format!("{pat}.port"),
                "portTrafficPolicy must have valid port",
            );
            continue;
        }
        if !(1..=65535).contains(&number) {
            out.push(
                Code::DR_PORT_REQUIRED,
                format!("{pat}.port.number"),
                format!("port number {number} must be in the range 1..65535"),
            );
            continue;
        }
        let PortTrafficPolicy {
            load_balancer,
            connection_pool,
            outlier_detection,
            tls,
            ..
        } = p;
        if load_balancer.is_none()
            && connection_pool.is_none()
            && outlier_detection.is_none()
            && tls.is_none()
        {
            out.push(
                Code::DR_TRAFFIC_POLICY_EMPTY,
                &pat,
                "port traffic policy must have at least one field",
            );
        }
        let s = settings(
            load_balancer.as_ref(),
            connection_pool.as_ref(),
            outlier_detection.as_ref(),
            tls.as_ref(),
            &pat,
            ctx,
            out,
        );
        ports.push((number as u16, s));
    }
    TrafficPolicy { default, ports }
}

fn settings(
    lb: Option<&LoadBalancerSettings>,
    pool: Option<&ConnectionPoolSettings>,
    outlier: Option<&WireOutlier>,
    tls: Option<&ClientTlsSettings>,
    at: &str,
    ctx: &Context<'_>,
    out: &mut Findings<'_>,
) -> PolicySettings {
    PolicySettings {
        load_balancer: lb.and_then(|lb| load_balancer(lb, &format!("{at}.loadBalancer"), out)),
        connection_pool: pool.map(|p| connection_pool(p, &format!("{at}.connectionPool"), out)),
        outlier_detection: outlier
            .map(|o| outlier_detection(o, &format!("{at}.outlierDetection"), out)),
        tls: tls.and_then(|t| client_tls(t, &format!("{at}.tls"), ctx, out)),
    }
}

fn dur(s: Option<&String>, at: String, out: &mut Findings<'_>) -> Option<Duration> {
    duration::parse_istio(s?)
        .map_err(|e| out.push(Code::DR_DURATION_INVALID, at, e))
        .ok()
}

fn count(v: Option<i64>, at: String, code: Code, out: &mut Findings<'_>) -> Option<u32> {
    match v? {
        n if n < 0 => {
            out.push(code, at, format!("{n} must not be negative"));
            None
        }
        n => Some(u32::try_from(n).unwrap_or(u32::MAX)),
    }
}

fn load_balancer(
    lb: &LoadBalancerSettings,
    at: &str,
    out: &mut Findings<'_>,
) -> Option<LoadBalancer> {
    if lb.simple.is_some() && lb.consistent_hash.is_some() {
        out.push(
            Code::DR_LOAD_BALANCER_INVALID,
            at,
            "only one of simple or consistentHash may be set",
        );
    }
    if let Some(ch) = &lb.consistent_hash {
        if let Some(size) = ch.maglev.as_ref().and_then(|m| m.table_size)
            && !(is_prime(size) && size < 5_000_011)
        {
            out.push(
                Code::DR_LOAD_BALANCER_INVALID,
                format!("{at}.consistentHash.maglev.tableSize"),
                format!("table size {size} must be a prime number less than 5000011"),
            );
        }
        out.push(
            Code::IGNORED_FIELD,
            format!("{at}.consistentHash"),
            "consistent hashing is not supported yet; the default (LEAST_REQUEST) is used",
        );
    }
    for (field, set) in [
        ("localityLbSetting", lb.locality_lb_setting.is_some()),
        ("warmupDurationSecs", lb.warmup_duration_secs.is_some()),
        ("warmup", lb.warmup.is_some()),
    ] {
        if set {
            out.push(
                Code::IGNORED_FIELD,
                format!("{at}.{field}"),
                format!("{field} is not supported by the egress proxy; ignored"),
            );
        }
    }
    let simple = lb.simple.as_ref()?;
    let name = match simple {
        EnumValue::Name(n) => n.as_str(),
        EnumValue::Number(0) => "UNSPECIFIED",
        EnumValue::Number(1) => "LEAST_CONN",
        EnumValue::Number(2) => "RANDOM",
        EnumValue::Number(3) => "PASSTHROUGH",
        EnumValue::Number(4) => "ROUND_ROBIN",
        EnumValue::Number(5) => "LEAST_REQUEST",
        EnumValue::Number(_) => "",
    };
    Some(match name {
        "UNSPECIFIED" | "LEAST_REQUEST" => LoadBalancer::LeastRequest,
        "LEAST_CONN" => {
            out.push(
                Code::DEPRECATED_FIELD,
                format!("{at}.simple"),
                "LEAST_CONN is deprecated; use LEAST_REQUEST (honoured)",
            );
            LoadBalancer::LeastRequest
        }
        "ROUND_ROBIN" => LoadBalancer::RoundRobin,
        "RANDOM" => LoadBalancer::Random,
        "PASSTHROUGH" => LoadBalancer::Passthrough,
        _ => {
            out.push(Code::DR_LOAD_BALANCER_INVALID, format!("{at}.simple"), "unsupported load balancer (one of UNSPECIFIED, LEAST_REQUEST, ROUND_ROBIN, RANDOM, PASSTHROUGH)");
            return None;
        }
    })
}

fn is_prime(n: i64) -> bool {
    n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| n % d != 0)
}

fn connection_pool(p: &ConnectionPoolSettings, at: &str, out: &mut Findings<'_>) -> ConnectionPool {
    const C: Code = Code::DR_CONNECTION_POOL_INVALID;
    let mut pool = ConnectionPool::default();
    if p.tcp.is_none() && p.http.is_none() {
        out.push(C, at, "connection pool must have at least one field");
    }
    if let Some(t) = &p.tcp {
        let at = format!("{at}.tcp");
        pool.max_connections = count(t.max_connections, format!("{at}.maxConnections"), C, out);
        pool.connect_timeout = dur(
            t.connect_timeout.as_ref(),
            format!("{at}.connectTimeout"),
            out,
        );
        pool.tcp_idle_timeout = dur(t.idle_timeout.as_ref(), format!("{at}.idleTimeout"), out);
        pool.max_connection_duration = dur(
            t.max_connection_duration.as_ref(),
            format!("{at}.maxConnectionDuration"),
            out,
        );
        if let Some(k) = &t.tcp_keepalive {
            count(k.probes, format!("{at}.tcpKeepalive.probes"), C, out);
            dur(k.time.as_ref(), format!("{at}.tcpKeepalive.time"), out);
            dur(
                k.interval.as_ref(),
                format!("{at}.tcpKeepalive.interval"),
                out,
            );
            out.push(
                Code::IGNORED_FIELD,
                format!("{at}.tcpKeepalive"),
                "upstream keep-alive probes are not configured by the egress proxy yet; ignored",
            );
        }
    }
    if let Some(h) = &p.http {
        let at = format!("{at}.http");
        pool.http1_max_pending_requests = count(
            h.http1_max_pending_requests,
            format!("{at}.http1MaxPendingRequests"),
            C,
            out,
        );
        pool.max_requests_per_connection = count(
            h.max_requests_per_connection,
            format!("{at}.maxRequestsPerConnection"),
            C,
            out,
        );
        pool.max_retries = count(h.max_retries, format!("{at}.maxRetries"), C, out);
        pool.http_idle_timeout = dur(h.idle_timeout.as_ref(), format!("{at}.idleTimeout"), out);
        count(
            h.http2_max_requests,
            format!("{at}.http2MaxRequests"),
            C,
            out,
        );
        count(
            h.max_concurrent_streams,
            format!("{at}.maxConcurrentStreams"),
            C,
            out,
        );
        let upgrade = match &h.h2_upgrade_policy {
            None => None,
            Some(EnumValue::Name(n))
                if ["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"].contains(&n.as_str()) =>
            {
                Some(n.clone())
            }
            Some(EnumValue::Number(n @ 0..=2)) => {
                Some(["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"][*n as usize].to_owned())
            }
            Some(_) => {
                out.push(
                    C,
                    format!("{at}.h2UpgradePolicy"),
                    "unsupported h2UpgradePolicy (one of DEFAULT, DO_NOT_UPGRADE, UPGRADE)",
                );
                None
            }
        };
        if h.use_client_protocol == Some(true) && upgrade.as_deref() == Some("UPGRADE") {
            out.push(
                C,
                &at,
                "useClientProtocol must not be used with H2UpgradePolicy::UPGRADE",
            );
        }
        for (field, set) in [
            ("http2MaxRequests", h.http2_max_requests.is_some()),
            ("maxConcurrentStreams", h.max_concurrent_streams.is_some()),
            ("h2UpgradePolicy", h.h2_upgrade_policy.is_some()),
            ("useClientProtocol", h.use_client_protocol.is_some()),
        ] {
            if set {
                out.push(
                    Code::IGNORED_FIELD,
                    format!("{at}.{field}"),
                    "upstreams are HTTP/1.1; ignored",
                );
            }
        }
    }
    pool
}

fn outlier_detection(o: &WireOutlier, at: &str, out: &mut Findings<'_>) -> OutlierDetection {
    const C: Code = Code::DR_OUTLIER_INVALID;
    let mut five = count(
        o.consecutive_5xx_errors,
        format!("{at}.consecutive5xxErrors"),
        C,
        out,
    );
    if let Some(e) = o.consecutive_errors {
        out.push(
            Code::DEPRECATED_FIELD,
            format!("{at}.consecutiveErrors"),
            "consecutiveErrors is deprecated; use consecutive5xxErrors",
        );
        if five.is_none() {
            five = count(Some(e), format!("{at}.consecutiveErrors"), C, out);
        }
    }
    let gateway = count(
        o.consecutive_gateway_errors,
        format!("{at}.consecutiveGatewayErrors"),
        C,
        out,
    );
    let local = count(
        o.consecutive_local_origin_failures,
        format!("{at}.consecutiveLocalOriginFailures"),
        C,
        out,
    );
    if local.unwrap_or(0) > 0 && o.split_external_local_origin_errors != Some(true) {
        out.push(C, format!("{at}.consecutiveLocalOriginFailures"), "consecutive local origin errors is set without split external local origin errors flag");
    }
    if o.split_external_local_origin_errors.is_some() {
        out.push(
            Code::IGNORED_FIELD,
            format!("{at}.splitExternalLocalOriginErrors"),
            "local-origin errors are counted with the others; ignored",
        );
    }
    let mut percent = |v: Option<i64>, field: &str, default: u32| match v {
        None => default,
        Some(p) if (0..=100).contains(&p) => p as u32,
        Some(p) => {
            out.push(
                C,
                format!("{at}.{field}"),
                format!("outlier detection percent {p} must be in range [0, 100]"),
            );
            default
        }
    };
    let max_ejection_percent = percent(o.max_ejection_percent, "maxEjectionPercent", 10);
    let min_health_percent = percent(o.min_health_percent, "minHealthPercent", 0);
    OutlierDetection {
        consecutive_5xx_errors: five.unwrap_or(5),
        consecutive_gateway_errors: gateway.unwrap_or(0),
        interval: dur(o.interval.as_ref(), format!("{at}.interval"), out)
            .unwrap_or(Duration::from_secs(10)),
        base_ejection_time: dur(
            o.base_ejection_time.as_ref(),
            format!("{at}.baseEjectionTime"),
            out,
        )
        .unwrap_or(Duration::from_secs(30)),
        max_ejection_percent,
        min_health_percent,
    }
}

fn client_tls(
    t: &ClientTlsSettings,
    at: &str,
    ctx: &Context<'_>,
    out: &mut Findings<'_>,
) -> Option<ClientTls> {
    let mode = match &t.mode {
        None => TlsMode::Disable,
        Some(EnumValue::Name(n)) => match n.as_str() {
            "DISABLE" => TlsMode::Disable,
            "SIMPLE" => TlsMode::Simple,
            "MUTUAL" => TlsMode::Mutual,
            "ISTIO_MUTUAL" => TlsMode::IstioMutual,
            _ => return bad_mode(at, out),
        },
        Some(EnumValue::Number(n)) => match n {
            0 => TlsMode::Disable,
            1 => TlsMode::Simple,
            2 => TlsMode::Mutual,
            3 => TlsMode::IstioMutual,
            _ => return bad_mode(at, out),
        },
    };
    let has_files = !t.client_certificate.is_empty()
        || !t.private_key.is_empty()
        || !t.ca_certificates.is_empty()
        || !t.ca_crl.is_empty();
    if !t.credential_name.is_empty() {
        if has_files {
            out.push(Code::DR_TLS_CREDENTIAL_CONFLICT, at, "cannot specify client certificates or CA certificate or CA CRL If credentialName is set");
        } else {
            out.push(Code::DR_TLS_CREDENTIAL_NAME, format!("{at}.credentialName"), "credentialName needs Kubernetes secrets, which an egress node does not read: connections that need it fail");
        }
    }
    let insecure = t.insecure_skip_verify == Some(true);
    match mode {
        TlsMode::Mutual if t.credential_name.is_empty() => {
            if t.client_certificate.is_empty() {
                out.push(Code::DR_TLS_CERT_REQUIRED, format!("{at}.clientCertificate"), "client certificate required for mutual tls");
            }
            if t.private_key.is_empty() {
                out.push(Code::DR_TLS_KEY_REQUIRED, format!("{at}.privateKey"), "private key required for mutual tls");
            }
        }
        TlsMode::IstioMutual => out.push(Code::DR_TLS_ISTIO_MUTUAL, format!("{at}.mode"), "ISTIO_MUTUAL needs Istio-issued certificates, which an egress node does not have: connections that need it fail"),
        _ => {}
    }
    if insecure {
        let conflict = match mode {
            TlsMode::Simple => {
                !t.ca_certificates.is_empty()
                    || !t.credential_name.is_empty()
                    || !t.subject_alt_names.is_empty()
            }
            TlsMode::Mutual => !t.ca_certificates.is_empty() || !t.subject_alt_names.is_empty(),
            _ => false,
        };
        if conflict {
            out.push(Code::DR_TLS_INSECURE_CONFLICT, format!("{at}.insecureSkipVerify"), "cannot set caCertificates, credentialName or subjectAltNames when InsecureSkipVerify is true");
        }
    }
    if matches!(mode, TlsMode::Simple | TlsMode::Mutual)
        && let Some(exists) = ctx.file_exists
    {
        for (field, path) in [
            ("clientCertificate", &t.client_certificate),
            ("privateKey", &t.private_key),
            ("caCertificates", &t.ca_certificates),
            ("caCrl", &t.ca_crl),
        ] {
            if !path.is_empty() && !exists(path) {
                out.push(Code::FILE_NOT_FOUND, format!("{at}.{field}"), format!("file {path:?} does not exist or cannot be read; connections that need it will fail until it does"));
            }
        }
    }
    let opt = |s: &String| (!s.is_empty()).then(|| s.clone());
    Some(ClientTls {
        mode,
        client_certificate: opt(&t.client_certificate),
        private_key: opt(&t.private_key),
        ca_certificates: opt(&t.ca_certificates),
        ca_crl: opt(&t.ca_crl),
        subject_alt_names: t.subject_alt_names.clone(),
        sni: opt(&t.sni),
        insecure_skip_verify: insecure,
        credential_name: opt(&t.credential_name),
    })
}

fn bad_mode(at: &str, out: &mut Findings<'_>) -> Option<ClientTls> {
    out.push(
        Code::DR_TLS_MODE_UNSUPPORTED,
        format!("{at}.mode"),
        "unsupported TLS mode (one of DISABLE, SIMPLE, MUTUAL, ISTIO_MUTUAL)",
    );
    None
}
