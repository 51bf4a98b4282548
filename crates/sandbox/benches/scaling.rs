//! How sandbox start and commit scale, through the library as a platform
//! service calls it (`SandboxManager` over a real store).
//!
//! * `start_by_image/*`: `create` + `exec true`, end to end, from images
//!   whose layers are already extracted: busybox (1 layer, ~1 MiB); busybox
//!   and 19 small layers (20 layers); busybox and one 200 MiB layer; busybox
//!   and 19 layers of 10.5 MiB (20 layers, 200 MiB). Start cost must not
//!   depend on the image's size or layer count.
//! * `commit_100mib/*`: commit of a sandbox whose command wrote 100 MiB of
//!   random data (the write is not timed), against the layer pipeline alone
//!   (`write_layer` of the same amount into a store blob) in the same run.
//!
//! Sandboxes are removed only at the end (see DESIGN.md on ext4 after mass
//! deletions). `benches/sandbox-scaling.sh` runs this and prints medians.

use cairn_layer::{write_layer, Compression, DiffSource, LayerOptions, OverlayFlavour};
use cairn_sandbox::manager::{Argv, CreateOptions, ExecOptions, SandboxManager};
use cairn_sandbox::{init_hook, Launcher, RunStdio};
use cairn_store::Store;
use criterion::{Criterion, SamplingMode};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;

fn quiet(argv: &[&str]) -> ExecOptions {
    ExecOptions {
        argv: Argv::Direct(argv.iter().map(|s| s.to_string()).collect()),
        stdio: RunStdio {
            stdin: Some(Stdio::null()),
            stdout: Some(Stdio::null()),
            stderr: None,
            ..RunStdio::default()
        },
        ..ExecOptions::default()
    }
}

/// busybox plus `layers` random layers of `bytes` each, tagged `name`.
fn image(store: &Store, name: &str, layers: usize, bytes: usize) -> String {
    let mut base = "busybox:fixture".to_string();
    for i in 0..layers {
        let tag = format!("localhost/{name}:{i}");
        cairn_testsupport::add_random_layer(store, &base, bytes, (i as u64 + 1) * 7919, &tag);
        base = tag;
    }
    base
}

fn start_by_image(c: &mut Criterion, store: &Store, manager: &SandboxManager) {
    let images = [
        ("1-layer-1MiB", "busybox:fixture".to_string()),
        ("20-layers-1MiB", image(store, "small20", 19, 16 << 10)),
        ("2-layers-201MiB", image(store, "big2", 1, 200 * MIB)),
        (
            "20-layers-201MiB",
            image(store, "big20", 19, 200 * MIB / 19),
        ),
    ];
    let mut made = Vec::new();
    for (_, image) in &images {
        // The first create extracts the layers; every later one reuses them.
        let warm = manager
            .create(image, CreateOptions::default())
            .expect("create");
        made.push(warm.id);
    }
    // Writing ~400 MiB of blobs and layer dirs leaves the disk busy with
    // writeback for a while, which slows every fsync (a create commits a GC
    // root to SQLite): let it finish before measuring.
    nix::unistd::sync();
    let mut group = c.benchmark_group("start_by_image");
    group
        .sample_size(50)
        .measurement_time(Duration::from_secs(6));
    for (label, image) in &images {
        group.bench_function(*label, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t0 = Instant::now();
                    let sb = manager
                        .create(image, CreateOptions::default())
                        .expect("create");
                    let outcome = manager.exec(&sb.id, quiet(&["true"])).expect("exec");
                    total += t0.elapsed();
                    assert_eq!(outcome.exit_code, 0);
                    made.push(sb.id);
                }
                total
            })
        });
    }
    group.finish();
    for id in made {
        let _ = manager.remove(&id);
    }
}

fn commit_100mib(c: &mut Criterion, store: &Store, manager: &SandboxManager, scratch: &Path) {
    let mut group = c.benchmark_group("commit_100mib");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(1));
    // The same amount of data through the layer pipeline alone: a fresh
    // 100 MiB file per iteration (written, as the sandbox's is, just before
    // the timed part, so both meet the same page cache and writeback).
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut fresh_tree = |n: usize| {
        let tree = scratch.join(format!("pipeline-{n}"));
        std::fs::create_dir_all(&tree).expect("mkdir");
        let data: Vec<u8> = (0..100 * MIB / 8)
            .flat_map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed.to_le_bytes()
            })
            .collect();
        std::fs::write(tree.join("big"), &data).expect("write");
        tree
    };
    let mut trees = 0;
    let mut made = Vec::new();
    for compression in [Compression::Zstd, Compression::Gzip] {
        group.bench_function(format!("layer_pipeline/{compression}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    trees += 1;
                    let tree = fresh_tree(trees);
                    let t0 = Instant::now();
                    let opts = LayerOptions {
                        compression,
                        ..LayerOptions::default()
                    };
                    let source = DiffSource::OverlayUpper {
                        upper: &tree,
                        flavour: OverlayFlavour::UserXattr,
                    };
                    let mut w = store.blob_writer().expect("blob writer");
                    let info = write_layer(source, &opts, &mut w).expect("write layer");
                    w.commit(Some((info.digest, info.size))).expect("commit");
                    total += t0.elapsed();
                }
                total
            })
        });
        group.bench_function(format!("sandbox_commit/{compression}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let sb = manager
                        .create("busybox:fixture", CreateOptions::default())
                        .expect("create");
                    let write = "head -c 104857600 /dev/urandom > /big";
                    let outcome = manager
                        .exec(&sb.id, quiet(&["sh", "-c", write]))
                        .expect("exec");
                    assert_eq!(outcome.exit_code, 0);
                    let t0 = Instant::now();
                    manager
                        .commit(&sb.id, &format!("localhost/c:{}", sb.id), compression)
                        .expect("commit");
                    total += t0.elapsed();
                    made.push(sb.id);
                }
                total
            })
        });
    }
    group.finish();
    for id in made {
        let _ = manager.remove(&id);
    }
}

fn main() {
    init_hook();
    let base = std::env::var_os("CAIRN_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&base).expect("bench dir");
    let tmp = tempfile::tempdir_in(base).expect("tempdir");
    let store = cairn_testsupport::store_with_busybox(tmp.path());
    let manager = SandboxManager::new(&store, Launcher::current_exe().expect("current exe"));
    let mut c = Criterion::default().configure_from_args();
    start_by_image(&mut c, &store, &manager);
    commit_100mib(&mut c, &store, &manager, tmp.path());
    c.final_summary();
}
