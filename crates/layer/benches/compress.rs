//! In-memory compression throughput, no disk: the parallel gzip writer on
//! incompressible data (stored blocks after the trial) and on tar-like text
//! (deflate level 6), with 1 and 2 threads, and zstd level 3 for reference.
//! The on-disk commit and extraction paths are in `commit.rs`.

use cairn_layer::ParallelGzEncoder;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::io::Write;
use std::time::Duration;

const LEN: usize = 32 << 20;

fn random(len: usize) -> Vec<u8> {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn text(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 100);
    let mut i = 0u64;
    while out.len() < len {
        out.extend_from_slice(
            format!(
                "usr/share/doc/pkg{i}/changelog line {i} version {}\n",
                i % 97
            )
            .as_bytes(),
        );
        i += 1;
    }
    out.truncate(len);
    out
}

fn benches(c: &mut Criterion) {
    for (name, data) in [("random", random(LEN)), ("text", text(LEN))] {
        let mut g = c.benchmark_group(format!("compress/{name}-32MiB"));
        g.sample_size(10)
            .measurement_time(Duration::from_secs(10))
            .warm_up_time(Duration::from_secs(1));
        g.throughput(Throughput::Bytes(LEN as u64));
        for threads in [1, 2] {
            g.bench_function(format!("gzip6-{threads}t"), |b| {
                b.iter(|| {
                    let mut enc = ParallelGzEncoder::new(Vec::new(), 6, threads).unwrap();
                    enc.write_all(&data).unwrap();
                    enc.finish().unwrap().len()
                })
            });
        }
        g.bench_function("zstd3-2t", |b| {
            b.iter(|| {
                let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
                enc.multithread(2).unwrap();
                enc.write_all(&data).unwrap();
                enc.finish().unwrap().len()
            })
        });
        g.finish();
    }
}

criterion_group!(compress_benches, benches);
criterion_main!(compress_benches);
