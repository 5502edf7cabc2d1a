//! Reloads of 10,000 ServiceEntries for callgrind to count: the generated file stays unchanged
//! (its modification time set an hour back, so its stamp is trusted from the second load) and a
//! small second file alternates between two versions, as in S8 and criterion's `reload`. The
//! reloads run inside `reloads`, so callgrind can count them alone:
//!
//! ```text
//! cargo build --release -p dataplane-perf --example reload_instructions
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='reload_instructions::reloads' \
//!     target/release/examples/reload_instructions 20
//! ```
//!
//! Instructions per reload are the total divided by the count given (20 here). Without
//! valgrind it prints the wall time per reload.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a measurement tool may panic on bad setup

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use dataplane::control::{Loader, Sources};

/// The proxy's allocator: a reload's cost is much of it allocation.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `n` reloads, each after an edit of the small file.
#[inline(never)]
fn reloads(loader: &mut Loader, dir: &Path, n: usize) {
    for i in 0..n {
        let text = dataplane_perf::reload_edit_yaml(i as u64 % 2 + 1);
        std::fs::write(dir.join("small.yaml"), text).unwrap();
        drop(std::hint::black_box(loader.load().unwrap()));
    }
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map_or(20, |s| s.parse().expect("a count"));
    let dir = std::env::temp_dir().join(format!("dataplane-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let generated = dir.join("gen.yaml");
    std::fs::write(&generated, dataplane_perf::service_entries_yaml(10_000)).unwrap();
    let file = std::fs::File::options()
        .write(true)
        .open(&generated)
        .unwrap();
    file.set_modified(SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    drop(file);
    std::fs::write(dir.join("small.yaml"), dataplane_perf::reload_edit_yaml(0)).unwrap();
    let mut loader = Loader::new(Sources {
        paths: vec![generated, dir.join("small.yaml")],
        mesh: None,
        namespace: "default".into(),
        reserved: Vec::new(),
    });
    // The first load decodes everything; its stamp is trusted once the change time is 2 s old.
    drop(loader.load().unwrap());
    std::thread::sleep(Duration::from_millis(2500));
    drop(loader.load().unwrap());
    let started = Instant::now();
    reloads(&mut loader, &dir, n);
    eprintln!("{:?} per reload", started.elapsed() / n.max(1) as u32);
    let _ = std::fs::remove_dir_all(&dir);
}
