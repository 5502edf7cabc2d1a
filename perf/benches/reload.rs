//! One reload of 10,000 ServiceEntries, as the control thread runs it (`control::Loader`):
//! read the files, decode and validate what changed, compile the table, carry object ages
//! over, and drop the table it replaces. S8 reloads under load every second, and what a reload
//! costs in CPU is what the proxy's latency pays while it runs.
//!
//! - `reload_10k_one_file_changed`: the generated file is unchanged and a small second file
//!   alternates between two versions (S8's edit), reloads back to back;
//! - `reload_10k_one_file_changed_after_rest`: the same, 300 ms after the last reload.
//!
//! A first load (everything decoded) is `compile/load_validate_compile_10k` in `route_lookup`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark may panic on bad setup

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use dataplane::control::{Loader, Sources};

/// The proxy's allocator: a reload's cost is much of it allocation.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// S8's edit: the small file alternates between two versions.
fn edit(dir: &Path, version: &mut u64) {
    *version = (*version + 1) % 2;
    let text = dataplane_perf::reload_edit_yaml(*version);
    std::fs::write(dir.join("small.yaml"), text).unwrap();
}

fn sources(dir: &Path) -> Sources {
    Sources {
        paths: vec![dir.join("gen.yaml"), dir.join("small.yaml")],
        mesh: None,
        namespace: "default".into(),
        reserved: Vec::new(),
    }
}

fn reload(c: &mut Criterion) {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("dataplane-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("gen.yaml"),
        dataplane_perf::service_entries_yaml(10_000),
    )
    .unwrap();
    let mut version = 0;
    edit(&dir, &mut version);

    let mut group = c.benchmark_group("reload");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(5));
    let mut loader = Loader::new(sources(&dir));
    drop(loader.load().unwrap());
    group.bench_function("reload_10k_one_file_changed", |b| {
        b.iter(|| {
            edit(&dir, &mut version);
            let table = loader.load().unwrap();
            black_box(table.clusters.len())
        })
    });
    group.finish();

    // The same reload after 300 ms of rest, as S8 reloads once a second: caches have gone
    // cold and the allocator has returned freed pages, and the reload costs about twice as
    // much. Only the reload is timed.
    let mut paced = c.benchmark_group("reload_paced");
    paced.sample_size(10);
    paced.measurement_time(Duration::from_secs(1));
    paced.bench_function("reload_10k_one_file_changed_after_rest", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                std::thread::sleep(Duration::from_millis(300));
                edit(&dir, &mut version);
                let started = Instant::now();
                let table = loader.load().unwrap();
                total += started.elapsed();
                drop(table);
            }
            total
        })
    });
    paced.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, reload);
criterion_main!(benches);
