//! Store benches:
//! - ingest of a 1 GiB file from page cache (hash + write + fsync + rename),
//!   against `openssl dgst -sha256` on the same file in the same run (the
//!   floor: one SHA-NI pass), hashing alone in-process, and `dd conv=fsync`
//!   (the same bytes written through the page cache and fsynced, not
//!   hashed: what a buffered write costs; ingest writes directly);
//! - tag lookup and manifest read latency in a store with 1000 tags.
//!
//! Each ingest iteration writes into a fresh store directory (no deletion
//! between measured runs: see DESIGN on ext4 after mass deletion); all are
//! removed at the end. CAIRN_BENCH_DIR picks where (default: a temp dir).

use cairn_layer::digest::HashingWriter;
use cairn_store::{Digest, ImageRef, Store};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const GIB: u64 = 1 << 30;

fn bench_dir() -> tempfile::TempDir {
    match std::env::var_os("CAIRN_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d).unwrap(),
        None => tempfile::tempdir_in("/var/tmp").unwrap(),
    }
}

/// A 1 GiB file of incompressible bytes, read once so it sits in page cache.
fn make_input(dir: &Path) -> PathBuf {
    let path = dir.join("input-1gib");
    let mut f = fs::File::create(&path).unwrap();
    let mut state = 0x9e3779b97f4a7c15u64;
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..(GIB >> 20) {
        for chunk in buf.chunks_mut(8) {
            // xorshift: cheap, incompressible enough for a store that does not compress.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes());
        }
        f.write_all(&buf).unwrap();
    }
    f.sync_all().unwrap();
    let mut r = fs::File::open(&path).unwrap();
    while r.read(&mut buf).unwrap() > 0 {}
    path
}

fn ingest(c: &mut Criterion) {
    let dir = bench_dir();
    let input = make_input(dir.path());
    let mut g = c.benchmark_group("ingest_1gib");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .measurement_time(Duration::from_secs(10))
        .warm_up_time(Duration::from_secs(1))
        .throughput(Throughput::Bytes(GIB));

    g.bench_function("openssl_dgst_sha256", |b| {
        b.iter(|| {
            let out = Command::new("openssl")
                .arg("dgst")
                .arg("-sha256")
                .arg(&input)
                .output()
                .unwrap();
            assert!(out.status.success());
        })
    });
    g.bench_function("sha256_in_process", |b| {
        b.iter(|| {
            let mut hw = HashingWriter::new(std::io::sink());
            cairn_store::blob::copy_stream(&mut fs::File::open(&input).unwrap(), &mut hw).unwrap();
            hw.finish().1
        })
    });
    // A buffered copy + fsync, no hashing (a fresh file each time).
    let mut dd_n = 0u64;
    g.bench_function("dd_write_fsync", |b| {
        b.iter(|| {
            dd_n += 1;
            let out = Command::new("dd")
                .arg(format!("if={}", input.display()))
                .arg(format!(
                    "of={}",
                    dir.path().join(format!("dd-{dd_n}")).display()
                ))
                .args(["bs=1M", "conv=fsync", "status=none"])
                .output()
                .unwrap();
            assert!(out.status.success());
        })
    });
    let mut n = 0u64;
    g.bench_function("store_ingest_reader", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                n += 1;
                let store = Store::open(dir.path().join(format!("store-{n}"))).unwrap();
                let f = fs::File::open(&input).unwrap();
                let start = Instant::now();
                let info = store.ingest_reader(f, None).unwrap();
                total += start.elapsed();
                assert_eq!(info.size, GIB);
            }
            total
        })
    });
    g.finish();
}

fn lookups(c: &mut Criterion) {
    let dir = bench_dir();
    let store = Store::open(dir.path()).unwrap();
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let cfg = store.ingest_bytes(config, None).unwrap();
    let mut manifests = Vec::new();
    for i in 0..1000 {
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[],"annotations":{{"i":"{i}"}}}}"#,
            cfg.digest, cfg.size
        );
        let p = store.record_manifest(m.as_bytes(), None).unwrap();
        manifests.push((
            ImageRef::parse(&format!("bench/img{i}:v1")).unwrap(),
            p.digest,
        ));
    }
    store.tag_many(&manifests).unwrap();
    let (name, digest): (ImageRef, Digest) = manifests[537].clone();
    c.bench_function("tag_lookup_1000_tags", |b| {
        b.iter(|| store.lookup_tag(&name).unwrap().unwrap())
    });
    c.bench_function("resolve_user_input", |b| {
        b.iter(|| store.resolve("bench/img537:v1").unwrap())
    });
    c.bench_function("manifest_read_parse", |b| {
        b.iter(|| store.manifest(&digest).unwrap())
    });
    c.bench_function("has_blob", |b| b.iter(|| store.has_blob(&digest)));
}

criterion_group!(benches, ingest, lookups);
criterion_main!(benches);
