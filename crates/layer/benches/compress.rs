//! In-memory compression throughput, no disk: the parallel gzip writer on
//! incompressible data (stored blocks after the trial) and on tar-like text
//! (deflate level 6), with 1 and 2 threads; the layer zstd writer (raw
//! frames for chunks that do not compress) against the plain libzstd
//! stream it used to be, level 3, 2 workers, on the same data and on
//! alternating random and text MiBs.
//! The on-disk commit and extraction paths are in `commit.rs`.

use cairn_layer::{ParallelGzEncoder, ZstdEncoder};
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

/// An output buffer with room for the data: the zstd rows measure the
/// encoders, not the growth of the output `Vec` (which dominated the raw
/// frames' time).
fn sink() -> Vec<u8> {
    Vec::with_capacity(LEN + LEN / 64)
}

fn benches(c: &mut Criterion) {
    let mixed: Vec<u8> = random(LEN / 2)
        .chunks(1 << 20)
        .zip(text(LEN / 2).chunks(1 << 20))
        .flat_map(|(r, t)| [r, t].concat())
        .collect();
    for (name, data) in [
        ("random", random(LEN)),
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
