//! Reading configuration paths: a file, or every `*.yaml` / `*.yml` directly in a directory
//! (not recursive; names starting with `.` skipped, so Kubernetes ConfigMap mounts, whose
//! `..data` directory and timestamped copies are hidden, are read once).

use std::io;
use std::path::{Path, PathBuf};

use dataplane_config::Source;

/// The files a configuration path stands for, sorted by name.
pub fn expand(path: &Path) -> io::Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let yaml = name.ends_with(".yaml") || name.ends_with(".yml");
        if name.starts_with('.') || !yaml {
            continue;
        }
        // Follow symlinks (ConfigMap entries are links into `..data`).
        if std::fs::metadata(entry.path())?.is_file() {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// Read every file of every path, in order.
pub fn read_sources(paths: &[PathBuf]) -> Result<Vec<Source>, String> {
    let mut sources = Vec::new();
    for path in paths {
        let files = expand(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        for file in files {
            let bytes =
                std::fs::read(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            sources.push(Source::new(file.display().to_string(), bytes));
        }
    }
    Ok(sources)
}

/// Read the mesh file, if one is given.
pub fn read_mesh(path: Option<&Path>) -> Result<Option<Source>, String> {
    let Some(path) = path else { return Ok(None) };
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(Some(Source::new(path.display().to_string(), bytes)))
}

/// Whether a file can be read (for certificate paths named by DestinationRules).
pub fn file_exists(path: &str) -> bool {
    std::fs::File::open(path).is_ok()
}
