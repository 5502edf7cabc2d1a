//! Istio's host-name relations (`pkg/config/host/name.go`): `Matches` and `SubsetOf`, on
//! lower-cased names. A wildcard `*.foo.com` (or partial `*foo.com`) stands for every name that
//! ends with the text after the `*`, and never for `foo.com` itself.

/// Whether `name` is a wildcard pattern.
pub fn is_wildcard(name: &str) -> bool {
    name.starts_with('*')
}

/// Whether the two names have any name in common.
pub fn matches(a: &str, b: &str) -> bool {
    match (a.strip_prefix('*'), b.strip_prefix('*')) {
        (None, None) => a == b,
        (Some(sa), None) => b.ends_with(sa) && b.len() > sa.len(),
        (None, Some(sb)) => a.ends_with(sb) && a.len() > sb.len(),
        (Some(sa), Some(sb)) => sa.ends_with(sb) || sb.ends_with(sa),
    }
}

/// Whether every name `a` stands for is also covered by `b`.
pub fn subset_of(a: &str, b: &str) -> bool {
    match (a.strip_prefix('*'), b.strip_prefix('*')) {
        (None, None) => a == b,
        (Some(_), None) => false,
        (None, Some(sb)) => a.ends_with(sb) && a.len() > sb.len(),
        (Some(sa), Some(sb)) => sa.ends_with(sb),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_table() {
        let cases = [
            ("a.com", "a.com", true),
            ("a.com", "b.com", false),
            ("*.a.com", "x.a.com", true),
            ("*.a.com", "a.com", false),
            ("x.a.com", "*.a.com", true),
            ("*.a.com", "*.x.a.com", true),
            ("*.a.com", "*.b.com", false),
            ("*foo.com", "barfoo.com", true),
        ];
        for (a, b, want) in cases {
            assert_eq!(matches(a, b), want, "{a} ~ {b}");
            assert_eq!(matches(b, a), want, "{b} ~ {a}");
        }
    }

    #[test]
    fn subset_table() {
        let cases = [
            ("a.com", "a.com", true),
            ("x.a.com", "*.a.com", true),
            ("*.x.a.com", "*.a.com", true),
            ("*.a.com", "*.x.a.com", false),
            ("*.a.com", "x.a.com", false),
            ("a.com", "*.a.com", false),
        ];
        for (a, b, want) in cases {
            assert_eq!(subset_of(a, b), want, "{a} <= {b}");
        }
    }
}
