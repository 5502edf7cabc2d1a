//! Host-name matchers for SNI and HTTP Host lookups: exact names first, then the longest
//! wildcard suffix (spec §5.2, §5.3, §7.1). Lookups allocate nothing.
//!
//! Patterns are stored lower-cased. A `*.`-wildcard is indexed by its suffix (`.example.com`)
//! and found by trying each dot of the queried name from the left, so the first hit is the
//! longest; a bitmap of the suffix lengths present skips hash lookups that cannot hit. Partial
//! wildcards (`*-bar.example.com`, HTTP only) are rare and checked in a short list.

use rustc_hash::FxHashMap;

/// Longest name considered (DNS names are at most 255 bytes).
pub const MAX_NAME: usize = 255;

/// A host pattern table mapping to `T`.
#[derive(Debug, Clone)]
pub struct HostMatcher<T> {
    exact: FxHashMap<Box<[u8]>, T>,
    /// `*.example.com` stored as `.example.com`.
    dot_suffix: FxHashMap<Box<[u8]>, T>,
    /// Bit `n` set: some dot suffix is `n` bytes long (n < 256).
    dot_suffix_lengths: [u64; 4],
    /// Partial wildcards `*foo.com` as (`foo.com`, value), longest first.
    partial: Vec<(Box<[u8]>, T)>,
}

impl<T> Default for HostMatcher<T> {
    fn default() -> Self {
        Self {
            exact: FxHashMap::default(),
            dot_suffix: FxHashMap::default(),
            dot_suffix_lengths: [0; 4],
            partial: Vec::new(),
        }
    }
}

/// How a name matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostMatch<'a, T> {
    /// The exact name.
    Exact(&'a T),
    /// A wildcard; the number is the suffix length (longer is more specific).
    Wildcard(&'a T, usize),
}

impl<'a, T> HostMatch<'a, T> {
    /// The matched value.
    pub fn value(self) -> &'a T {
        match self {
            Self::Exact(v) | Self::Wildcard(v, _) => v,
        }
    }
}

impl<T> HostMatcher<T> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.dot_suffix.is_empty() && self.partial.is_empty()
    }

    /// Number of patterns.
    pub fn len(&self) -> usize {
        self.exact.len() + self.dot_suffix.len() + self.partial.len()
    }

    /// Insert a lower-cased pattern (`a.com`, `*.a.com`, `*a.com`). The first insert of a
    /// pattern wins; returns `false` when the pattern was already present.
    pub fn insert(&mut self, pattern: &str, value: T) -> bool {
        let bytes = pattern.as_bytes();
        match bytes.strip_prefix(b"*") {
            None => {
                if self.exact.contains_key(bytes) {
                    return false;
                }
                self.exact.insert(bytes.into(), value);
            }
            Some(suffix) if suffix.starts_with(b".") && suffix.len() <= MAX_NAME => {
                if self.dot_suffix.contains_key(suffix) {
                    return false;
                }
                self.dot_suffix_lengths[suffix.len() / 64] |= 1 << (suffix.len() % 64);
                self.dot_suffix.insert(suffix.into(), value);
            }
            Some(suffix) => {
                if self.partial.iter().any(|(s, _)| &**s == suffix) {
                    return false;
                }
                let at = self
                    .partial
                    .partition_point(|(s, _)| s.len() >= suffix.len());
                self.partial.insert(at, (suffix.into(), value));
            }
        }
        true
    }

    /// Whether `pattern` is already stored (exactly this pattern).
    pub fn contains_pattern(&self, pattern: &str) -> bool {
        let bytes = pattern.as_bytes();
        match bytes.strip_prefix(b"*") {
            None => self.exact.contains_key(bytes),
            Some(s) if s.starts_with(b".") => self.dot_suffix.contains_key(s),
            Some(s) => self.partial.iter().any(|(p, _)| &**p == s),
        }
    }

    /// Look up an already lower-cased name.
    pub fn find_lower(&self, name: &[u8]) -> Option<HostMatch<'_, T>> {
        if let Some(v) = self.exact.get(name) {
            return Some(HostMatch::Exact(v));
        }
        let mut best: Option<HostMatch<'_, T>> = None;
        if !self.dot_suffix.is_empty() {
            // The wildcard must match at least one character: never the whole name.
            for (i, &b) in name.iter().enumerate().skip(1) {
                if b != b'.' {
                    continue;
                }
                let len = name.len() - i;
                if len > MAX_NAME || self.dot_suffix_lengths[len / 64] & (1 << (len % 64)) == 0 {
                    continue;
                }
                if let Some(v) = self.dot_suffix.get(&name[i..]) {
                    best = Some(HostMatch::Wildcard(v, len));
                    break;
                }
            }
        }
        let best_len = match best {
            Some(HostMatch::Wildcard(_, n)) => n,
            _ => 0,
        };
        for (suffix, v) in &self.partial {
            if suffix.len() <= best_len {
                break;
            }
            if name.len() > suffix.len() && name.ends_with(suffix) {
                return Some(HostMatch::Wildcard(v, suffix.len()));
            }
        }
        best
    }

    /// Look up a name as it came off the wire: lower-cased into a stack buffer first.
    /// Names longer than [`MAX_NAME`] match nothing.
    pub fn find(&self, name: &[u8]) -> Option<HostMatch<'_, T>> {
        if name.len() > MAX_NAME {
            return None;
        }
        if !name.iter().any(u8::is_ascii_uppercase) {
            return self.find_lower(name);
        }
        let mut buf = [0u8; MAX_NAME];
        let lower = &mut buf[..name.len()];
        lower.copy_from_slice(name);
        lower.make_ascii_lowercase();
        self.find_lower(lower)
    }

    /// Every pattern and value, exact names first, for display.
    pub fn entries(&self) -> Vec<(String, &T)> {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let mut out: Vec<(String, &T)> = self.exact.iter().map(|(k, v)| (text(k), v)).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        let mut wild: Vec<(String, &T)> = self
            .dot_suffix
            .iter()
            .map(|(k, v)| (format!("*{}", text(k)), v))
            .chain(
                self.partial
                    .iter()
                    .map(|(k, v)| (format!("*{}", text(k)), v)),
            )
            .collect();
        wild.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        out.extend(wild);
        out
    }
}

/// The host part of an HTTP `Host` / `:authority` value as Envoy compares it with
/// `ignore_port_in_host_matching`: the port removed (bracket-aware), one trailing dot removed.
/// Case is left to the matcher. Returns `None` for an empty host.
pub fn http_host(authority: &[u8]) -> Option<&[u8]> {
    let host = if authority.first() == Some(&b'[') {
        // `[v6]` or `[v6]:port`
        let end = authority.iter().position(|&b| b == b']')?;
        match &authority[end + 1..] {
            [] => authority,
            [b':', port @ ..] if port.iter().all(u8::is_ascii_digit) => &authority[..=end],
            _ => return None,
        }
    } else {
        match authority.iter().rposition(|&b| b == b':') {
            Some(i) if authority[i + 1..].iter().all(u8::is_ascii_digit) => &authority[..i],
            Some(_) => return None,
            None => authority,
        }
    };
    let host = host.strip_suffix(b".").unwrap_or(host);
    (!host.is_empty()).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(patterns: &[&str]) -> HostMatcher<String> {
        let mut m = HostMatcher::new();
        for p in patterns {
            m.insert(p, (*p).to_owned());
        }
        m
    }

    #[test]
    fn precedence_table() {
        let m = matcher(&[
            "a.example.com",
            "*.example.com",
            "*.b.example.com",
            "*-x.example.com",
            "*.com",
        ]);
        let cases: &[(&str, Option<&str>)] = &[
            ("a.example.com", Some("a.example.com")),
            ("A.EXAMPLE.com", Some("a.example.com")),
            ("z.example.com", Some("*.example.com")),
            ("q.b.example.com", Some("*.b.example.com")),
            ("b.example.com", Some("*.example.com")),
            ("deep.q.b.example.com", Some("*.b.example.com")),
            ("foo-x.example.com", Some("*-x.example.com")),
            ("example.com", Some("*.com")),
            ("com", None),
            (".com", None),
            ("other.org", None),
            ("", None),
        ];
        for (name, want) in cases {
            let got = m.find(name.as_bytes()).map(|h| h.value().as_str());
            assert_eq!(got, *want, "{name}");
        }
    }

    #[test]
    fn wildcard_never_matches_its_own_suffix() {
        let m = matcher(&["*.example.com"]);
        assert!(m.find(b"example.com").is_none());
        assert!(m.find(b".example.com").is_none());
    }

    #[test]
    fn first_insert_wins() {
        let mut m = HostMatcher::new();
        assert!(m.insert("a.com", 1));
        assert!(!m.insert("a.com", 2));
        assert!(m.insert("*.a.com", 3));
        assert!(!m.insert("*.a.com", 4));
        assert_eq!(m.find(b"a.com").map(HostMatch::value), Some(&1));
        assert_eq!(m.find(b"x.a.com").map(HostMatch::value), Some(&3));
    }

    #[test]
    fn overlong_names_match_nothing() {
        let m = matcher(&["*.com"]);
        let long = format!("{}.com", "a".repeat(300));
        assert!(m.find(long.as_bytes()).is_none());
    }

    #[test]
    fn http_host_table() {
        let cases: &[(&str, Option<&str>)] = &[
            ("a.com", Some("a.com")),
            ("a.com:8080", Some("a.com")),
            ("a.com.", Some("a.com")),
            ("a.com.:80", Some("a.com")),
            ("[2001:db8::1]", Some("[2001:db8::1]")),
            ("[2001:db8::1]:443", Some("[2001:db8::1]")),
            ("[2001:db8::1", None),
            ("a.com:x", None),
            ("", None),
            (":80", None),
            ("10.0.0.1:80", Some("10.0.0.1")),
        ];
        for (input, want) in cases {
            assert_eq!(
                http_host(input.as_bytes()),
                want.map(str::as_bytes),
                "{input}"
            );
        }
    }
}
