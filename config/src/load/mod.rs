//! Loading: YAML text -> typed objects, with every decode problem reported.
//!
//! A file is a multi-document YAML stream. Empty documents are skipped, `kind: List` wrappers
//! (what `kubectl get -o yaml` prints) are unwrapped, unknown kinds are ignored with a warning,
//! and unknown fields are collected (all of them, not only the first) with their paths. No I/O:
//! the caller reads the files.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_yaml::Value;

use crate::finding::{Code, Finding, Findings, Kind, ObjectKey, Origin};
use crate::model::{
    DestinationRuleSpec, MESH_CONFIG_FIELDS, MeshConfig, Resource, ServiceEntrySpec,
    VirtualServiceSpec,
};

/// One configuration file's name and contents.
#[derive(Debug, Clone)]
pub struct Source {
    /// Name used in findings (usually the path).
    pub name: String,
    /// Raw bytes; need not be UTF-8 (that is reported). Shared, so a caller that knows a file
    /// did not change can hand the same bytes in again without a copy.
    pub bytes: Arc<[u8]>,
}

impl Source {
    /// A source from a name and text.
    pub fn new(name: impl Into<String>, bytes: impl Into<Vec<u8>>) -> Self {
        Self::shared(name, bytes.into().into())
    }

    /// A source from a name and bytes already shared.
    pub fn shared(name: impl Into<String>, bytes: Arc<[u8]>) -> Self {
        Self {
            name: name.into(),
            bytes,
        }
    }
}

/// The spec of a loaded object.
#[derive(Debug, Clone)]
pub enum Spec {
    /// `ServiceEntry`
    ServiceEntry(Box<ServiceEntrySpec>),
    /// `VirtualService`
    VirtualService(Box<VirtualServiceSpec>),
    /// `DestinationRule`
    DestinationRule(Box<DestinationRuleSpec>),
}

/// A decoded object, not yet validated.
#[derive(Debug, Clone)]
pub struct Object {
    /// kind/namespace/name.
    pub key: ObjectKey,
    /// File name.
    pub file: Arc<str>,
    /// File, document and list item.
    pub origin: Origin,
    /// `metadata.labels`
    pub labels: BTreeMap<String, String>,
    /// The spec.
    pub spec: Spec,
}

/// The group every kind the proxy reads belongs to, and the versions served.
const API_GROUP: &str = "networking.istio.io";
const API_VERSIONS: &[&str] = &["v1", "v1beta1", "v1alpha3"];

/// Decode every document of one file. Findings carry line 0 (resolved later by
/// [`crate::lines::resolve`]) except YAML syntax errors, which know their line.
pub fn parse_source(index: usize, source: &Source) -> (Vec<Object>, Vec<Finding>) {
    let mut objects = Vec::new();
    let mut findings = Vec::new();
    let file: Arc<str> = Arc::from(source.name.as_str());
    // An error that makes the whole file unreadable, at a known line.
    let whole_file = |findings: &mut Vec<Finding>, line: usize, message: String| {
        let origin = Origin {
            file: index,
            ..Origin::default()
        };
        Findings::new(findings, &file, origin, None).push_at_line(Code::YAML_PARSE, line, message);
    };
    let text = match std::str::from_utf8(&source.bytes) {
        Ok(text) => text,
        Err(e) => {
            let valid = &source.bytes[..e.valid_up_to()];
            let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
            let message = format!("cannot parse: not valid UTF-8 at byte {}", e.valid_up_to());
            whole_file(&mut findings, line, message);
            return (objects, findings);
        }
    };
    if let Some(line) = excessive_flow_nesting(text) {
        let message = format!("cannot parse: brackets nested deeper than {MAX_FLOW_DEPTH} levels");
        whole_file(&mut findings, line, message);
        return (objects, findings);
    }
    for (doc, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let origin = Origin {
            file: index,
            doc,
            item: None,
        };
        match Value::deserialize(de) {
            Ok(value) => decode_document(value, &file, origin, &mut objects, &mut findings),
            Err(e) => {
                let line = e.location().map_or(1, |l| l.line());
                Findings::new(&mut findings, &file, origin, None).push_at_line(
                    Code::YAML_PARSE,
                    line,
                    format!("cannot parse: {e}"),
                );
                // A syntax error ends the stream: nothing after it can be trusted.
                break;
            }
        }
    }
    (objects, findings)
}

fn decode_document(
    value: Value,
    file: &Arc<str>,
    origin: Origin,
    objects: &mut Vec<Object>,
    findings: &mut Vec<Finding>,
) {
    if value.is_null() {
        return;
    }
    let Value::Mapping(map) = &value else {
        Findings::new(findings, file, origin, None).push(
            Code::YAML_PARSE,
            "",
            "cannot parse: a document must be a mapping with apiVersion, kind, metadata and spec",
        );
        return;
    };
    let kind = map
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let api_version = map
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let meta = map.get("metadata");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let namespace = meta
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str)
        .filter(|ns| !ns.is_empty())
        .unwrap_or(DEFAULT_NAMESPACE)
        .to_owned();
    let kind_enum = match kind.as_str() {
        "ServiceEntry" => Kind::ServiceEntry,
        "VirtualService" => Kind::VirtualService,
        "DestinationRule" => Kind::DestinationRule,
        "List" if origin.item.is_none() => {
            match value {
                Value::Mapping(mut map) => match map.remove("items") {
                    Some(Value::Sequence(items)) => {
                        for (i, item) in items.into_iter().enumerate() {
                            let origin = Origin {
                                item: Some(i),
                                ..origin
                            };
                            decode_document(item, file, origin, objects, findings);
                        }
                    }
                    None | Some(Value::Null) => {}
                    Some(_) => Findings::new(findings, file, origin, None).push(
                        Code::YAML_PARSE,
                        "items",
                        "cannot parse: items of a List must be a sequence",
                    ),
                },
                _ => unreachable_mapping(),
            }
            return;
        }
        "" => {
            Findings::new(findings, file, origin, None).push(
                Code::KIND_REQUIRED,
                "kind",
                "kind: Required value",
            );
            return;
        }
        other => {
            Findings::new(findings, file, origin, None).push(
                Code::UNKNOWN_KIND,
                "kind",
                format!(
                    "{api_version} {other} {namespace}/{name} is not a kind the proxy uses; ignored"
                ),
            );
            return;
        }
    };
    let key = ObjectKey {
        kind: kind_enum,
        namespace,
        name: name.to_owned(),
    };
    let mut out = Findings::new(findings, file, origin, Some(&key));
    match api_version.split_once('/') {
        Some((API_GROUP, version)) if API_VERSIONS.contains(&version) => {}
        _ => {
            out.push(
                Code::API_VERSION_UNSUPPORTED,
                "apiVersion",
                format!(
                    "apiVersion {api_version:?} is not served for {kind}; use networking.istio.io/v1, v1beta1 or v1alpha3"
                ),
            );
            return;
        }
    }
    let decoded = match kind_enum {
        Kind::ServiceEntry => decode_resource::<ServiceEntrySpec>(value, &mut out)
            .map(|(s, labels)| (Spec::ServiceEntry(Box::new(s)), labels)),
        Kind::VirtualService => decode_resource::<VirtualServiceSpec>(value, &mut out)
            .map(|(s, labels)| (Spec::VirtualService(Box::new(s)), labels)),
        Kind::DestinationRule => decode_resource::<DestinationRuleSpec>(value, &mut out)
            .map(|(s, labels)| (Spec::DestinationRule(Box::new(s)), labels)),
        Kind::MeshConfig => None,
    };
    let Some((spec, labels)) = decoded else {
        return;
    };
    if out.errors() > 0 {
        return;
    }
    objects.push(Object {
        key,
        file: file.clone(),
        origin,
        labels,
        spec,
    });
}

/// `decode_document` only reaches the List arm with a mapping.
fn unreachable_mapping() {
    debug_assert!(false, "List document was checked to be a mapping");
}

/// Flow nesting (`[`, `{`) refused before parsing. libyaml takes time quadratic in the depth
/// (2 s at 40,000 levels), and serde_yaml rejects anything past 128 levels anyway.
const MAX_FLOW_DEPTH: usize = 512;

/// The line at which flow brackets first nest deeper than [`MAX_FLOW_DEPTH`]. Quotes are not
/// interpreted on purpose: a stray quote must not hide a deep structure, and no real
/// configuration has hundreds of unbalanced brackets inside strings.
fn excessive_flow_nesting(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut line = 1;
    for b in text.bytes() {
        match b {
            b'\n' => line += 1,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_FLOW_DEPTH {
                    return Some(line);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// The namespace of objects that do not name one (Decisions 6).
pub const DEFAULT_NAMESPACE: &str = "default";

/// Decode a `Resource<S>`: unknown fields and decode errors become findings; a missing name or
/// spec is reported. Returns the spec and labels when the object decoded.
fn decode_resource<S: DeserializeOwned>(
    value: Value,
    out: &mut Findings<'_>,
) -> Option<(S, BTreeMap<String, String>)> {
    let resource: Resource<S> = decode(value, out)?;
    if resource
        .metadata
        .name
        .as_deref()
        .unwrap_or_default()
        .is_empty()
    {
        out.push(
            Code::NAME_REQUIRED,
            "metadata.name",
            "metadata.name: Required value",
        );
    }
    match resource.spec {
        Some(spec) => Some((spec, resource.metadata.labels)),
        None => {
            out.push(Code::SPEC_REQUIRED, "spec", "spec: Required value");
            None
        }
    }
}

/// Decode `value` into `T`, reporting every unknown field and the first type error.
pub(crate) fn decode<T: DeserializeOwned>(value: Value, out: &mut Findings<'_>) -> Option<T> {
    let mut unknown = Vec::new();
    let mut record = |path: serde_ignored::Path<'_>| unknown.push(ignored_path(&path));
    let result = serde_path_to_error::deserialize::<_, T>(serde_ignored::Deserializer::new(
        value,
        &mut record,
    ));
    for path in unknown {
        let field = path
            .rsplit(['.', '['])
            .next()
            .unwrap_or_default()
            .to_owned();
        out.push(
            Code::UNKNOWN_FIELD,
            path,
            format!("unknown field {field:?}"),
        );
    }
    match result {
        Ok(v) => Some(v),
        Err(e) => {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            out.push(
                Code::YAML_PARSE,
                path,
                format!("cannot parse: {}", e.inner()),
            );
            None
        }
    }
}

fn ignored_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", ignored_path(parent)),
        Path::Map { parent, key } => {
            let parent = ignored_path(parent);
            if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => ignored_path(parent),
    }
}

/// Decode the `--mesh` document: a plain MeshConfig, or an `istio` ConfigMap whose `data.mesh`
/// holds one. Unused MeshConfig fields are reported as ignored, unknown ones as unknown.
pub fn parse_mesh(source: &Source) -> (Option<MeshConfig>, Vec<Finding>) {
    let mut findings = Vec::new();
    let file: Arc<str> = Arc::from(source.name.as_str());
    let key = ObjectKey {
        kind: Kind::MeshConfig,
        namespace: String::new(),
        name: "mesh".into(),
    };
    let origin = Origin::default();
    let mut out = Findings::new(&mut findings, &file, origin, Some(&key));
    let value = match std::str::from_utf8(&source.bytes)
        .map_err(|e| format!("not valid UTF-8 at byte {}", e.valid_up_to()))
        .and_then(|t| serde_yaml::from_str::<Value>(t).map_err(|e| e.to_string()))
    {
        Ok(v) => v,
        Err(e) => {
            out.push(Code::YAML_PARSE, "", format!("cannot parse: {e}"));
            return (None, findings);
        }
    };
    let (value, prefix) = match value.get("kind").and_then(Value::as_str) {
        Some("ConfigMap") => match value
            .get("data")
            .and_then(|d| d.get("mesh"))
            .and_then(Value::as_str)
        {
            Some(text) => match serde_yaml::from_str::<Value>(text) {
                Ok(v) => (v, "data.mesh"),
                Err(e) => {
                    out.push(Code::YAML_PARSE, "data.mesh", format!("cannot parse: {e}"));
                    return (None, findings);
                }
            },
            None => {
                out.push(
                    Code::MESH_INVALID,
                    "data.mesh",
                    "a mesh ConfigMap needs data.mesh",
                );
                return (None, findings);
            }
        },
        _ => (value, ""),
    };
    let value = if value.is_null() {
        Value::Mapping(Default::default())
    } else {
        value
    };
    let Some(mesh) = decode::<MeshConfig>(value, &mut out) else {
        return (None, findings);
    };
    let at = |field: &str| {
        if prefix.is_empty() {
            field.to_owned()
        } else {
            format!("{prefix}.{field}")
        }
    };
    for field in mesh.other.keys() {
        if MESH_CONFIG_FIELDS.contains(&field.as_str()) {
            out.push(
                Code::IGNORED_FIELD,
                at(field),
                "MeshConfig field not used by the egress proxy; ignored",
            );
        } else {
            out.push(
                Code::UNKNOWN_FIELD,
                at(field),
                format!("unknown field {field:?}"),
            );
        }
    }
    (Some(mesh), findings)
}

#[cfg(test)]
mod tests;
