//! Which DestinationRule applies to a service host (spec §7.2): the rules of the proxy's
//! namespace, then of the service's, then of the root namespace; inside one namespace an exact
//! host beats the longest matching wildcard, which beats `*`; ties go to the oldest.
//!
//! An index per namespace answers with a map probe for exact hosts and a scan of the wildcard
//! rules only (longest first), so compiling many services against many rules is no longer one
//! pass over every rule per service.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::host;
use crate::spec::DestinationRule;

/// The rules of one namespace, as the lookup wants them.
#[derive(Default)]
struct Namespace<'r> {
    /// Host (wildcards too: equal patterns are an exact match) -> the oldest rule for it.
    exact: FxHashMap<&'r str, &'r Arc<DestinationRule>>,
    /// Wildcard rules other than `*`, longest host first, oldest first among equal lengths.
    wildcards: Vec<&'r Arc<DestinationRule>>,
    /// The oldest `*` rule.
    any: Option<&'r Arc<DestinationRule>>,
}

/// DestinationRules visible to the proxy, by namespace.
pub(super) struct RuleIndex<'r> {
    namespaces: FxHashMap<&'r str, Namespace<'r>>,
}

impl<'r> RuleIndex<'r> {
    /// Index `rules` (oldest first) that are visible to a proxy in `proxy_ns`.
    pub(super) fn new(rules: &[&'r Arc<DestinationRule>], proxy_ns: &str) -> Self {
        let mut namespaces: FxHashMap<&'r str, Namespace<'r>> = FxHashMap::default();
        for &dr in rules.iter().filter(|d| d.export_to.visible_to(proxy_ns)) {
            let ns = namespaces.entry(dr.key.namespace.as_str()).or_default();
            ns.exact.entry(dr.host.as_str()).or_insert(dr);
            if dr.host == "*" {
                ns.any.get_or_insert(dr);
            } else if host::is_wildcard(&dr.host) {
                ns.wildcards.push(dr);
            }
        }
        for ns in namespaces.values_mut() {
            // Stable: equal lengths keep their age order.
            ns.wildcards
                .sort_by_key(|d| std::cmp::Reverse(d.host.len()));
        }
        Self { namespaces }
    }

    /// The rule for `host`, a service of `service_ns`, on a proxy in `proxy_ns` with the mesh's
    /// `root` namespace.
    pub(super) fn find(
        &self,
        host: &str,
        proxy_ns: &str,
        service_ns: &str,
        root: &str,
    ) -> Option<&'r Arc<DestinationRule>> {
        [proxy_ns, service_ns, root].into_iter().find_map(|ns| {
            let rules = self.namespaces.get(ns)?;
            rules
                .exact
                .get(host)
                .copied()
                .or_else(|| {
                    rules
                        .wildcards
                        .iter()
                        .find(|d| host::subset_of(host, &d.host))
                        .copied()
                })
                .or(rules.any)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::{Kind, ObjectKey};
    use crate::spec::ExportTo;

    fn rule(ns: &str, name: &str, host: &str, export_to: ExportTo) -> DestinationRule {
        DestinationRule {
            key: ObjectKey {
                kind: Kind::DestinationRule,
                namespace: ns.into(),
                name: name.into(),
            },
            host: host.into(),
            traffic_policy: None,
            subsets: Vec::new(),
            export_to,
        }
    }

    /// The rule as one pass over every rule finds it: the definition the index must keep.
    fn linear<'r>(
        rules: &[&'r Arc<DestinationRule>],
        host: &str,
        namespaces: [&str; 3],
        proxy_ns: &str,
    ) -> Option<&'r Arc<DestinationRule>> {
        for ns in namespaces {
            let mut best: Option<(&'r Arc<DestinationRule>, usize)> = None;
            for &dr in rules
                .iter()
                .filter(|d| d.key.namespace == ns && d.export_to.visible_to(proxy_ns))
            {
                let score = if dr.host == host {
                    usize::MAX
                } else if dr.host == "*" {
                    0
                } else if host::is_wildcard(&dr.host) && host::subset_of(host, &dr.host) {
                    dr.host.len()
                } else {
                    continue;
                };
                if best.is_none_or(|(_, s)| score > s) {
                    best = Some((dr, score));
                }
            }
            if let Some((dr, _)) = best {
                return Some(dr);
            }
        }
        None
    }

    #[test]
    fn index_answers_as_a_pass_over_every_rule() {
        let all = ExportTo::All;
        let hidden = || ExportTo::Namespaces(vec!["elsewhere".into()]);
        // Oldest first, as compilation sorts them.
        let owned = [
            rule("proxy", "p-wild", "*.example.com", all.clone()),
            rule("proxy", "p-exact", "api.example.com", all.clone()),
            rule("proxy", "p-exact-again", "api.example.com", all.clone()),
            rule("proxy", "p-hidden", "db.example.com", hidden()),
            rule("svc", "s-any", "*", all.clone()),
            rule("svc", "s-short", "*.com", all.clone()),
            rule("svc", "s-long", "*.deep.example.com", all.clone()),
            rule("svc", "s-long-again", "*.deep.example.com", all.clone()),
            rule("svc", "s-same-length", "*.peed.example.com", all.clone()),
            rule("svc", "s-any-again", "*", all.clone()),
            rule("svc", "s-wild-host", "*.w.example.org", all.clone()),
            rule("root", "r-exact", "db.example.com", all.clone()),
            rule("root", "r-hidden", "*", hidden()),
            rule("root", "r-wild", "*.org", all),
        ]
        .map(Arc::new);
        let rules: Vec<&Arc<DestinationRule>> = owned.iter().collect();
        let hosts = [
            "api.example.com",
            "x.example.com",
            "example.com",
            "a.deep.example.com",
            "a.peed.example.com",
            "deep.example.com",
            "db.example.com",
            "other.net",
            "x.example.org",
            "*.w.example.org",
            "*.x.w.example.org",
            "*.example.com",
            "*.org",
            "*",
        ];
        let index = RuleIndex::new(&rules, "proxy");
        let name = |d: Option<&Arc<DestinationRule>>| d.map(|d| d.key.name.clone());
        for host in hosts {
            for (service_ns, root) in [
                ("svc", "root"),
                ("proxy", "root"),
                ("root", "svc"),
                ("other", "none"),
                ("svc", "svc"),
            ] {
                let namespaces = ["proxy", service_ns, root];
                assert_eq!(
                    name(index.find(host, "proxy", service_ns, root)),
                    name(linear(&rules, host, namespaces, "proxy")),
                    "{host} for a service in {service_ns}, root {root}"
                );
            }
        }
        // And from a proxy in another namespace (the proxy's own rules come from elsewhere).
        let index = RuleIndex::new(&rules, "svc");
        for host in hosts {
            assert_eq!(
                name(index.find(host, "svc", "proxy", "root")),
                name(linear(&rules, host, ["svc", "proxy", "root"], "svc")),
                "{host} on a proxy in svc"
            );
        }
    }
}
