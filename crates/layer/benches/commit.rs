//! Layer commit and extraction throughput on the two trees of issue 4:
//! 256 MiB of incompressible data (4 files) and 20,000 files of 1 KiB.
//!
//! Trees are built once under `$CAIRN_BENCH_DIR` (default
//! /var/tmp/cairn-layer-bench) and reused, never deleted between runs (see the
//! machine facts in DESIGN.md); benches/layer-baseline.sh measures the shell
//! pipelines on the same trees. Extraction goes into fresh directories that
//! are removed only when the whole bench is done.

use cairn_layer::{
    extract_layer, write_layer, Compression, DiffSource, ExtractOptions, LayerOptions, WhiteoutMode,
};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::fs;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn bench_dir() -> PathBuf {
    std::env::var_os("CAIRN_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/var/tmp/cairn-layer-bench".into())
}

/// Deterministic incompressible bytes (xorshift), so runs are comparable.
fn fill_random(buf: &mut [u8], seed: &mut u64) {
    for chunk in buf.chunks_mut(8) {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        let b = seed.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
}

/// Build the trees if a previous run (or the shell script) has not.
pub fn ensure_trees(base: &Path) -> (PathBuf, PathBuf) {
    let big = base.join("tree-big");
    let small = base.join("tree-small");
    if !big.join(".complete").exists() {
        let _ = fs::remove_dir_all(&big);
        fs::create_dir_all(&big).unwrap();
        let mut seed = 0x9e3779b97f4a7c15u64;
        let mut buf = vec![0u8; 1 << 20];
        for i in 0..4 {
            let mut f = BufWriter::new(fs::File::create(big.join(format!("blob{i}.bin"))).unwrap());
            for _ in 0..64 {
                fill_random(&mut buf, &mut seed);
                f.write_all(&buf).unwrap();
            }
        }
        fs::write(big.join(".complete"), b"").unwrap();
    }
    if !small.join(".complete").exists() {
        let _ = fs::remove_dir_all(&small);
        let mut seed = 0x2545f4914f6cdd1du64;
        let mut buf = vec![0u8; 1024];
        for d in 0..100 {
            let dir = small.join(format!("d{d:03}"));
            fs::create_dir_all(&dir).unwrap();
            for f in 0..200 {
                fill_random(&mut buf, &mut seed);
                fs::write(dir.join(format!("f{f:03}")), &buf).unwrap();
            }
        }
        fs::write(small.join(".complete"), b"").unwrap();
    }
    (big, small)
}

fn tree_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(d).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else {
                total += m.len();
            }
        }
    }
    total
}

fn commit(tree: &Path, out: &Path, compression: Compression) {
    let f = fs::File::create(out).unwrap();
    let opts = LayerOptions {
        compression,
        ..LayerOptions::default()
    };
    write_layer(
        DiffSource::Full(tree),
        &opts,
        BufWriter::with_capacity(1 << 20, f),
    )
    .unwrap();
}

fn benches(c: &mut Criterion) {
    let base = bench_dir();
    let (big, small) = ensure_trees(&base);
    let scratch = base.join(format!("run-{}", std::process::id()));
    fs::create_dir_all(&scratch).unwrap();

    for (name, tree) in [("256MiB-4files", &big), ("20k-1KiB-files", &small)] {
        let bytes = tree_bytes(tree);
        let mut g = c.benchmark_group(format!("commit/{name}"));
        g.sample_size(10)
            .measurement_time(Duration::from_secs(20))
            .warm_up_time(Duration::from_secs(2));
        g.throughput(Throughput::Bytes(bytes));
        for compression in [Compression::Zstd, Compression::Gzip] {
            let out = scratch.join(format!("{name}.{compression}"));
            g.bench_function(compression.to_string(), |b| {
                b.iter(|| commit(tree, &out, compression))
            });
        }
        g.finish();

        // Extraction of the zstd layer just written, each time into a new dir.
        let layer = scratch.join(format!("{name}.zstd"));
        commit(tree, &layer, Compression::Zstd);
        let mut blob = Vec::new();
        fs::File::open(&layer)
            .unwrap()
            .read_to_end(&mut blob)
            .unwrap();
        let mut g = c.benchmark_group(format!("extract/{name}"));
        g.sample_size(10)
            .measurement_time(Duration::from_secs(20))
            .warm_up_time(Duration::from_secs(2));
        g.throughput(Throughput::Bytes(bytes));
        let mut n = 0u64;
        g.bench_function("zstd", |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    n += 1;
                    let dest = scratch.join(format!("x-{name}-{n}"));
                    fs::create_dir(&dest).unwrap();
                    let opts = ExtractOptions {
                        whiteout_mode: WhiteoutMode::Apply,
                        ..ExtractOptions::default()
                    };
                    let t = Instant::now();
                    extract_layer(&blob[..], &dest, &opts).unwrap();
                    total += t.elapsed();
                }
                total
            })
        });
        g.finish();
    }
    // Clean up only at the very end.
    let _ = fs::remove_dir_all(&scratch);
}

criterion_group!(layer_benches, benches);
criterion_main!(layer_benches);
