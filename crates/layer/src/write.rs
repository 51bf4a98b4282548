//! The one-pass commit pipeline:
//! entries -> tar -> sha256 (diffID) -> compressor -> sha256 (digest) -> sink.

use crate::capture::{self, KnownEntries};
use crate::compression::Compression;
use crate::digest::{Digest, HashingWriter};
use crate::error::LayerError;
use crate::pgzip::ParallelGzEncoder;
use crate::pzstd::ZstdEncoder;
use crate::tar_writer::write_tar;
use crate::{DiffSource, LayerOptions, OverlayFlavour};
use std::io::{self, BufWriter, Write};
use std::path::Path;

/// Bytes handed to the compressor per call.
const COMPRESSOR_INPUT: usize = 1 << 20;

/// What `write_layer` produced: everything a manifest and config need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    /// sha256 of the uncompressed tar (goes into the config's rootfs.diff_ids).
    pub diff_id: Digest,
    /// Bytes of the uncompressed tar.
    pub uncompressed_size: u64,
    /// sha256 of the blob as written to the sink (the manifest's layer digest).
    pub digest: Digest,
    /// Bytes written to the sink.
    pub size: u64,
    pub compression: Compression,
    pub media_type: &'static str,
    /// Tar entries written (whiteouts and markers included).
    pub entries: u64,
}

enum Compressor<W: Write> {
    Zstd(ZstdEncoder<W>),
    Gzip(ParallelGzEncoder<W>),
    None(W),
}

impl<W: Write> Compressor<W> {
    fn new(opts: &LayerOptions, sink: W) -> io::Result<Self> {
        let level = opts.level.unwrap_or(opts.compression.default_level());
        let threads = opts.threads.max(1);
        Ok(match opts.compression {
            // Raw frames for chunks that do not compress; libzstd's
            // multi-threaded stream, as before, for the rest (pzstd.rs).
            Compression::Zstd => Compressor::Zstd(ZstdEncoder::new(sink, level, threads)?),
            Compression::Gzip => Compressor::Gzip(ParallelGzEncoder::new(
                sink,
                level.clamp(0, 9) as u32,
                threads,
            )?),
            Compression::None => Compressor::None(sink),
        })
    }

    fn finish(self) -> io::Result<W> {
        match self {
            Compressor::Zstd(e) => e.finish(),
            Compressor::Gzip(e) => e.finish(),
            Compressor::None(w) => Ok(w),
        }
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::Zstd(e) => e.write(buf),
            Compressor::Gzip(e) => e.write(buf),
            Compressor::None(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::Zstd(e) => e.flush(),
            Compressor::Gzip(e) => e.flush(),
            Compressor::None(w) => w.flush(),
        }
    }
}

/// Capture `source` and write it as one layer blob to `sink`, computing the
/// diffID and the blob digest on the way (one pass, no temporary file).
/// The sink is flushed but not synced: the caller owns durability.
pub fn write_layer<W: Write>(
    source: DiffSource<'_>,
    opts: &LayerOptions,
    sink: W,
) -> Result<LayerInfo, LayerError> {
    let (written, digest) = write_stream(source, opts, sink, true)?;
    // Hashed above unless uncompressed, where the blob is the tar itself.
    let digest = digest.unwrap_or(written.diff_id);
    Ok(written.with_digest(digest))
}

/// What [`write_layer_unhashed`] produced: a [`LayerInfo`] without the
/// blob digest, which the sink computes itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenLayer {
    pub diff_id: Digest,
    pub uncompressed_size: u64,
    /// Bytes written to the sink.
    pub size: u64,
    pub compression: Compression,
    pub media_type: &'static str,
    pub entries: u64,
}

impl WrittenLayer {
    /// The full report, with the blob digest the sink computed.
    pub fn with_digest(self, digest: Digest) -> LayerInfo {
        LayerInfo {
            diff_id: self.diff_id,
            uncompressed_size: self.uncompressed_size,
            digest,
            size: self.size,
            compression: self.compression,
            media_type: self.media_type,
            entries: self.entries,
        }
    }
}

/// [`write_layer`] for a sink that hashes what it stores (a store blob
/// writer, on the far side of a pipe): the compressed stream is not hashed
/// here as well, which saves a sha256 pass over every committed blob.
pub fn write_layer_unhashed<W: Write>(
    source: DiffSource<'_>,
    opts: &LayerOptions,
    sink: W,
) -> Result<WrittenLayer, LayerError> {
    write_stream(source, opts, sink, false).map(|(written, _)| written)
}

/// [`write_layer_unhashed`] of the overlay upper dir `upper` whose writer
/// knows part of it (`known`): below the known dirs nothing is stat'ed or
/// read again (kept bytes go straight into the tar). The layer is the
/// same, byte for byte, as the walk of the whole dir would give.
pub fn write_layer_known_unhashed<W: Write>(
    upper: &Path,
    flavour: OverlayFlavour,
    known: &KnownEntries,
    opts: &LayerOptions,
    sink: W,
) -> Result<WrittenLayer, LayerError> {
    let walk = crate::timing::span("layer.capture_walk");
    let entries = capture::collect_known(upper, flavour, known, opts)?;
    drop(walk);
    write_entries(&entries, opts, sink, false).map(|(written, _)| written)
}

/// The pipeline; the blob is hashed only when `hash_blob` and compressed
/// (uncompressed, its digest is the diffID).
fn write_stream<W: Write>(
    source: DiffSource<'_>,
    opts: &LayerOptions,
    sink: W,
    hash_blob: bool,
) -> Result<(WrittenLayer, Option<Digest>), LayerError> {
    let walk = crate::timing::span("layer.capture_walk");
    let entries = capture::collect(&source, opts)?;
    drop(walk);
    write_entries(&entries, opts, sink, hash_blob)
}

/// Tar, hash and compress sorted entries into `sink`.
fn write_entries<W: Write>(
    entries: &[capture::Entry],
    opts: &LayerOptions,
    sink: W,
    hash_blob: bool,
) -> Result<(WrittenLayer, Option<Digest>), LayerError> {
    let stream = crate::timing::span("layer.tar_hash_compress");
    let hash_blob = hash_blob && opts.compression != Compression::None;
    let blob = BlobMeter::new(sink, hash_blob);
    let compressor = Compressor::new(opts, blob).map_err(LayerError::Sink)?;
    // The tar writer makes many small writes (512-byte headers, small files);
    // the compressors want big pieces. The zstd writer gathers its own 1 MiB
    // chunks (a buffer in front of it would be a second copy of every byte).
    let capacity = match opts.compression {
        Compression::Zstd => 0,
        _ => COMPRESSOR_INPUT,
    };
    let buffered = BufWriter::with_capacity(capacity, compressor);
    // The diffID is hashed here, inline: the blob's hash runs in the
    // caller's process and the compressor has its workers, so the cores are
    // busy; a hashing thread of its own cost more (a copy per byte and the
    // switches) than it saved (docs/performance.md, "Fourth pass").
    let tar = HashingWriter::new(buffered);
    let tar = write_tar(entries, opts.timestamp, tar)?;
    let (buffered, diff_id, uncompressed_size) = tar.finish();
    drop(stream);
    let _finish = crate::timing::span("layer.compressor_finish");
    let compressor = buffered
        .into_inner()
        .map_err(|e| LayerError::Sink(e.into_error()))?;
    let blob = compressor.finish().map_err(LayerError::Sink)?;
    let (mut sink, digest, size) = blob.finish();
    sink.flush().map_err(LayerError::Sink)?;
    let written = WrittenLayer {
        diff_id,
        uncompressed_size,
        size,
        compression: opts.compression,
        media_type: opts.compression.media_type(),
        entries: entries.len() as u64,
    };
    Ok((written, digest))
}

/// The blob end of the pipeline: hashes and counts, or only counts.
enum BlobMeter<W> {
    Hashed(HashingWriter<W>),
    Counted(W, u64),
}

impl<W: Write> BlobMeter<W> {
    fn new(sink: W, hash: bool) -> Self {
        match hash {
            true => BlobMeter::Hashed(HashingWriter::new(sink)),
            false => BlobMeter::Counted(sink, 0),
        }
    }

    fn finish(self) -> (W, Option<Digest>, u64) {
        match self {
            BlobMeter::Hashed(h) => {
                let (sink, digest, size) = h.finish();
                (sink, Some(digest), size)
            }
            BlobMeter::Counted(sink, size) => (sink, None, size),
        }
    }
}

impl<W: Write> Write for BlobMeter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            BlobMeter::Hashed(h) => h.write(buf),
            BlobMeter::Counted(sink, size) => {
                let n = sink.write(buf)?;
                *size += n as u64;
                Ok(n)
            }
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            BlobMeter::Hashed(h) => h.flush(),
            BlobMeter::Counted(sink, _) => sink.flush(),
        }
    }
}
