//! The hash of a stream on the writing thread vs on a thread of its own
//! (`HashingWriter::new` vs `HashingWriter::threaded`), in memory: what
//! the writing thread of a commit, a pull or an ingest pays per 64 MiB
//! passed on in 1 MiB writes. Wall time; the threaded one also uses a
//! second core for the hash itself.

use cairn_layer::HashingWriter;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::io::Write;
use std::time::Duration;

const LEN: usize = 64 << 20;
const WRITE: usize = 1 << 20;

fn benches(c: &mut Criterion) {
    let data: Vec<u8> = (0..LEN).map(|i| (i * 31 % 251) as u8).collect();
    let mut g = c.benchmark_group("sha256/64MiB");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Bytes(LEN as u64));
    g.bench_function("inline", |b| {
        b.iter(|| {
            let mut w = HashingWriter::new(std::io::sink());
            for chunk in data.chunks(WRITE) {
                w.write_all(chunk).unwrap();
            }
            w.finish().1
        })
    });
    g.bench_function("threaded", |b| {
        b.iter(|| {
            let mut w = HashingWriter::threaded(std::io::sink());
            for chunk in data.chunks(WRITE) {
                w.write_all(chunk).unwrap();
            }
            w.finish().1
        })
    });
    g.finish();
}

criterion_group!(hash, benches);
criterion_main!(hash);
