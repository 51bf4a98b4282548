//! In-memory compression throughput, no disk: the parallel gzip writer on
//! incompressible data (stored blocks after the trial) and on tar-like text
//! (deflate level 6), with 1 and 2 threads; the layer zstd writer (raw
//! frames for chunks that do not compress) against the plain libzstd
//! stream it used to be, level 3, 2 workers, on the same data and on
//! alternating random and text MiBs.
//! The on-disk commit and extraction paths are in `commit.rs`.

use cairn_layer::testdata::{random, text};
use cairn_layer::{ParallelGzEncoder, ZstdEncoder};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::io::Write;
use std::time::Duration;

const LEN: usize = 32 << 20;
/// Seed of the incompressible input.
const SEED: u64 = 0x9e37_79b9_7f4a_7c15;

/// An output buffer with room for the data: the zstd rows measure the
/// encoders, not the growth of the output `Vec` (which dominated the raw
/// frames' time).
fn sink() -> Vec<u8> {
    Vec::with_capacity(LEN + LEN / 64)
}

fn benches(c: &mut Criterion) {
    let mixed: Vec<u8> = random(LEN / 2, SEED)
        .chunks(1 << 20)
        .zip(text(LEN / 2).chunks(1 << 20))
        .flat_map(|(r, t)| [r, t].concat())
        .collect();
    for (name, data) in [
        ("random", random(LEN, SEED)),
        ("text", text(LEN)),
        ("mixed", mixed),
    ] {
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
        g.bench_function("zstd3-plain-2t", |b| {
            b.iter(|| {
                let mut enc = zstd::stream::write::Encoder::new(sink(), 3).unwrap();
                enc.multithread(2).unwrap();
                enc.set_parameter(zstd::stream::raw::CParameter::JobSize(4 << 20))
                    .unwrap();
                for piece in data.chunks(1 << 20) {
                    enc.write_all(piece).unwrap();
                }
                enc.finish().unwrap().len()
            })
        });
        g.bench_function("zstd3-layer-2t", |b| {
            b.iter(|| {
                let mut enc = ZstdEncoder::new(sink(), 3, 2).unwrap();
                enc.write_all(&data).unwrap();
                enc.finish().unwrap().len()
            })
        });
        g.finish();
    }
}

criterion_group!(compress_benches, benches);
criterion_main!(compress_benches);
