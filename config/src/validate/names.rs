//! Name grammars shared by the validators: DNS-1123 labels, wildcard domains, FQDNs,
//! Kubernetes label keys and values, IP addresses and CIDRs (spec §3.2, §3.3).

use std::net::IpAddr;

use ipnet::IpNet;

use crate::spec::Address;

/// Istio's `IsDNS1123Label` (mixed case allowed): `[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?`,
/// at most 63 characters.
pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
}

/// Istio's `IsWildcardDNS1123Label`: `*`, `*<label>`, `*-<label>` or `<label>`.
fn is_wildcard_label(s: &str) -> bool {
    if s.len() > 63 {
        return false;
    }
    match s.strip_prefix('*') {
        Some("") => true,
        Some(rest) => is_dns1123_label(rest.strip_prefix('-').unwrap_or(rest)),
        None => is_dns1123_label(s),
    }
}

fn preconditions(domain: &str) -> Result<(), String> {
    if domain.is_empty() {
        return Err("empty domain name not allowed".into());
    }
    if domain.len() > 255 {
        return Err(format!(
            "domain name {:?} too long (max 255)",
            truncate(domain)
        ));
    }
    Ok(())
}

/// Istio's `ValidateDNS1123Labels`: every label valid, the last may be empty (trailing dot),
/// the top-level label not all digits.
fn dns1123_labels(domain: &str, shown: &str) -> Result<(), String> {
    let shown = truncate(shown);
    let parts: Vec<&str> = domain.split('.').collect();
    let tld = parts[parts.len() - 1];
    if !tld.is_empty() && tld.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "domain name {shown:?} invalid (top level domain {tld:?} cannot be all-numeric)"
        ));
    }
    for (i, label) in parts.iter().enumerate() {
        if i == parts.len() - 1 && label.is_empty() {
            return Ok(());
        }
        if !is_dns1123_label(label) {
            return Err(format!(
                "domain name {shown:?} invalid (label {:?} invalid)",
                truncate(label)
            ));
        }
    }
    Ok(())
}

/// Istio's `ValidateWildcardDomain`: a wildcard only in the first label.
pub fn wildcard_domain(domain: &str) -> Result<(), String> {
    preconditions(domain)?;
    let (first, rest) = match domain.split_once('.') {
        Some((first, rest)) => (first, Some(rest)),
        None => (domain, None),
    };
    if !is_wildcard_label(first) {
        return Err(format!(
            "domain name {:?} invalid (label {:?} invalid)",
            truncate(domain),
            truncate(first)
        ));
    }
    match rest {
        Some(rest) => dns1123_labels(rest, domain),
        None => Ok(()),
    }
}

/// Istio's `ValidateFQDN`: like a wildcard domain but with no wildcard anywhere.
pub fn fqdn(domain: &str) -> Result<(), String> {
    preconditions(domain)?;
    dns1123_labels(domain, domain)
}

/// A host as the proxy stores it: lower-cased, without a trailing dot.
pub fn normalize_host(host: &str) -> String {
    let host = host.strip_suffix('.').unwrap_or(host);
    host.to_ascii_lowercase()
}

/// A partial wildcard: contains `*` but is neither `*` nor `*.` followed by a domain.
pub fn is_partial_wildcard(host: &str) -> bool {
    host.contains('*') && !host.starts_with("*.") && host != "*"
}

/// Istio's `ValidateIPSubnet` (spec §3.3): one `/` means a CIDR (host bits may be set), else an
/// IP. A /32 or /128 CIDR is normalised to its IP (spec §2.2).
pub fn address(s: &str) -> Result<Address, String> {
    if s.matches('/').count() == 1 {
        let (ip, len) = s.split_once('/').unwrap_or_default();
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| format!("{s:?} is not a valid CIDR block"))?;
        let len: u8 = len
            .parse()
            .map_err(|_| format!("{s:?} is not a valid CIDR block"))?;
        let net = IpNet::new(ip, len).map_err(|_| format!("{s:?} is not a valid CIDR block"))?;
        if net.prefix_len() == net.max_prefix_len() {
            return Ok(Address::Ip(ip));
        }
        return Ok(Address::Cidr(net.trunc()));
    }
    s.parse()
        .map(Address::Ip)
        .map_err(|_| format!("{s:?} is not a valid IP"))
}

/// A CIDR for `destinationSubnets` (an IP means a /32 or /128).
pub fn subnet(s: &str) -> Result<IpNet, String> {
    match address(s)? {
        Address::Ip(ip) => Ok(IpNet::from(ip)),
        Address::Cidr(net) => Ok(net),
    }
}

/// Kubernetes qualified name: `[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?`, at most 63.
fn is_qualified_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// DNS-1123 subdomain (lower-case, dots), at most 253.
fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.')
            .all(|l| is_dns1123_label(l) && !l.bytes().any(|b| b.is_ascii_uppercase()))
}

/// A Kubernetes label key: `[prefix/]name`.
pub fn label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if prefix.is_some_and(|p| !is_dns1123_subdomain(p)) || !is_qualified_name(name) {
        return Err(format!("invalid tag key: {key:?}"));
    }
    Ok(())
}

/// A Kubernetes label value: empty or a qualified name.
pub fn label_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_qualified_name(value) {
        Ok(())
    } else {
        Err(format!("invalid tag value: {value:?}"))
    }
}

/// Long inputs are shortened in messages (a 1 MB host must not make a 1 MB error line).
pub fn truncate(s: &str) -> String {
    const MAX: usize = 80;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...({} bytes)", &s[..end], s.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_domain_table() {
        let valid = [
            "api.example.com",
            "API.Example.COM",
            "*.example.com",
            "*foo.com",
            "*-foo.com",
            "foo",
            "api.example.com.",
            "a-b.c",
            "xn--bcher-kva.example",
            "1.2.3.com",
        ];
        for d in valid {
            assert!(
                wildcard_domain(d).is_ok(),
                "{d} should be valid: {:?}",
                wildcard_domain(d)
            );
        }
        let invalid = [
            "",
            "*",
            "foo.*.com",
            "foo_bar.com",
            "1.2.3.4",
            "-a.com",
            "a-.com",
            "a..com",
            "::1",
            "a.com..",
            "*.*.com",
            "ex ample.com",
        ];
        for d in invalid {
            if d == "*" {
                // A bare `*` passes the grammar; the validators reject it with its own code.
                assert!(wildcard_domain(d).is_ok());
                continue;
            }
            assert!(wildcard_domain(d).is_err(), "{d} should be invalid");
        }
        let long = format!("{}.com", "a".repeat(300));
        assert!(wildcard_domain(&long).unwrap_err().contains("too long"));
        let label64 = format!("{}.com", "a".repeat(64));
        assert!(wildcard_domain(&label64).is_err());
    }

    #[test]
    fn fqdn_table() {
        for d in ["a.com", "a.com.", "foo", "A.b"] {
            assert!(fqdn(d).is_ok(), "{d}");
        }
        for d in ["*.a.com", "", "1.2.3.4", "a_b.com", "a..b"] {
            assert!(fqdn(d).is_err(), "{d}");
        }
    }

    #[test]
    fn address_table() {
        assert_eq!(
            address("10.0.0.5"),
            Ok(Address::Ip("10.0.0.5".parse().unwrap()))
        );
        assert_eq!(
            address("10.0.0.5/32"),
            Ok(Address::Ip("10.0.0.5".parse().unwrap()))
        );
        assert_eq!(
            address("2001:db8::1/128"),
            Ok(Address::Ip("2001:db8::1".parse().unwrap()))
        );
        assert_eq!(
            address("10.0.0.1/24"),
            Ok(Address::Cidr("10.0.0.0/24".parse().unwrap()))
        );
        assert_eq!(
            address("2001:db8::/32"),
            Ok(Address::Cidr("2001:db8::/32".parse().unwrap()))
        );
        for bad in [
            "10.0.0.0/33",
            "10.0.0",
            "foo",
            "10.0.0.0/8/8",
            "10.0.0.0/",
            "::g",
        ] {
            assert!(address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn labels_table() {
        assert!(label_key("app").is_ok());
        assert!(label_key("app.kubernetes.io/name").is_ok());
        assert!(label_key("Bad_Prefix/name").is_err());
        assert!(label_key("").is_err());
        assert!(label_key("-x").is_err());
        assert!(label_value("").is_ok());
        assert!(label_value("v1.2_3").is_ok());
        assert!(label_value("a b").is_err());
    }

    #[test]
    fn normalize() {
        assert_eq!(normalize_host("API.Example.com."), "api.example.com");
        assert!(is_partial_wildcard("*foo.com"));
        assert!(!is_partial_wildcard("*.foo.com"));
    }
}
