//! Build benches on the 8-step Dockerfile of `benches/build-context` over the
//! busybox fixture (the same inputs as `benches/build-vs-buildah.sh`, which
//! puts buildah beside these numbers):
//! - `cached`: nothing changed since the last build (target: under 50 ms);
//! - `last_copy_changed`: the file the last COPY reads changed, so only that
//!   step runs (target: under 150 ms);
//! - `cold`: a fresh store each iteration (the base imported untimed).

#[path = "../tests/common/mod.rs"]
mod common;

use cairn_builder::Builder;
use cairn_sandbox::{init_hook, Launcher};
use cairn_store::reference::ImageRef;
use cairn_store::Store;
use criterion::{BatchSize, Criterion};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// The bench context copied into `dir`, its Dockerfile's base renamed to
/// the fixture's tag.
fn context(dir: &Path) -> std::path::PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../benches/build-context");
    let ctx = dir.join("ctx");
    std::fs::create_dir_all(ctx.join("config")).expect("ctx dir");
    for entry in walkdir::WalkDir::new(&src).min_depth(1) {
        let entry = entry.expect("walk bench context");
        let rel = entry.path().strip_prefix(&src).expect("inside");
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(ctx.join(rel)).expect("mkdir");
        } else {
            std::fs::copy(entry.path(), ctx.join(rel)).expect("copy");
        }
    }
    ctx
}

fn store_with_base(dir: &Path) -> Store {
    let store = cairn_testsupport::store_with_busybox(dir);
    let manifest = store.resolve("busybox:fixture").expect("fixture image");
    let name: ImageRef = "localhost/bbfixture:latest".parse().expect("name");
    store.tag(&name, &manifest).expect("tag the base");
    store
}

fn main() {
    init_hook();
    let launcher = Launcher::current_exe().expect("current exe");
    let tmp = tempfile::tempdir_in("/var/tmp").expect("tempdir");
    let ctx = context(tmp.path());
    let req = common::request(&ctx, "localhost/bench:latest");
    let warm = store_with_base(&tmp.path().join("warm"));
    let build = |store: &Store| {
        Builder::new(store, launcher.clone())
            .build(&req, &mut |_| {})
            .expect("build")
    };
    build(&warm);

    let mut c = Criterion::default().configure_from_args().sample_size(30);
    c.bench_function("build/cached", |b| b.iter(|| build(&warm)));
    let n = AtomicU64::new(0);
    c.bench_function("build/last_copy_changed", |b| {
        b.iter_batched(
            || {
                let i = n.fetch_add(1, Ordering::Relaxed);
                std::fs::write(ctx.join("main.sh"), format!("echo run {i}\n")).expect("edit");
            },
            |()| build(&warm),
            BatchSize::PerIteration,
        )
    });
    let stores = AtomicU64::new(0);
    let mut g = c.benchmark_group("build");
    g.sample_size(10);
    g.bench_function("cold", |b| {
        b.iter_batched(
            || {
                // A new store each time: no deletion between runs (DESIGN.md on ext4).
                let i = stores.fetch_add(1, Ordering::Relaxed);
                store_with_base(&tmp.path().join(format!("cold-{i}")))
            },
            |store| build(&store),
            BatchSize::PerIteration,
        )
    });
    g.finish();
    c.final_summary();
}
