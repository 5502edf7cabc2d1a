//! `dataplane-config`: Istio egress configuration, from YAML text to a compiled route table.
//!
//! Pure: no sockets, no threads, no clock, no file I/O. The caller reads files and hands their
//! bytes in as [`Source`]s; everything here is deterministic and fuzzable.
//!
//! The pipeline, one module each:
//! - [`load`]: YAML streams -> typed wire objects ([`model`]), unknown fields and decode errors
//!   reported with their paths;
//! - [`validate`]: Istio's validation rules (spec §3, §8.2, §9, §10 and the Decisions) -> typed,
//!   valid objects ([`spec`]) plus every finding;
//! - [`table`]: compilation for one proxy namespace into an immutable [`table::RouteTable`]
//!   whose lookups allocate nothing;
//! - [`lines`]: field path -> line, for findings.
//!
//! [`build`] runs the whole pipeline.
#![forbid(unsafe_code)]

pub mod finding;
pub mod lines;
pub mod load;
pub mod model;

pub use finding::{Code, Finding, Kind, ObjectKey, Severity};
pub use load::Source;
pub mod duration;
pub mod host;
pub mod protocol;
pub mod spec;
pub mod table;
pub mod validate;

use std::sync::Arc;

use finding::{Findings, Origin};
use spec::Mesh;
use table::RouteTable;
use validate::Registry;

/// What the pipeline needs to know about the proxy and the outside world.
pub struct Options<'a> {
    /// The namespace the proxy serves (Decisions 6).
    pub namespace: &'a str,
    /// Ports the proxy uses itself (Decisions 2).
    pub reserved_ports: &'a [u16],
    /// Whether a certificate file exists; `None` skips the check (the only "I/O", injected).
    pub file_exists: Option<&'a dyn Fn(&str) -> bool>,
    /// Age of an object for precedence (§7); `None`: all the same age.
    pub age: Option<&'a dyn Fn(&ObjectKey) -> u64>,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Self {
            namespace: load::DEFAULT_NAMESPACE,
            reserved_ports: validate::RESERVED_PORTS,
            file_exists: None,
            age: None,
        }
    }
}

/// The outcome of one load: every finding, and a table only when there was no error
/// (Decisions 7: a load is all or nothing).
#[derive(Debug)]
pub struct Build {
    /// Valid objects.
    pub registry: Registry,
    /// The compiled table; `None` when any error was found.
    pub table: Option<RouteTable>,
    /// Every finding, errors and warnings, with lines resolved.
    pub findings: Vec<Finding>,
    /// Distinct objects seen in the sources, valid or not (duplicates counted once).
    pub objects_seen: usize,
}

impl Build {
    /// Number of errors.
    pub fn errors(&self) -> usize {
        self.findings.iter().filter(|f| f.is_error()).count()
    }

    /// Every error, printed, one per entry.
    pub fn error_messages(&self) -> Vec<String> {
        self.findings
            .iter()
            .filter(|f| f.is_error())
            .map(ToString::to_string)
            .collect()
    }

    /// Number of warnings.
    pub fn warnings(&self) -> usize {
        self.findings.len() - self.errors()
    }
}

/// Load, validate and compile `sources` (with an optional mesh document).
pub fn build(sources: &[Source], mesh: Option<&Source>, opts: &Options<'_>) -> Build {
    build_inner(sources, mesh, opts, None)
}

/// Decoded and validated files kept between loads: a file whose bytes did not change is not
/// decoded again (YAML decoding is most of a load: about 85 of 155 ms for 10,000
/// ServiceEntries), nor validated again while the context (mesh settings, namespace, reserved
/// ports) is the same, except for objects whose validation looked for files. Only the files of
/// the last load are kept.
#[derive(Debug, Default)]
pub struct ParseCache {
    files: std::collections::HashMap<String, Parsed>,
}

#[derive(Debug)]
struct Parsed {
    bytes: Arc<[u8]>,
    objects: Vec<load::Object>,
    findings: Vec<Finding>,
    /// Each object's validation outcome (`checked[i]` is `objects[i]`'s), valid for the
    /// context in `checked_for`; empty until the first check.
    checked: Vec<validate::Checked>,
    checked_for: Option<CheckContext>,
}

/// What an object's validation depends on besides the object itself (file lookups aside,
/// which make an outcome not reusable).
#[derive(Debug, Clone, PartialEq, Eq)]
struct CheckContext {
    mesh: Mesh,
    namespace: String,
    reserved_ports: Vec<u16>,
}

impl ParseCache {
    /// Make the cache hold `source` (file `index` of this load): decoded again only when its
    /// bytes changed since the last load; either way its objects and findings now say `index`.
    fn refresh(&mut self, index: usize, source: &Source) {
        match self.files.get_mut(&source.name) {
            // The same allocation (a file the caller did not read again), or the same bytes.
            Some(p) if Arc::ptr_eq(&p.bytes, &source.bytes) || p.bytes == source.bytes => {
                p.set_file(index);
            }
            _ => {
                let parsed = Parsed::new(index, source);
                self.files.insert(source.name.clone(), parsed);
            }
        }
    }

    fn keep_only(&mut self, sources: &[Source]) {
        self.files
            .retain(|name, _| sources.iter().any(|s| &s.name == name));
    }
}

impl Parsed {
    fn new(index: usize, source: &Source) -> Self {
        let (objects, findings) = load::parse_source(index, source);
        Self {
            bytes: source.bytes.clone(),
            objects,
            findings,
            checked: Vec::new(),
            checked_for: None,
        }
    }

    fn set_file(&mut self, index: usize) {
        for o in &mut self.objects {
            o.origin.file = index;
        }
        let checked = self.checked.iter_mut().flat_map(|c| &mut c.findings);
        for f in self.findings.iter_mut().chain(checked) {
            f.origin.file = index;
        }
    }

    /// Validate every object under `ctx` (described by `fingerprint`), keeping the outcomes
    /// of an earlier check under the same context that did not look at files.
    fn check(&mut self, ctx: &validate::Context<'_>, fingerprint: &CheckContext) {
        if self.checked_for.as_ref() != Some(fingerprint) {
            self.checked.clear();
            self.checked_for = Some(fingerprint.clone());
        }
        if self.checked.len() != self.objects.len() {
            self.checked = self
                .objects
                .iter()
                .map(|o| validate::check(o, ctx))
                .collect();
            return;
        }
        for (o, c) in self.objects.iter().zip(&mut self.checked) {
            if !c.reusable {
                *c = validate::check(o, ctx);
            }
        }
    }
}

/// [`build`], reusing the decoded objects of files unchanged since the last call with `cache`.
pub fn build_cached(
    sources: &[Source],
    mesh: Option<&Source>,
    opts: &Options<'_>,
    cache: &mut ParseCache,
) -> Build {
    build_inner(sources, mesh, opts, Some(cache))
}

fn build_inner(
    sources: &[Source],
    mesh: Option<&Source>,
    opts: &Options<'_>,
    cache: Option<&mut ParseCache>,
) -> Build {
    let mut findings = Vec::new();
    let mut mesh_settings = Mesh::default();
    if let Some(m) = mesh {
        let (config, mut found) = load::parse_mesh(m);
        if let Some(config) = config {
            let key = ObjectKey {
                kind: Kind::MeshConfig,
                namespace: String::new(),
                name: "mesh".into(),
            };
            let mut out = Findings::new(&mut found, &m.name, Origin::default(), Some(&key));
            mesh_settings = validate::mesh(&config, &mut out);
        }
        lines::resolve(&String::from_utf8_lossy(&m.bytes), &mut found);
        findings.extend(found);
    }
    // Every file is decoded into the cache (a throwaway one without `cache`), and its objects
    // are checked there: an unchanged file costs no copy and, while the context is the same,
    // no validation either. A file named twice in one load is decoded again for its second
    // place.
    let ctx = validate::Context {
        mesh: &mesh_settings,
        namespace: opts.namespace,
        reserved_ports: opts.reserved_ports,
        file_exists: opts.file_exists,
    };
    let fingerprint = CheckContext {
        mesh: mesh_settings.clone(),
        namespace: opts.namespace.to_owned(),
        reserved_ports: opts.reserved_ports.to_vec(),
    };
    let mut throwaway = ParseCache::default();
    let cache = cache.unwrap_or(&mut throwaway);
    let mut named = rustc_hash::FxHashSet::default();
    let mut again: Vec<(usize, Parsed)> = Vec::new();
    for (i, source) in sources.iter().enumerate() {
        if named.insert(source.name.as_str()) {
            cache.refresh(i, source);
        } else {
            again.push((i, Parsed::new(i, source)));
        }
    }
    cache.keep_only(sources);
    let fresh = again.iter_mut().map(|(_, p)| p);
    for p in cache.files.values_mut().chain(fresh) {
        p.check(&ctx, &fingerprint);
    }
    let parsed: Vec<&Parsed> = sources
        .iter()
        .enumerate()
        .filter_map(|(i, s)| match again.iter().find(|(j, _)| *j == i) {
            Some((_, p)) => Some(p),
            None => cache.files.get(&s.name),
        })
        .collect();
    let objects: Vec<&load::Object> = parsed.iter().flat_map(|p| &p.objects).collect();
    let mut file_findings: Vec<Finding> = parsed
        .iter()
        .flat_map(|p| p.findings.iter().cloned())
        .collect();
    let mut seen: rustc_hash::FxHashSet<&ObjectKey> = objects.iter().map(|o| &o.key).collect();
    seen.extend(file_findings.iter().filter_map(|f| f.object.as_ref()));
    let objects_seen = seen.len();
    let checked: Vec<&validate::Checked> = parsed.iter().flat_map(|p| &p.checked).collect();
    let registry = validate::assemble(&objects, &checked, &mesh_settings, &mut file_findings);
    file_findings.sort_by_key(|f| f.origin.file);
    for (i, source) in sources.iter().enumerate() {
        let start = file_findings.partition_point(|f| f.origin.file < i);
        let end = file_findings.partition_point(|f| f.origin.file <= i);
        if start < end {
            lines::resolve(
                &String::from_utf8_lossy(&source.bytes),
                &mut file_findings[start..end],
            );
        }
    }
    file_findings.sort_by_key(|f| (f.origin.file, f.line));
    findings.extend(file_findings);
    let has_errors = findings.iter().any(Finding::is_error);
    let table = (!has_errors).then(|| {
        table::compile(
            &registry,
            &table::CompileOptions {
                namespace: opts.namespace,
                reserved_ports: opts.reserved_ports,
                age: opts.age,
            },
        )
    });
    Build {
        registry,
        table,
        findings,
        objects_seen,
    }
}

#[cfg(test)]
mod cache_tests {
    use super::*;

    #[test]
    fn cached_build_equals_a_fresh_one() {
        let good = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: a}\nspec:\n  hosts: [a.example.com]\n  ports: [{number: 443, name: https, protocol: HTTPS}]\n  resolution: NONE\n";
        let warn = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: b}\nspec:\n  hosts: [b.example.com]\n  ports: [{number: 443, name: https, protocol: HTTPS}]\n  resolution: NONE\n  bogus: 1\n";
        let mut cache = ParseCache::default();
        let opts = Options::default();
        let summary = |b: &Build| {
            (
                b.findings
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>(),
                b.table.as_ref().map(|t| t.clusters.len()),
            )
        };
        // Same files in another order, then one changed: the cache follows names and bytes.
        let loads: [Vec<Source>; 3] = [
            vec![Source::new("a.yaml", good), Source::new("b.yaml", warn)],
            vec![Source::new("b.yaml", warn), Source::new("a.yaml", good)],
            vec![
                Source::new("b.yaml", warn.replace("  bogus: 1\n", "")),
                Source::new("a.yaml", good),
            ],
        ];
        for sources in &loads {
            let cached = build_cached(sources, None, &opts, &mut cache);
            let fresh = build(sources, None, &opts);
            assert_eq!(summary(&cached), summary(&fresh));
        }
        assert_eq!(cache.files.len(), 2);
    }

    /// Validation kept from an earlier load is reused only while it cannot differ: not for an
    /// object whose certificate files were looked up (they may have appeared since), and not
    /// once the mesh settings changed.
    #[test]
    fn kept_validation_follows_files_and_mesh() {
        let dr = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: a}\nspec:\n  host: a.example.com\n  trafficPolicy: {tls: {mode: SIMPLE, caCertificates: /certs/ca.pem}}\n";
        let se = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: a, namespace: other}\nspec:\n  hosts: [a.example.com]\n  ports: [{number: 443, name: https, protocol: HTTPS}]\n  resolution: NONE\n";
        let sources = [Source::new("dr.yaml", dr), Source::new("se.yaml", se)];
        let mut cache = ParseCache::default();
        let missing_file = |b: &Build| b.findings.iter().any(|f| f.code == Code::FILE_NOT_FOUND);
        for present in [false, true, false] {
            let exists = move |_: &str| present;
            let opts = Options {
                file_exists: Some(&exists),
                ..Options::default()
            };
            let built = build_cached(&sources, None, &opts, &mut cache);
            assert_eq!(missing_file(&built), !present);
        }
        // The entry is exported to every namespace by default, to its own only once the mesh
        // says so: the same bytes, validated again.
        let services = |mesh: Option<&Source>, cache: &mut ParseCache| {
            let built = build_cached(&sources, mesh, &Options::default(), cache);
            built.table.map(|t| t.clusters.len())
        };
        let private = Source::new("mesh.yaml", "defaultServiceExportTo: [\".\"]\n");
        assert_eq!(services(None, &mut cache), Some(1));
        assert_eq!(services(Some(&private), &mut cache), Some(0));
        assert_eq!(services(None, &mut cache), Some(1));
    }
}
