//! `exportTo` validation (spec §8.2) and resolution (§8.1).

use crate::finding::{Code, Findings};
use crate::spec::ExportTo;

use super::names::is_dns1123_label;

/// Validate `list` (or the mesh default when empty) for an object in `namespace`.
/// `allow_none` is true for ServiceEntries only (`~`).
pub(super) fn check(
    list: &[String],
    default: &[String],
    namespace: &str,
    allow_none: bool,
    path: &str,
    out: &mut Findings<'_>,
) -> Option<ExportTo> {
    let given = !list.is_empty();
    let list = if given { list } else { default };
    let errors = out.errors();
    let mut seen: Vec<&str> = Vec::new();
    for (i, entry) in list.iter().enumerate() {
        let at = if given {
            format!("{path}[{i}]")
        } else {
            path.to_owned()
        };
        let e = entry.as_str();
        match e {
            "." | "*" => {}
            "~" if !allow_none => {
                out.push(
                    Code::EXPORTTO_INVALID,
                    &at,
                    "exportTo ~ (none) is not allowed for Istio configuration objects",
                );
                continue;
            }
            "~" => {}
            _ if !is_dns1123_label(e) => {
                out.push(Code::EXPORTTO_INVALID, &at, format!("only .,*, or a valid DNS 1123 label is allowed as exportTo entry, got {e:?}"));
                continue;
            }
            _ => {}
        }
        if seen.contains(&e) {
            out.push(
                Code::EXPORTTO_DUP,
                &at,
                format!("duplicate entries in exportTo for entry {e}"),
            );
        } else if (e == "." && seen.contains(&namespace)) || (e == namespace && seen.contains(&"."))
        {
            out.push(
                Code::EXPORTTO_DUP,
                &at,
                format!("duplicate entries in exportTo: . and current namespace {namespace}"),
            );
        }
        seen.push(e);
    }
    if seen.len() > 1 && seen.contains(&"*") {
        out.push(
            Code::EXPORTTO_PUBLIC_MIX,
            path,
            "cannot have both public (*) and non-public exportTo values for a resource",
        );
    }
    if seen.len() > 1 && seen.contains(&"~") {
        out.push(
            Code::EXPORTTO_NONE_MIX,
            path,
            "cannot export service entry to no one (~) and someone",
        );
    }
    if out.errors() > errors {
        return None;
    }
    Some(resolve(list, namespace))
}

/// Resolve a valid list for an object in `namespace`.
pub(super) fn resolve(list: &[String], namespace: &str) -> ExportTo {
    if list.iter().any(|e| e == "*") || list.is_empty() {
        return ExportTo::All;
    }
    if list.iter().any(|e| e == "~") {
        return ExportTo::Nobody;
    }
    let mut out: Vec<String> = list
        .iter()
        .map(|e| {
            if e == "." {
                namespace.to_owned()
            } else {
                e.clone()
            }
        })
        .collect();
    out.sort();
    out.dedup();
    ExportTo::Namespaces(out)
}
