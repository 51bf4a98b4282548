//! Blob ingest and reads.
//!
//! A blob is written once, through a [`BlobWriter`]: bytes stream into a file
//! under `tmp/` while being hashed, then the file is fsynced, checked against
//! the digest and size the caller expected (if any), and renamed to
//! `blobs/sha256/<hex>`. So every file under `blobs/` is complete and its name
//! is its content's digest. The layer pipeline uses a `BlobWriter` as the sink
//! of its compressor: the compressed stream is hashed on its way to disk, in the
//! same pass, and never read back.

use crate::error::{Result, StoreError};
use crate::file_pipe::PipedFile;
use crate::fsutil::sync_dir;
use crate::Store;
use cairn_layer::digest::{Digest, HashingWriter};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// A blob whose content came out as (`digest`, `size`) must match what the
/// caller expected of it, if anything.
fn check_expected(expected: Option<(Digest, u64)>, digest: Digest, size: u64) -> Result<()> {
    match expected {
        Some((want, want_size)) if want != digest || want_size != size => {
            Err(StoreError::DigestMismatch {
                expected: want,
                expected_size: want_size,
                actual: digest,
                actual_size: size,
            })
        }
        _ => Ok(()),
    }
}

/// A blob in the store: its digest and size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobInfo {
    pub digest: Digest,
    pub size: u64,
}

/// Streams one blob into the store. Write to it, then [`BlobWriter::commit`].
/// Dropped without commit, it removes its temp file.
pub struct BlobWriter {
    /// `None` only once commit has taken it.
    pipe: Option<PipedFile>,
    /// Hashes and counts every byte handed to `pipe`.
    hasher: HashingWriter<io::Sink>,
    tmp_path: PathBuf,
    blobs_dir: PathBuf,
    committed: bool,
}

impl BlobWriter {
    /// `direct`: write full buffers around the page cache (see `file_pipe`).
    pub(crate) fn new(store: &Store, direct: bool) -> Result<Self> {
        let tmp_dir = store.layout().tmp();
        let (file, tmp_path) = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(&tmp_dir)
            .map_err(StoreError::io("create temp blob in", &tmp_dir))?
            .keep()
            .map_err(|e| StoreError::io("keep temp blob in", &tmp_dir)(e.error))?;
        Ok(BlobWriter {
            pipe: Some(
                PipedFile::with_direct(file, direct)
                    .map_err(StoreError::io("start the writer of", &tmp_path))?,
            ),
            hasher: HashingWriter::new(io::sink()),
            tmp_path,
            blobs_dir: store.layout().blobs(),
            committed: false,
        })
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.hasher.written()
    }

    /// The temp file being written (for error messages).
    pub fn tmp_path(&self) -> &Path {
        &self.tmp_path
    }

    /// Finish the blob: fsync, verify `expected` (digest, size) when given,
    /// and move it into `blobs/`. If the blob is already there (same digest,
    /// so same content) the temp file is simply dropped.
    pub fn commit(mut self, expected: Option<(Digest, u64)>) -> Result<BlobInfo> {
        self.committed = true; // from here on, this function cleans up itself
        let result = self.finish(expected);
        if result.is_err() {
            let _ = fs::remove_file(&self.tmp_path);
        }
        result
    }

    fn finish(&mut self, expected: Option<(Digest, u64)>) -> Result<BlobInfo> {
        let tmp_path = self.tmp_path.clone();
        let Some(pipe) = self.pipe.take() else {
            return Err(StoreError::io("write", &tmp_path)(io::Error::other(
                "blob writer already committed",
            )));
        };
        let hasher = std::mem::replace(&mut self.hasher, HashingWriter::new(io::sink()));
        let (_, digest, size) = hasher.finish();
        let file = pipe.finish().map_err(StoreError::io("write", &tmp_path))?;
        check_expected(expected, digest, size)?;
        let dest = self.blobs_dir.join(digest.hex());
        if dest.exists() {
            // Same name, same content: someone else (or an earlier run) won.
            drop(file);
            let _ = fs::remove_file(&tmp_path);
            return Ok(BlobInfo { digest, size });
        }
        file.sync_all()
            .map_err(StoreError::io("fsync", &tmp_path))?;
        drop(file);
        // rename() replaces atomically; if a concurrent writer got there first
        // the file it replaces has the same bytes.
        fs::rename(&tmp_path, &dest).map_err(StoreError::io("rename into place", &dest))?;
        sync_dir(&self.blobs_dir)?;
        Ok(BlobInfo { digest, size })
    }
}

impl BlobWriter {
    fn live(&mut self) -> io::Result<(&mut PipedFile, &mut HashingWriter<io::Sink>)> {
        match self.pipe.as_mut() {
            Some(pipe) => Ok((pipe, &mut self.hasher)),
            None => Err(io::Error::other("blob writer already committed")),
        }
    }

    /// Copy all of `reader` into the blob, reading straight into the
    /// writer's buffers (no intermediate copy). Returns the bytes copied.
    pub fn copy_from<R: Read + ?Sized>(&mut self, reader: &mut R) -> io::Result<u64> {
        let (pipe, hasher) = self.live()?;
        let mut total = 0u64;
        loop {
            match pipe.read_from(reader, |data| hasher.update(data)) {
                Ok(0) => return Ok(total),
                Ok(n) => total += n as u64,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let (pipe, hasher) = self.live()?;
        let n = pipe.write(buf)?;
        hasher.write_all(&buf[..n])?;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.live()?.0.flush()
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.tmp_path);
        }
    }
}

impl Store {
    /// Start writing a blob. Its bytes bypass the page cache: the fastest
    /// durable write here, for blobs nobody reads right away (imports,
    /// committed layers whose upper dir becomes the extracted dir).
    pub fn blob_writer(&self) -> Result<BlobWriter> {
        BlobWriter::new(self, true)
    }

    /// Start writing a blob that is about to be read back (a pulled layer
    /// the puller extracts next): written through the page cache, so that
    /// read costs memory copies, not a disk read (4 s/GiB on this VM's disk
    /// against 0.2 s from cache).
    pub fn blob_writer_cached(&self) -> Result<BlobWriter> {
        BlobWriter::new(self, false)
    }

    /// Stream `reader` into the store as one blob. With `expected`, a blob
    /// already present costs one stat and `reader` is not read at all.
    pub fn ingest_reader<R: Read>(
        &self,
        mut reader: R,
        expected: Option<(Digest, u64)>,
    ) -> Result<BlobInfo> {
        if let Some((digest, size)) = expected {
            if self.has_blob(&digest) {
                return Ok(BlobInfo { digest, size });
            }
        }
        let mut w = self.blob_writer()?;
        let tmp = w.tmp_path.clone();
        w.copy_from(&mut reader)
            .map_err(StoreError::io("stream blob into", tmp))?;
        w.commit(expected)
    }

    /// Store a small blob held in memory (manifests, configs).
    pub fn ingest_bytes(&self, bytes: &[u8], expected: Option<(Digest, u64)>) -> Result<BlobInfo> {
        let digest = Digest::of(bytes);
        let size = bytes.len() as u64;
        check_expected(expected, digest, size)?;
        if self.has_blob(&digest) {
            return Ok(BlobInfo { digest, size });
        }
        let mut w = self.blob_writer()?;
        w.write_all(bytes)
            .map_err(StoreError::io("write", w.tmp_path.clone()))?;
        w.commit(Some((digest, size)))
    }

    /// The path of a blob (whether or not it exists).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.layout().blobs().join(digest.hex())
    }

    /// One stat: is the blob in the store? (Only complete, verified blobs are named.)
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// The size of a blob, or `BlobMissing`.
    pub fn blob_size(&self, digest: &Digest) -> Result<u64> {
        match fs::metadata(self.blob_path(digest)) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StoreError::BlobMissing(*digest)),
            Err(e) => Err(StoreError::io("stat", self.blob_path(digest))(e)),
        }
    }

    /// Open a blob for reading (stream it, or mmap the file).
    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let path = self.blob_path(digest);
        File::open(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                StoreError::BlobMissing(*digest)
            } else {
                StoreError::io("open", path)(e)
            }
        })
    }

    /// Read a small blob (a manifest, a config) into memory, refusing
    /// anything over `MAX_JSON_BLOB` so a bad name cannot exhaust memory.
    pub fn read_blob_bytes(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.blob_path(digest);
        let file = self.open_blob(digest)?;
        let len = file
            .metadata()
            .map_err(StoreError::io("stat", &path))?
            .len();
        if len > MAX_JSON_BLOB {
            return Err(StoreError::BlobTooLarge {
                digest: *digest,
                size: len,
                limit: MAX_JSON_BLOB,
                what: "a manifest or config",
            });
        }
        let mut buf = Vec::with_capacity(len as usize);
        (&file)
            .read_to_end(&mut buf)
            .map_err(StoreError::io("read", &path))?;
        Ok(buf)
    }

    /// Re-hash a blob and compare with its name (fsck).
    pub fn verify_blob(&self, digest: &Digest) -> Result<BlobInfo> {
        let path = self.blob_path(digest);
        let mut file = self.open_blob(digest)?;
        let mut hw = HashingWriter::new(io::sink());
        io::copy(&mut file, &mut hw).map_err(StoreError::io("read", &path))?;
        let (_, actual, size) = hw.finish();
        if actual != *digest {
            return Err(StoreError::DigestMismatch {
                expected: *digest,
                expected_size: size,
                actual,
                actual_size: size,
            });
        }
        Ok(BlobInfo {
            digest: actual,
            size,
        })
    }
}

/// Copy with a 1 MiB buffer: fewer syscalls than io::copy's 8 KiB, and the
/// hasher gets whole buffers. Returns the bytes copied.
pub fn copy_stream<R: Read + ?Sized, W: Write + ?Sized>(
    reader: &mut R,
    writer: &mut W,
) -> io::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        writer.write_all(&buf[..n])?;
        total += n as u64;
    }
}

/// Largest manifest or config read into memory (the registry limit is 4 MiB).
pub const MAX_JSON_BLOB: u64 = 16 << 20;
