//! Reading configuration paths: a file, or every `*.yaml` / `*.yml` directly in a directory
//! (not recursive; names starting with `.` skipped, so Kubernetes ConfigMap mounts, whose
//! `..data` directory and timestamped copies are hidden, are read once). A reload reads again
//! only the files whose stamp (inode, size, modification and change times) moved since the
//! last one.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    read_sources_cached(paths, &mut FileCache::default())
}

/// [`read_sources`], handing back the bytes kept in `cache` for a file that has not changed
/// since it was read (reading and comparing an unchanged 10,000-entry file again was a
/// twentieth of a reload's CPU). `cache` keeps the files of this call only; after an error
/// it may have forgotten some, which are then read again.
pub fn read_sources_cached(
    paths: &[PathBuf],
    cache: &mut FileCache,
) -> Result<Vec<Source>, String> {
    let mut sources = Vec::new();
    let mut kept = HashMap::new();
    for path in paths {
        let files = expand(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        for file in files {
            let cached = cache.files.remove(&file);
            let read = read_file(&file, cached)
                .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            sources.push(Source::shared(
                file.display().to_string(),
                read.bytes.clone(),
            ));
            kept.insert(file, read);
        }
    }
    cache.files = kept;
    Ok(sources)
}

/// Files as last read, by path.
#[derive(Debug, Default)]
pub struct FileCache {
    files: HashMap<PathBuf, Read>,
}

/// A file's bytes, and the stamp that vouches for them (`None`: read it again next time).
#[derive(Debug)]
struct Read {
    stamp: Option<Stamp>,
    bytes: Arc<[u8]>,
}

/// What changes whenever a file's contents do, read without opening it: the file (device and
/// inode: a rename into place is another file), its size, and its modification and change
/// times in nanoseconds (the change time moves on every write, even one that sets the
/// modification time back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    modified: (i64, i64),
    changed: (i64, i64),
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.size(),
            modified: (meta.mtime(), meta.mtime_nsec()),
            changed: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// Whether the file had been left alone for `settled` when it was read at `read_at`.
    fn settled_before(&self, read_at: SystemTime, settled: Duration) -> bool {
        let (secs, nanos) = self.changed;
        let changed = u64::try_from(secs)
            .ok()
            .zip(u32::try_from(nanos).ok())
            .map(|(s, n)| UNIX_EPOCH + Duration::new(s, n));
        changed.is_some_and(|c| c + settled < read_at)
    }
}

/// How long a file must have been unchanged when it was read for its stamp to vouch for its
/// bytes afterwards. A write in the same clock tick as the read (timestamps are as coarse as
/// the kernel's tick, or whole seconds on some filesystems) could leave the stamp as it was:
/// such a file is read again next time, as git re-reads its "racily clean" files.
const SETTLED: Duration = Duration::from_secs(2);

/// Read `file`, or hand back `cached`'s bytes when its stamp vouches for them still.
fn read_file(file: &Path, cached: Option<Read>) -> io::Result<Read> {
    read_file_settled(file, cached, SETTLED)
}

/// [`read_file`], trusting stamps of files left alone for `settled` before they were read.
fn read_file_settled(file: &Path, cached: Option<Read>, settled: Duration) -> io::Result<Read> {
    let stamp = Stamp::of(&std::fs::metadata(file)?);
    if let Some(c) = cached
        && c.stamp == Some(stamp)
    {
        return Ok(c);
    }
    let read_at = SystemTime::now();
    let bytes: Arc<[u8]> = std::fs::read(file)?.into();
    let after = Stamp::of(&std::fs::metadata(file)?);
    let trusted = after == stamp && stamp.settled_before(read_at, settled);
    Ok(Read {
        stamp: trusted.then_some(stamp),
        bytes,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Stamps vouch for a file's bytes only once it has been left alone for a while: a file
    /// written again (even to the same size and modification time) or replaced by a rename is
    /// read again, and so is one that was read too soon after it was written.
    #[test]
    fn unchanged_files_are_not_read_again() {
        let dir = std::env::temp_dir().join(format!("dp-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("a.yaml");
        // Settled at once, or only after an hour (so never in this test).
        let read = |cached| read_file_settled(&file, cached, Duration::ZERO).unwrap();
        let read_soon = |cached| read_file_settled(&file, cached, Duration::from_secs(3600));

        std::fs::write(&file, "one").unwrap();
        let fresh = read_soon(None).unwrap();
        assert!(
            fresh.stamp.is_none(),
            "changed too recently: not vouched for"
        );
        let again = read_soon(Some(fresh)).unwrap();
        assert!(again.stamp.is_none());

        let first = read(Some(again));
        assert!(first.stamp.is_some());
        let bytes = first.bytes.clone();
        let kept = read(Some(first));
        assert!(
            Arc::ptr_eq(&bytes, &kept.bytes),
            "unchanged: the same bytes, not read"
        );

        // The same size and modification time, other bytes: the change time moved.
        let modified = std::fs::metadata(&file).unwrap().modified().unwrap();
        std::fs::write(&file, "two").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(modified)
            .unwrap();
        let rewritten = read(Some(kept));
        assert_eq!(&*rewritten.bytes, b"two");

        // Replaced by a rename, as editors and ConfigMap updates do.
        let settled = read(Some(rewritten));
        let bytes = settled.bytes.clone();
        let other = dir.join("b.tmp");
        std::fs::write(&other, "two").unwrap();
        std::fs::rename(&other, &file).unwrap();
        let renamed = read(Some(settled));
        assert!(
            !Arc::ptr_eq(&bytes, &renamed.bytes),
            "another inode: read again"
        );
        assert_eq!(&*renamed.bytes, b"two");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
