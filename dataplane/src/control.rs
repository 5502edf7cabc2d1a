//! The control thread: configuration is loaded, validated and compiled here, never on a
//! worker. A reload is triggered by SIGHUP or by a change under a watched path (debounced: 3 ms
//! after a file is closed after writing or renamed into place, 30 ms after anything else), reads
//! everything, and either publishes the new table with one atomic swap or keeps serving the last
//! good one and logs every error (Decisions 7). Object age for precedence (§7) is the generation
//! in which an object first appeared, kept across reloads.
//!
//! Paths are watched through their directory (a file's parent), so editors that write a
//! temporary file and rename it, and Kubernetes ConfigMap updates that swap the `..data`
//! symlink, are seen.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use dataplane_config::table::RouteTable;
use dataplane_config::{ObjectKey, Options};
use notify::Watcher;
use rustc_hash::FxHashMap;

use crate::admin::{AdminState, ReloadStatus};
use crate::config_files;
use crate::snapshot::Snapshot;

/// The quiet wanted after a change that may be half done (a file created, written, removed or
/// renamed away): an editor's save or a ConfigMap swap is a burst of events within a few
/// milliseconds, and reading in the middle of one could publish a configuration without a file.
const DEBOUNCE: Duration = Duration::from_millis(30);
/// The quiet wanted after a change that is complete (a file closed after writing, or renamed
/// into place, or a SIGHUP): only long enough to take the rest of the same burst in one reload.
const SETTLE: Duration = Duration::from_millis(3);
/// How often the control thread frees retired snapshots that nothing holds any more.
const RETIRE_SWEEP: Duration = Duration::from_secs(1);

/// Where the configuration comes from and how it is compiled.
#[derive(Debug, Clone)]
pub struct Sources {
    /// `--config` paths.
    pub paths: Vec<PathBuf>,
    /// `--mesh` file.
    pub mesh: Option<PathBuf>,
    /// `--namespace`.
    pub namespace: String,
    /// Ports the proxy does not serve.
    pub reserved: Vec<u16>,
}

/// The loader's state between reloads.
#[derive(Debug)]
pub struct Loader {
    sources: Sources,
    /// Object -> the generation in which it first appeared, and the last one it was in.
    ages: FxHashMap<ObjectKey, Age>,
    /// The generation the next successful load becomes.
    next: u64,
    /// Decoded files of the last load.
    cache: dataplane_config::ParseCache,
    /// The bytes of the last load's files.
    files: config_files::FileCache,
}

/// When an object was loaded.
#[derive(Debug, Clone, Copy)]
struct Age {
    /// The generation in which it first appeared (its age for precedence).
    first: u64,
    /// The last generation it was part of.
    last: u64,
}

impl Loader {
    /// A loader for `sources`; the first load is generation 1.
    pub fn new(sources: Sources) -> Self {
        Self {
            sources,
            ages: FxHashMap::default(),
            next: 1,
            cache: dataplane_config::ParseCache::default(),
            files: config_files::FileCache::default(),
        }
    }

    /// Read, validate and compile everything. Warnings are logged; errors reject the load and
    /// are returned, one line each.
    pub fn load(&mut self) -> Result<RouteTable, Vec<String>> {
        let files = config_files::read_sources_cached(&self.sources.paths, &mut self.files)
            .map_err(|e| vec![e])?;
        let mesh = config_files::read_mesh(self.sources.mesh.as_deref()).map_err(|e| vec![e])?;
        let generation = self.next;
        let ages = &self.ages;
        let age = |k: &ObjectKey| ages.get(k).map_or(generation, |a| a.first);
        let exists = config_files::file_exists;
        let opts = Options {
            namespace: &self.sources.namespace,
            reserved_ports: &self.sources.reserved,
            file_exists: Some(&exists),
            age: Some(&age),
        };
        let built = dataplane_config::build_cached(&files, mesh.as_ref(), &opts, &mut self.cache);
        for f in built.findings.iter().filter(|f| !f.is_error()) {
            tracing::warn!("{f}");
        }
        let Some(table) = built.table else {
            return Err(built.error_messages());
        };
        // Ages survive for objects still present; an object that comes back later is new. The
        // map is updated in place: only new objects cost a copy of their key.
        for key in built.registry.objects.iter() {
            match self.ages.get_mut(key) {
                Some(age) => age.last = generation,
                None => {
                    let age = Age {
                        first: generation,
                        last: generation,
                    };
                    self.ages.insert(key.clone(), age);
                }
            }
        }
        self.ages.retain(|_, age| age.last == generation);
        self.next += 1;
        Ok(table)
    }

    /// What to watch: each configuration directory, and each named file through its parent.
    fn watch_targets(&self) -> Vec<WatchTarget> {
        let target = |p: &PathBuf| {
            let canonical = std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
            if p.is_dir() {
                WatchTarget {
                    dir: canonical,
                    file: None,
                }
            } else {
                let dir = canonical
                    .parent()
                    .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
                WatchTarget {
                    dir,
                    file: p.file_name().map(std::ffi::OsStr::to_os_string),
                }
            }
        };
        self.sources
            .paths
            .iter()
            .chain(self.sources.mesh.iter())
            .map(target)
            .collect()
    }
}

/// A watched directory and, for a path given as a file, that file's name.
#[derive(Debug, Clone)]
struct WatchTarget {
    dir: PathBuf,
    file: Option<std::ffi::OsString>,
}

/// Whether a change at `path` can change the configuration: a YAML file or a ConfigMap `..`
/// entry in a watched directory, or a watched file (or the `..` entries it links through).
/// Anything else in those directories (the proxy's own logs, say) is ignored.
fn concerns(targets: &[WatchTarget], path: &Path) -> bool {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return false;
    };
    let text = name.to_string_lossy();
    let configmap = text.starts_with("..");
    targets.iter().any(|t| {
        t.dir == dir
            && match &t.file {
                None => configmap || text.ends_with(".yaml") || text.ends_with(".yml"),
                Some(file) => configmap || file == name,
            }
    })
}

/// Start the control thread: reload on SIGHUP and on changes, publish to `admin.published`, and
/// record each outcome for `/config_dump`.
///
/// `workers` is the number of worker threads (pinned to cores 0, 1, ...): when the machine has
/// more cores than that, the control thread keeps off the workers' cores, so a reload takes
/// no time from a worker.
pub fn spawn(mut loader: Loader, admin: Arc<AdminState>, workers: usize) -> std::io::Result<()> {
    let (tx, rx) = mpsc::channel::<Trigger>();
    let signal_tx = tx.clone();
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for _ in signals.forever() {
                let sighup = Trigger {
                    why: "SIGHUP",
                    complete: true,
                };
                if signal_tx.send(sighup).is_err() {
                    return;
                }
            }
        })?;
    // Watches are registered before this returns: a change made right after start is seen.
    let watch_tx = tx.clone();
    let targets = loader.watch_targets();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        let Some(complete) = completes(&event.kind) else {
            return;
        };
        if event.paths.iter().any(|p| concerns(&targets, p)) {
            let _ = watch_tx.send(Trigger {
                why: "file change",
                complete,
            });
        }
    });
    let watcher = match watcher {
        Ok(mut w) => {
            let mut dirs: Vec<PathBuf> =
                loader.watch_targets().into_iter().map(|t| t.dir).collect();
            dirs.sort();
            dirs.dedup();
            for d in dirs {
                if let Err(e) = w.watch(&d, notify::RecursiveMode::NonRecursive) {
                    tracing::warn!("cannot watch {}: {e} (SIGHUP still reloads)", d.display());
                }
            }
            Some(w)
        }
        Err(e) => {
            tracing::warn!("no file watcher ({e}): reload with SIGHUP");
            None
        }
    };
    drop(tx);
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            if workers < cores {
                let _ = monoio::utils::bind_to_cpu_set(workers..cores);
            }
            // Kept alive for the thread's lifetime.
            let _watcher = watcher;
            // Snapshots replaced by a reload, kept here until no worker or connection holds
            // them, so the last reference (and freeing a large table) is dropped on this
            // thread, never on a worker.
            let mut retired: Vec<Arc<Snapshot>> = Vec::new();
            loop {
                retired.retain(|s| Arc::strong_count(s) > 1);
                let first = match rx.recv_timeout(RETIRE_SWEEP) {
                    Ok(trigger) => trigger,
                    Err(mpsc::RecvTimeoutError::Timeout) => continue,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                };
                let first_event = std::time::Instant::now();
                let why = first.why;
                // An editor's save or a ConfigMap swap is several events: wait until the last
                // one has had its quiet.
                let mut quiet = first.quiet();
                while let Ok(next) = rx.recv_timeout(quiet) {
                    quiet = next.quiet();
                }
                let started = std::time::Instant::now();
                match loader.load() {
                    Ok(table) => {
                        retired.push(admin.published.current());
                        let generation = admin.published.publish(Snapshot::build(table));
                        tracing::info!(
                            generation,
                            trigger = why,
                            load_ms = started.elapsed().as_millis() as u64,
                            since_change_ms = first_event.elapsed().as_millis() as u64,
                            "configuration reloaded and published"
                        );
                        record(&admin, ReloadStatus::now(why, "published", Vec::new()));
                    }
                    Err(errors) => {
                        for e in &errors {
                            tracing::error!("{e}");
                        }
                        tracing::error!(
                            errors = errors.len(),
                            generation = admin.published.generation(),
                            trigger = why,
                            "configuration reload rejected: keeping the current configuration"
                        );
                        record(&admin, ReloadStatus::now(why, "rejected", errors));
                    }
                }
            }
        })?;
    Ok(())
}

/// Why a reload is wanted, and whether the change that asked for it is complete.
#[derive(Debug, Clone, Copy)]
struct Trigger {
    why: &'static str,
    complete: bool,
}

impl Trigger {
    /// How long to wait for more events before reading.
    fn quiet(self) -> Duration {
        if self.complete { SETTLE } else { DEBOUNCE }
    }
}

/// Whether a watch event finishes a change (`Some(true)`: a file closed after writing or
/// renamed into place), may be part of one still under way (`Some(false)`: created, written,
/// removed, renamed away, anything unknown), or says nothing (`None`: reads, opens, and
/// notify's rename pairs, whose two halves arrive as events of their own).
fn completes(kind: &notify::EventKind) -> Option<bool> {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => Some(true),
        EventKind::Access(_) => None,
        EventKind::Modify(ModifyKind::Name(RenameMode::To)) => Some(true),
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => None,
        _ => Some(false),
    }
}

fn record(admin: &AdminState, status: ReloadStatus) {
    use std::sync::atomic::Ordering::Relaxed;
    admin.metrics.reloads.fetch_add(1, Relaxed);
    if status.outcome == "rejected" {
        admin.metrics.reload_failures.fetch_add(1, Relaxed);
    }
    if let Ok(mut last) = admin.last_reload.lock() {
        *last = status;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ages carry over reloads: an entry keeps a shared host against a newer one whatever the
    /// names, and an entry that left and came back is the newest.
    #[test]
    fn the_oldest_entry_keeps_a_shared_host_across_reloads() {
        let dir = std::env::temp_dir().join(format!("dataplane-ages-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("entries.yaml");
        let entry = |name: &str, resolution: &str| {
            format!(
                "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}}}\nspec:\n  hosts: [shared.example.com]\n  ports: [{{number: 443, name: https, protocol: HTTPS}}]\n  resolution: {resolution}\n"
            )
        };
        let mut loader = Loader::new(Sources {
            paths: vec![file.clone()],
            mesh: None,
            namespace: "default".into(),
            reserved: Vec::new(),
        });
        let mut serving = |entries: &[&str]| {
            std::fs::write(&file, entries.concat()).unwrap();
            let table = loader.load().unwrap();
            let cluster = table
                .clusters
                .iter()
                .find(|c| c.host() == "shared.example.com");
            cluster.map(|c| c.service.key.name.clone()).unwrap()
        };
        let (zed, alpha) = (entry("zed", "NONE"), entry("alpha", "DNS"));
        assert_eq!(serving(&[&zed]), "zed");
        assert_eq!(serving(&[&alpha, &zed]), "zed");
        assert_eq!(serving(&[&alpha]), "alpha");
        assert_eq!(serving(&[&zed, &alpha]), "alpha");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn only_a_finished_write_or_a_rename_into_place_completes_a_change() {
        use notify::EventKind;
        use notify::event::{
            AccessKind, AccessMode, CreateKind, DataChange, MetadataKind, ModifyKind, RemoveKind,
            RenameMode,
        };
        let cases = [
            (
                EventKind::Access(AccessKind::Close(AccessMode::Write)),
                Some(true),
            ),
            (
                EventKind::Modify(ModifyKind::Name(RenameMode::To)),
                Some(true),
            ),
            (EventKind::Access(AccessKind::Close(AccessMode::Read)), None),
            (EventKind::Access(AccessKind::Open(AccessMode::Any)), None),
            (EventKind::Modify(ModifyKind::Name(RenameMode::Both)), None),
            // vim renames the file away before writing the new one.
            (
                EventKind::Modify(ModifyKind::Name(RenameMode::From)),
                Some(false),
            ),
            (EventKind::Create(CreateKind::File), Some(false)),
            (
                EventKind::Modify(ModifyKind::Data(DataChange::Any)),
                Some(false),
            ),
            (
                EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any)),
                Some(false),
            ),
            (EventKind::Remove(RemoveKind::File), Some(false)),
            (EventKind::Any, Some(false)),
            (EventKind::Other, Some(false)),
        ];
        for (kind, want) in cases {
            assert_eq!(completes(&kind), want, "{kind:?}");
        }
    }

    #[test]
    fn only_configuration_changes_concern_a_reload() {
        let targets = vec![
            WatchTarget {
                dir: "/etc/dp/conf".into(),
                file: None,
            },
            WatchTarget {
                dir: "/etc/dp".into(),
                file: Some("mesh.yaml".into()),
            },
        ];
        let cases = [
            ("/etc/dp/conf/a.yaml", true),
            ("/etc/dp/conf/b.yml", true),
            ("/etc/dp/conf/..data", true),
            ("/etc/dp/conf/..2026_11_24", true),
            ("/etc/dp/conf/notes.txt", false),
            ("/etc/dp/conf/a.yaml.swp", false),
            ("/etc/dp/mesh.yaml", true),
            ("/etc/dp/proxy.log", false),
            ("/etc/dp/other.yaml", false),
            ("/elsewhere/a.yaml", false),
        ];
        for (path, want) in cases {
            assert_eq!(concerns(&targets, Path::new(path)), want, "{path}");
        }
    }
}
