//! zstd for layer blobs that does not pay the match finder on data that
//! will not shrink.
//!
//! The input is cut into fixed 1 MiB chunks (at fixed offsets of the
//! stream, whatever the write sizes). Each whole chunk gets a cheap trial
//! ([`Trial::looks_incompressible`]: a few samples compressed at level 1).
//!
//! * A chunk that compresses goes through libzstd's multi-threaded
//!   streaming encoder (`zstd_safe::CCtx`, `ZSTD_compressStream2`) at the
//!   configured level, with the same fixed parameters as before this module
//!   existed (workers, 4 MiB jobs; no checksum, no content size). A run of
//!   such chunks is one zstd frame, exactly as the whole stream was before:
//!   a layer that compresses throughout, or is under 1 MiB, keeps its bytes
//!   and so its digest, and its ratio.
//! * A chunk that does not compress ends the open frame (if any) and is
//!   written as a frame of its own made of Raw blocks (RFC 8878: magic,
//!   a frame header with the content size, blocks of at most 128 KiB): a
//!   memory copy instead of 1-2 ms of CPU per MiB in the match finder.
//!
//! A concatenation of frames is one valid zstd stream (RFC 8878 section 3),
//! read as such by `zstd -d`, the Go decoder of containerd/skopeo, and our
//! extractor. The choice looks only at the chunk's bytes and libzstd's output
//! does not depend on the worker count, so the blob is a function of the
//! input, the level and the libzstd version, never of the thread count.

use std::io::{self, Write};
use zstd::zstd_safe::zstd_sys::ZSTD_EndDirective::ZSTD_e_continue;
use zstd::zstd_safe::{self, CCtx, CParameter, InBuffer, OutBuffer};

/// Bytes per chunk; the unit of the raw-or-compressed choice.
pub(crate) const CHUNK: usize = 1 << 20;
/// zstd multi-threaded job size (fixed, so output is the same everywhere;
/// smaller than libzstd's default 4x window, to bound memory).
const JOB_SIZE: u32 = 4 << 20;
/// Largest block (RFC 8878 `Block_Maximum_Size`).
const MAX_BLOCK: usize = 128 * 1024;
/// The trial: this many samples of `SAMPLE` bytes, spread over the chunk.
const SAMPLES: usize = 8;
const SAMPLE: usize = 4096;
/// A chunk whose samples do not shrink below this fraction (in 1/1000) at
/// level 1 is written raw. On such data level 3 gains at most a few percent
/// over level 1, and a raw frame costs 33 bytes per MiB.
const RAW_ABOVE_PERMILLE: usize = 970;

const MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// Frame header descriptor of a raw frame: Frame_Content_Size_flag 2 (a
/// 4-byte content size), Single_Segment_flag 1 (no window descriptor: the
/// window is the content size), no checksum, no dictionary.
const RAW_FRAME_DESCRIPTOR: u8 = 0b1010_0000;

/// A zstd encoder writing raw frames for chunks that do not compress.
pub struct ZstdEncoder<W: Write> {
    inner: W,
    cctx: CCtx<'static>,
    /// Compressed output before it goes to `inner`.
    out: Vec<u8>,
    /// The chunk being filled (empty at a chunk boundary).
    pending: Vec<u8>,
    /// A compressed frame is open (has been fed and not ended).
    frame_open: bool,
    /// Some chunk has been handled (compressed or raw).
    started: bool,
    trial: Trial,
}

impl<W: Write> ZstdEncoder<W> {
    /// `threads` libzstd workers (at least 1: the output is the same for any
    /// count from 1 up, but not for 0, libzstd's single-threaded mode).
    pub fn new(inner: W, level: i32, threads: usize) -> io::Result<Self> {
        let mut cctx = CCtx::create();
        let workers = u32::try_from(threads.max(1)).unwrap_or(u32::MAX);
        for p in [
            CParameter::CompressionLevel(level),
            CParameter::NbWorkers(workers),
            CParameter::JobSize(JOB_SIZE),
        ] {
            cctx.set_parameter(p).map_err(zstd_error)?;
        }
        Ok(ZstdEncoder {
            inner,
            cctx,
            out: Vec::with_capacity(CCtx::out_size()),
            pending: Vec::with_capacity(CHUNK),
            frame_open: false,
            started: false,
            trial: Trial::new()?,
        })
    }

    /// One whole chunk: raw frame or into the compressed frame.
    fn chunk(&mut self, data: &[u8]) -> io::Result<()> {
        self.started = true;
        if self.trial.looks_incompressible(data) {
            self.end_frame()?;
            return write_raw_frame(&mut self.inner, data);
        }
        self.feed(data)
    }

    /// Feed `data` into the open compressed frame (opening one if needed).
    fn feed(&mut self, data: &[u8]) -> io::Result<()> {
        self.frame_open = true;
        let mut input = InBuffer::around(data);
        while input.pos() < data.len() {
            self.out.clear();
            let mut output = OutBuffer::around(&mut self.out);
            self.cctx
                .compress_stream2(&mut output, &mut input, ZSTD_e_continue)
                .map_err(zstd_error)?;
            self.inner.write_all(&self.out)?;
        }
        Ok(())
    }

    /// End the open compressed frame, if any, and write all of it.
    fn end_frame(&mut self) -> io::Result<()> {
        if !self.frame_open {
            return Ok(());
        }
        loop {
            self.out.clear();
            let mut output = OutBuffer::around(&mut self.out);
            let left = self.cctx.end_stream(&mut output).map_err(zstd_error)?;
            self.inner.write_all(&self.out)?;
            if left == 0 {
                break;
            }
        }
        self.frame_open = false;
        Ok(())
    }

    /// Write the last (short) chunk, always compressed, and end the stream;
    /// returns the inner writer. An empty stream is one empty frame.
    pub fn finish(mut self) -> io::Result<W> {
        let tail = std::mem::take(&mut self.pending);
        if !tail.is_empty() || !self.started {
            self.feed(&tail)?;
        }
        self.end_frame()?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for ZstdEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.pending.is_empty() && buf.len() >= CHUNK {
            // A whole chunk at a boundary: no copy into `pending`.
            self.chunk(&buf[..CHUNK])?;
            return Ok(CHUNK);
        }
        let n = buf.len().min(CHUNK - self.pending.len());
        self.pending.extend_from_slice(&buf[..n]);
        if self.pending.len() == CHUNK {
            let full = std::mem::take(&mut self.pending);
            let done = self.chunk(&full);
            self.pending = full;
            self.pending.clear();
            done?;
        }
        Ok(n)
    }

    /// Only flushes the inner writer: a zstd flush, or deciding a partial
    /// chunk early, would make the output depend on when callers flush.
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// `data` (at most 4 GiB) as one zstd frame of Raw blocks.
fn write_raw_frame<W: Write>(w: &mut W, data: &[u8]) -> io::Result<()> {
    let size = u32::try_from(data.len()).map_err(io::Error::other)?;
    let mut header = [0u8; 9];
    header[..4].copy_from_slice(&MAGIC);
    header[4] = RAW_FRAME_DESCRIPTOR;
    header[5..].copy_from_slice(&size.to_le_bytes());
    w.write_all(&header)?;
    let mut blocks = data.chunks(MAX_BLOCK).peekable();
    if blocks.peek().is_none() {
        return w.write_all(&raw_block_header(0, true));
    }
    while let Some(block) = blocks.next() {
        w.write_all(&raw_block_header(block.len(), blocks.peek().is_none()))?;
        w.write_all(block)?;
    }
    Ok(())
}

/// A block header (RFC 8878 3.1.1.2): Last_Block in bit 0, Block_Type 0
/// (Raw) in bits 1-2, Block_Size in bits 3-23, little-endian.
fn raw_block_header(len: usize, last: bool) -> [u8; 3] {
    let v = ((len as u32) << 3) | u32::from(last);
    let b = v.to_le_bytes();
    [b[0], b[1], b[2]]
}

/// The cheap trial and its buffers.
struct Trial {
    cctx: CCtx<'static>,
    sample: Vec<u8>,
    out: Vec<u8>,
}

impl Trial {
    fn new() -> io::Result<Self> {
        let mut cctx = CCtx::create();
        cctx.set_parameter(CParameter::CompressionLevel(1))
            .map_err(zstd_error)?;
        Ok(Trial {
            cctx,
            sample: Vec::with_capacity(SAMPLES * SAMPLE),
            out: Vec::with_capacity(zstd_safe::compress_bound(SAMPLES * SAMPLE)),
        })
    }

    /// `SAMPLES` samples of `SAMPLE` bytes, evenly spread over the chunk,
    /// compressed together at level 1 (one frame, so a sample may match an
    /// earlier one); incompressible if that does not get below
    /// `RAW_ABOVE_PERMILLE` of their size. Costs ~3 % of the chunk's bytes
    /// at level 1: tens of microseconds per MiB.
    fn looks_incompressible(&mut self, data: &[u8]) -> bool {
        if data.len() < CHUNK {
            return false;
        }
        let stride = data.len() / SAMPLES;
        self.sample.clear();
        for i in 0..SAMPLES {
            self.sample
                .extend_from_slice(&data[i * stride..i * stride + SAMPLE]);
        }
        self.out.clear();
        // `out` has room for the bound, so this fails only on a libzstd
        // error; then the chunk is simply compressed.
        match self.cctx.compress2(&mut self.out, &self.sample) {
            Ok(n) => n * 1000 >= self.sample.len() * RAW_ABOVE_PERMILLE,
            Err(_) => false,
        }
    }
}

fn zstd_error(code: usize) -> io::Error {
    io::Error::other(format!("zstd: {}", zstd_safe::get_error_name(code)))
}

#[cfg(test)]
mod tests;
