//! Parallel gzip in the manner of pigz: the input is cut into fixed-size
//! chunks, each compressed independently as raw deflate ending in a sync flush
//! (so the pieces concatenate into one valid deflate stream), in parallel on a
//! small thread pool; CRC-32s are combined. The output is one standard gzip
//! member and depends only on the input, the level and the chunk size — never
//! on thread timing. (flate2 has no parallel mode; gzp is unmaintained.)

use flate2::{Compress, FlushCompress, Status};
use rayon::prelude::*;
use std::io::{self, Write};

/// Bytes per independently compressed chunk (pigz uses 128 KiB).
const CHUNK: usize = 256 * 1024;
/// Chunks gathered before a parallel round: bounds memory to about
/// `2 * CHUNKS_PER_ROUND * CHUNK`.
const CHUNKS_PER_ROUND: usize = 8;

/// A fixed header: no name, mtime 0, OS "unix", so output is reproducible.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];

pub struct ParallelGzEncoder<W: Write> {
    inner: W,
    level: flate2::Compression,
    pool: rayon::ThreadPool,
    pending: Vec<u8>,
    crc: crc32fast::Hasher,
    total: u64,
    wrote_header: bool,
}

impl<W: Write> ParallelGzEncoder<W> {
    pub fn new(inner: W, level: u32, threads: usize) -> io::Result<Self> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(|i| format!("cairn-gzip-{i}"))
            .build()
            .map_err(io::Error::other)?;
        Ok(ParallelGzEncoder {
            inner,
            level: flate2::Compression::new(level.min(9)),
            pool,
            pending: Vec::with_capacity(CHUNK * CHUNKS_PER_ROUND),
            crc: crc32fast::Hasher::new(),
            total: 0,
            wrote_header: false,
        })
    }

    /// Compress the pending chunks in parallel and write them in order.
    /// `last` marks the final round: its last chunk ends the deflate stream.
    fn flush_round(&mut self, last: bool) -> io::Result<()> {
        if !self.wrote_header {
            self.inner.write_all(&HEADER)?;
            self.wrote_header = true;
        }
        let level = self.level;
        let chunks: Vec<&[u8]> = if self.pending.is_empty() {
            vec![&[]]
        } else {
            self.pending.chunks(CHUNK).collect()
        };
        let n = chunks.len();
        let results: Vec<io::Result<(Vec<u8>, crc32fast::Hasher)>> = self.pool.install(|| {
            chunks
                .par_iter()
                .enumerate()
                .map(|(i, c)| compress_chunk(c, level, last && i + 1 == n))
                .collect()
        });
        for r in results {
            let (out, crc) = r?;
            self.inner.write_all(&out)?;
            self.crc.combine(&crc);
        }
        self.pending.clear();
        Ok(())
    }

    /// Write the final block and the gzip trailer; returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.flush_round(true)?;
        let crc = self.crc.clone().finalize();
        self.inner.write_all(&crc.to_le_bytes())?;
        self.inner.write_all(&(self.total as u32).to_le_bytes())?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

fn compress_chunk(
    data: &[u8],
    level: flate2::Compression,
    last: bool,
) -> io::Result<(Vec<u8>, crc32fast::Hasher)> {
    let mut crc = crc32fast::Hasher::new();
    crc.update(data);
    let mut c = Compress::new(level, false);
    let mut out = Vec::with_capacity(data.len() + data.len() / 64 + 64);
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    loop {
        let consumed = c.total_in() as usize;
        let status = c
            .compress_vec(&data[consumed..], &mut out, flush)
            .map_err(io::Error::other)?;
        let done = c.total_in() as usize == data.len()
            && match status {
                Status::StreamEnd => true,
                // A sync flush is complete once it left spare room in `out`.
                Status::Ok | Status::BufError => !last && out.len() < out.capacity(),
            };
        if done {
            return Ok((out, crc));
        }
        out.reserve(out.capacity().max(4096));
    }
}

impl<W: Write> Write for ParallelGzEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = CHUNK * CHUNKS_PER_ROUND - self.pending.len();
        let n = buf.len().min(room);
        self.pending.extend_from_slice(&buf[..n]);
        self.total += n as u64;
        if self.pending.len() == CHUNK * CHUNKS_PER_ROUND {
            self.flush_round(false)?;
        }
        Ok(n)
    }

    /// Only flushes the inner writer: compressing a partial round early would
    /// make the output depend on when callers flush.
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn round_trip(data: &[u8]) {
        let mut enc = ParallelGzEncoder::new(Vec::new(), 6, 2).unwrap();
        enc.write_all(data).unwrap();
        let gz = enc.finish().unwrap();
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn empty_and_small_and_multi_round() {
        round_trip(b"");
        round_trip(b"hello");
        let big: Vec<u8> = (0..(CHUNK * CHUNKS_PER_ROUND * 2 + 12345))
            .map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[i % 3])
            .collect();
        round_trip(&big);
        round_trip(&big[..CHUNK * CHUNKS_PER_ROUND]);
    }

    #[test]
    fn output_does_not_depend_on_write_sizes_or_threads() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut a = ParallelGzEncoder::new(Vec::new(), 6, 2).unwrap();
        a.write_all(&data).unwrap();
        let mut b = ParallelGzEncoder::new(Vec::new(), 6, 1).unwrap();
        for piece in data.chunks(777) {
            b.write_all(piece).unwrap();
        }
        assert_eq!(a.finish().unwrap(), b.finish().unwrap());
    }
}
