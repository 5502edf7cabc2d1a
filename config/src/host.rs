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

/// The first of an ordered list of items (each with one or more host patterns) that has a
/// pattern [`matches`] a name: what a linear `find` over the list answers, in time that does
/// not grow with the list for exact names (compiling 10,000 services against hundreds of
/// VirtualServices was quadratic, and most of a reload's CPU).
#[derive(Debug, Default)]
pub struct FirstMatch<'a> {
    /// Exact pattern -> the first item that has it.
    exact: rustc_hash::FxHashMap<&'a str, usize>,
    /// Exact patterns reversed, sorted: the ones a wildcard name covers share a prefix. Built
    /// by the first query for a wildcard name (most indexes only ever see exact ones).
    reversed: std::cell::OnceCell<Vec<(Vec<u8>, usize)>>,
    /// Wildcard patterns with their item, in item order (few in practice: scanned).
    wildcards: Vec<(usize, &'a str)>,
}

impl<'a> FirstMatch<'a> {
    /// An index over `items`, each given by its patterns, in the order that decides.
    pub fn new<I, P>(items: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: IntoIterator<Item = &'a str>,
    {
        let mut index = Self::default();
        for (i, patterns) in items.into_iter().enumerate() {
            for p in patterns {
                if is_wildcard(p) {
                    index.wildcards.push((i, p));
                } else {
                    index.exact.entry(p).or_insert(i);
                }
            }
        }
        index
    }

    fn reversed(&self) -> &[(Vec<u8>, usize)] {
        self.reversed.get_or_init(|| {
            let mut reversed: Vec<(Vec<u8>, usize)> = self
                .exact
                .iter()
                .map(|(p, &i)| (p.bytes().rev().collect(), i))
                .collect();
            reversed.sort_unstable();
            reversed
        })
    }

    /// The first item with a pattern that matches `name`.
    pub fn first(&self, name: &str) -> Option<usize> {
        let exact = match name.strip_prefix('*') {
            None => self.exact.get(name).copied(),
            // Every exact pattern that ends with the suffix and is longer than it: the
            // reversed patterns that start with the reversed suffix, a run in sorted order.
            Some(suffix) => {
                let key: smallvec::SmallVec<[u8; 128]> = suffix.bytes().rev().collect();
                let reversed = self.reversed();
                let start = reversed.partition_point(|(r, _)| r.as_slice() < key.as_slice());
                reversed[start..]
                    .iter()
                    .take_while(|(r, _)| r.starts_with(&key))
                    .filter(|(r, _)| r.len() > key.len())
                    .map(|&(_, i)| i)
                    .min()
            }
        };
        let wildcard = self
            .wildcards
            .iter()
            .take_while(|&&(i, _)| exact.is_none_or(|e| i < e))
            .find(|(_, p)| matches(p, name))
            .map(|&(i, _)| i);
        wildcard.or(exact)
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

    #[test]
    fn first_match_agrees_with_a_linear_find() {
        let items: Vec<Vec<&str>> = vec![
            vec!["b.a.com"],
            vec!["*.x.a.com", "c.com"],
            vec!["a.com"],
            vec!["*foo.com"],
            vec!["y.x.a.com", "b.a.com"],
            vec!["*.com"],
            vec!["z.a.com"],
            vec!["*"],
            vec!["barfoo.com"],
        ];
        let names = [
            "b.a.com",
            "a.com",
            "c.com",
            "y.x.a.com",
            "q.x.a.com",
            "barfoo.com",
            "foo.com",
            "z.a.com",
            "nothing.org",
            "*.a.com",
            "*.x.a.com",
            "*.com",
            "*",
            "*foo.com",
            "*.org",
            "*.b.a.com",
            "*oo.com",
        ];
        for skip in 0..items.len() {
            let list = &items[skip..];
            let index = FirstMatch::new(list.iter().map(|ps| ps.iter().copied()));
            for name in names {
                let linear = list
                    .iter()
                    .position(|ps| ps.iter().any(|p| matches(p, name)));
                assert_eq!(index.first(name), linear, "{name} over items {skip}..");
            }
        }
    }
}
