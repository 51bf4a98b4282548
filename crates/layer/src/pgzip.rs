//! Parallel gzip in the manner of pigz: the input is cut into fixed-size
//! chunks, each compressed independently as raw deflate ending in a sync flush
//! (so the pieces concatenate into one valid deflate stream), in parallel on a
//! small thread pool; CRC-32s are combined. The output is one standard gzip
//! member and depends only on the input, the level and the chunk size — never
//! on thread timing or the thread count. (flate2 has no parallel mode; gzp is
//! unmaintained.)
//!
//! Incompressible chunks do not pay deflate: a cheap trial (level 1 on a few
//! small samples of the chunk, see [`looks_incompressible`]) sends a chunk
//! that would not shrink out as stored deflate blocks, a memory copy. The
//! trial looks only at the chunk's bytes, so the choice, and the output, is
//! as deterministic as the rest.
//!
//! Rounds are pipelined: while the pool compresses one round, the caller
//! fills the next, so reading and hashing the tar overlap compression.

use flate2::{Compress, FlushCompress, Status};
use rayon::prelude::*;
use std::io::{self, Write};
use std::sync::mpsc::{channel, Receiver};

/// Bytes per independently compressed chunk (pigz uses 128 KiB).
const CHUNK: usize = 256 * 1024;
/// Chunks gathered before a parallel round: bounds memory to about
/// `4 * CHUNKS_PER_ROUND * CHUNK` (the round being filled, the round being
/// compressed, and its output).
const CHUNKS_PER_ROUND: usize = 8;
const ROUND: usize = CHUNK * CHUNKS_PER_ROUND;
/// The trial: this many samples of `SAMPLE` bytes, spread over the chunk.
const SAMPLES: usize = 4;
const SAMPLE: usize = 4096;
/// A chunk whose samples do not shrink below this fraction (in 1/1000) at
/// level 1 is stored. Level 6 gains at most a few percent over level 1 on
/// such data, and a stored block costs 5 bytes per 64 KiB.
const STORE_ABOVE_PERMILLE: usize = 970;
/// Largest stored deflate block (LEN is 16 bits).
const MAX_STORED: usize = 65_535;

/// A fixed header: no name, mtime 0, OS "unix", so output is reproducible.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];

type ChunkResult = io::Result<(Vec<u8>, crc32fast::Hasher)>;
/// A compressed round: the chunks' outputs, and the input buffer for reuse.
type RoundResult = (Vec<ChunkResult>, Vec<u8>);

pub struct ParallelGzEncoder<W: Write> {
    inner: W,
    level: u32,
    pool: rayon::ThreadPool,
    pending: Vec<u8>,
    /// The round the pool is compressing, if any.
    in_flight: Option<Receiver<RoundResult>>,
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
            level: level.min(9),
            pool,
            pending: Vec::with_capacity(ROUND),
            in_flight: None,
            crc: crc32fast::Hasher::new(),
            total: 0,
            wrote_header: false,
        })
    }

    /// Wait for the round in flight, if any, and write it in order.
    /// Returns its input buffer for reuse.
    fn drain(&mut self) -> io::Result<Option<Vec<u8>>> {
        let Some(rx) = self.in_flight.take() else {
            return Ok(None);
        };
        let (results, buffer) = rx
            .recv()
            .map_err(|_| io::Error::other("gzip worker stopped"))?;
        if !self.wrote_header {
            self.inner.write_all(&HEADER)?;
            self.wrote_header = true;
        }
        for r in results {
            let (out, crc) = r?;
            self.inner.write_all(&out)?;
            self.crc.combine(&crc);
        }
        Ok(Some(buffer))
    }

    /// Hand the pending chunks to the pool (after writing the previous
    /// round). `last` marks the final round: its last chunk ends the stream.
    fn start_round(&mut self, last: bool) -> io::Result<()> {
        let recycled = self.drain()?;
        let mut next = recycled.unwrap_or_else(|| Vec::with_capacity(ROUND));
        next.clear();
        let data = std::mem::replace(&mut self.pending, next);
        let level = self.level;
        let (tx, rx) = channel();
        self.pool.spawn(move || {
            let results = compress_round(&data, level, last);
            let _ = tx.send((results, data));
        });
        self.in_flight = Some(rx);
        Ok(())
    }

    /// Write the final block and the gzip trailer; returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.start_round(true)?;
        self.drain()?;
        let crc = self.crc.clone().finalize();
        self.inner.write_all(&crc.to_le_bytes())?;
        self.inner.write_all(&(self.total as u32).to_le_bytes())?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

/// Compress one round's chunks in parallel (on the current pool), in order.
fn compress_round(data: &[u8], level: u32, last: bool) -> Vec<ChunkResult> {
    let chunks: Vec<&[u8]> = if data.is_empty() {
        vec![&[]]
    } else {
        data.chunks(CHUNK).collect()
    };
    let n = chunks.len();
    chunks
        .par_iter()
        .enumerate()
        .map(|(i, c)| compress_chunk(c, level, last && i + 1 == n))
        .collect()
}

/// One chunk as deflate blocks: stored when the trial says it will not
/// shrink (or deflate made it bigger), compressed at `level` otherwise.
fn compress_chunk(data: &[u8], level: u32, last: bool) -> ChunkResult {
    let mut crc = crc32fast::Hasher::new();
    crc.update(data);
    if level == 0 || looks_incompressible(data) {
        return Ok((stored_blocks(data, last), crc));
    }
    let out = deflate(data, level, last)?;
    if out.len() > stored_len(data.len()) {
        return Ok((stored_blocks(data, last), crc));
    }
    Ok((out, crc))
}

/// The trial: `SAMPLES` samples of `SAMPLE` bytes, evenly spread, deflated
/// at level 1 together; incompressible if they do not get below
/// `STORE_ABOVE_PERMILLE`. Chunks under `2 * SAMPLES * SAMPLE` bytes (only
/// the last chunk of a stream can be short) are always deflated: cheap, and
/// their bytes stay what they were before stored blocks.
pub(crate) fn looks_incompressible(data: &[u8]) -> bool {
    if data.len() < SAMPLE * SAMPLES * 2 {
        return false;
    }
    let stride = data.len() / SAMPLES;
    let mut c = Compress::new(flate2::Compression::new(1), false);
    let mut out = Vec::with_capacity(SAMPLE * SAMPLES + 256);
    for i in 0..SAMPLES {
        let sample = &data[i * stride..i * stride + SAMPLE];
        let flush = if i + 1 == SAMPLES {
            FlushCompress::Finish
        } else {
            FlushCompress::None
        };
        if c.compress_vec(sample, &mut out, flush).is_err() {
            return false;
        }
    }
    // `out` had room for everything, so the samples were all consumed.
    out.len() * 1000 >= SAMPLE * SAMPLES * STORE_ABOVE_PERMILLE
}

/// Size of `len` bytes as stored blocks.
fn stored_len(len: usize) -> usize {
    len + 5 * len.div_ceil(MAX_STORED).max(1)
}

/// `data` as stored deflate blocks (RFC 1951 3.2.4). The stream is
/// byte-aligned here: it starts a member or follows a sync flush or another
/// stored block. Only the final chunk sets BFINAL, on its last block.
fn stored_blocks(data: &[u8], last: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(stored_len(data.len()));
    let mut pieces: Vec<&[u8]> = data.chunks(MAX_STORED).collect();
    if pieces.is_empty() {
        pieces.push(&[]);
    }
    let n = pieces.len();
    for (i, piece) in pieces.into_iter().enumerate() {
        let len = piece.len() as u16;
        out.push(u8::from(last && i + 1 == n)); // BFINAL, BTYPE 00
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(piece);
    }
    out
}

/// Raw deflate of `data` at `level`, ending in a sync flush (or the final
/// block when `last`).
fn deflate(data: &[u8], level: u32, last: bool) -> io::Result<Vec<u8>> {
    let mut c = Compress::new(flate2::Compression::new(level), false);
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
            return Ok(out);
        }
        out.reserve(out.capacity().max(4096));
    }
}

impl<W: Write> Write for ParallelGzEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = ROUND - self.pending.len();
        let n = buf.len().min(room);
        self.pending.extend_from_slice(&buf[..n]);
        self.total += n as u64;
        if self.pending.len() == ROUND {
            self.start_round(false)?;
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
    use crate::testdata::{random, text};
    use std::io::Read;

    fn gzip(data: &[u8], level: u32, threads: usize) -> Vec<u8> {
        let mut enc = ParallelGzEncoder::new(Vec::new(), level, threads).unwrap();
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn gunzip(gz: &[u8]) -> Vec<u8> {
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(gz)
            .read_to_end(&mut back)
            .unwrap();
        back
    }

    fn round_trip(data: &[u8]) {
        assert_eq!(gunzip(&gzip(data, 6, 2)), data);
    }

    #[test]
    fn empty_and_small_and_multi_round() {
        round_trip(b"");
        round_trip(b"hello");
        let big = text(ROUND * 2 + 12345);
        round_trip(&big);
        round_trip(&big[..ROUND]);
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

    #[test]
    fn incompressible_chunks_are_stored_and_round_trip() {
        for len in [0, 1, 5000, CHUNK, CHUNK + 1, ROUND + MAX_STORED * 3 + 7] {
            let data = random(len, 0x9e37_79b9_7f4a_7c15 ^ len as u64);
            let gz = gzip(&data, 6, 2);
            assert_eq!(gunzip(&gz), data, "{len} bytes");
            // Header, stored blocks (5 bytes each per 64 KiB, and the
            // deflate of a short or empty last chunk), trailer: no growth.
            let blocks = len.div_ceil(MAX_STORED).max(1) + len.div_ceil(CHUNK) + 1;
            assert!(
                gz.len() <= 18 + len + 5 * blocks,
                "{len} bytes -> {}",
                gz.len()
            );
        }
    }

    #[test]
    fn mixed_stored_and_deflated_chunks_decode_and_match_any_thread_count() {
        // Alternate random and text chunks, with a tail of each kind.
        let mut data = Vec::new();
        for i in 0..7u64 {
            data.extend(random(CHUNK, i + 1));
            data.extend(text(CHUNK));
        }
        data.extend(random(1000, 99));
        let one = gzip(&data, 6, 1);
        for threads in [2, 3, 8] {
            assert_eq!(gzip(&data, 6, threads), one, "{threads} threads");
        }
        assert_eq!(gunzip(&one), data);
        // The text chunks were compressed, the random ones were not grown.
        assert!(one.len() < data.len() * 6 / 10);
    }

    /// What versions before stored blocks wrote: every chunk deflated, and
    /// an empty final chunk after a whole number of rounds.
    fn gzip_all_deflated(data: &[u8], level: u32) -> Vec<u8> {
        let mut pieces: Vec<(&[u8], bool)> = data.chunks(CHUNK).map(|c| (c, false)).collect();
        if data.is_empty() || data.len() % ROUND == 0 {
            pieces.push((&[], true));
        } else if let Some(last) = pieces.last_mut() {
            last.1 = true;
        }
        let mut out = HEADER.to_vec();
        for (c, last) in pieces {
            out.extend(deflate(c, level, last).unwrap());
        }
        let mut crc = crc32fast::Hasher::new();
        crc.update(data);
        out.extend_from_slice(&crc.finalize().to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out
    }

    #[test]
    fn compressible_data_gives_the_same_bytes_as_before_stored_blocks() {
        // Layer digests of ordinary layers must not move: whole rounds
        // (an empty final chunk), partial rounds, tiny inputs.
        for len in [
            0,
            100,
            40_000,
            CHUNK * 3 + 5,
            ROUND,
            2 * ROUND,
            2 * ROUND + 512,
        ] {
            let data = text(len);
            assert!(
                gzip(&data, 6, 2) == gzip_all_deflated(&data, 6),
                "{len} bytes"
            );
        }
    }

    #[test]
    fn compressible_data_keeps_a_level_6_ratio() {
        let data = text(4 * ROUND);
        let ours = gzip(&data, 6, 2).len();
        let mut reference = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        reference.write_all(&data).unwrap();
        let whole = reference.finish().unwrap().len();
        assert!(ours * 100 <= whole * 105, "ours {ours} vs level 6 {whole}");
    }

    #[test]
    fn stored_output_is_read_by_gzip_itself() {
        let Ok(status) = std::process::Command::new("gzip").arg("--version").output() else {
            return; // no gzip binary on this machine
        };
        assert!(status.status.success());
        let mut data = random(ROUND + 4321, 7);
        data.extend(text(ROUND));
        let gz = gzip(&data, 6, 2);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.gz");
        std::fs::write(&path, &gz).unwrap();
        let t = std::process::Command::new("gzip")
            .arg("-t")
            .arg(&path)
            .status()
            .unwrap();
        assert!(t.success(), "gzip -t failed");
        let out = std::process::Command::new("gzip")
            .args(["-dc"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success());
        assert!(out.stdout == data, "gzip -dc gave other bytes");
    }
}
