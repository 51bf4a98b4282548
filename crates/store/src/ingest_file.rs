//! Ingest of a blob that is already a file (an OCI layout being imported, a
//! downloaded archive): no byte passes through a user-space buffer.
//!
//! One thread hashes the source through a read-only memory map; another has
//! the kernel copy it into `tmp/` with `copy_file_range` and starts the
//! writeback as it goes. The two run side by side, so the cost is about
//! max(hash, copy) plus the final fsync, instead of read + hash + write.

use crate::error::{Result, StoreError};
use crate::fsutil::sync_dir;
use crate::{BlobInfo, Digest, Store};
use cairn_layer::digest::HashingWriter;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

/// Bytes per copy_file_range call (and per writeback kick).
const COPY_CHUNK: usize = 8 << 20;
/// Bytes hashed per call, so the map is touched in order.
const HASH_CHUNK: usize = 4 << 20;

impl Store {
    /// Store the file at `source` as a blob, verified against `expected`
    /// when given. A blob already present costs one stat.
    pub fn ingest_file(&self, source: &Path, expected: Option<(Digest, u64)>) -> Result<BlobInfo> {
        if let Some((digest, size)) = expected {
            if self.has_blob(&digest) {
                return Ok(BlobInfo { digest, size });
            }
        }
        let src = File::open(source).map_err(StoreError::io("open", source))?;
        let len = src
            .metadata()
            .map_err(StoreError::io("stat", source))?
            .len();
        if len == 0 {
            return self.ingest_bytes(&[], expected);
        }
        let tmp_dir = self.layout().tmp();
        let (dest, tmp_path) = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(&tmp_dir)
            .map_err(StoreError::io("create temp blob in", &tmp_dir))?
            .keep()
            .map_err(|e| StoreError::io("keep temp blob in", &tmp_dir)(e.error))?;
        let result = (|| {
            // SAFETY: the map is read-only and private. If another process
            // truncated the file under us, reading the map would fault; the
            // sources are the caller's own files (a layout it is importing),
            // and the digest check catches any other change.
            let map = unsafe { memmap2::MmapOptions::new().len(len as usize).map(&src) }
                .map_err(StoreError::io("map", source))?;
            let _ = map.advise(memmap2::Advice::Sequential);
            let (hashed, copied) = std::thread::scope(|s| {
                let copier = s.spawn(|| copy_all(&src, &dest, len));
                let mut h = HashingWriter::new(io::sink());
                for chunk in map.chunks(HASH_CHUNK) {
                    let _ = h.write_all(chunk);
                }
                let (_, digest, size) = h.finish();
                let copied = copier
                    .join()
                    .unwrap_or_else(|_| Err(io::Error::other("copy thread panicked")));
                ((digest, size), copied)
            });
            copied.map_err(StoreError::io("copy into", &tmp_path))?;
            let (digest, size) = hashed;
            if let Some((want, want_size)) = expected {
                if want != digest || want_size != size {
                    return Err(StoreError::DigestMismatch {
                        expected: want,
                        expected_size: want_size,
                        actual: digest,
                        actual_size: size,
                    });
                }
            }
            let named = self.blob_path(&digest);
            if named.exists() {
                let _ = fs::remove_file(&tmp_path);
                return Ok(BlobInfo { digest, size });
            }
            dest.sync_all()
                .map_err(StoreError::io("fsync", &tmp_path))?;
            fs::rename(&tmp_path, &named).map_err(StoreError::io("rename into place", &named))?;
            sync_dir(&self.layout().blobs())?;
            Ok(BlobInfo { digest, size })
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp_path);
        }
        result
    }
}

/// Copy `len` bytes from `src` to `dest` in the kernel, starting writeback
/// of each chunk as it lands. Falls back on read/write where the kernel
/// cannot copy between these files.
fn copy_all(src: &File, dest: &File, len: u64) -> io::Result<()> {
    let (mut off_in, mut off_out): (i64, i64) = (0, 0);
    while (off_in as u64) < len {
        let want = COPY_CHUNK.min((len - off_in as u64) as usize);
        // SAFETY: plain syscall on two open descriptors borrowed for the
        // call; the offsets are our own locals.
        let n = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                &mut off_in,
                dest.as_raw_fd(),
                &mut off_out,
                want,
                0,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EXDEV | libc::ENOSYS | libc::EOPNOTSUPP | libc::EINVAL) => {
                    copy_by_hand(src, dest, off_in as u64, len)
                }
                _ => Err(e),
            };
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "source shrank while being copied",
            ));
        }
        // SAFETY: as above; only integer arguments.
        let _ = unsafe {
            libc::sync_file_range(
                dest.as_raw_fd(),
                off_out - n as i64,
                n as i64,
                libc::SYNC_FILE_RANGE_WRITE,
            )
        };
    }
    Ok(())
}

fn copy_by_hand(src: &File, dest: &File, from: u64, len: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 1 << 20];
    let mut at = from;
    while at < len {
        let n = src.read_at(&mut buf, at)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "source shrank while being copied",
            ));
        }
        dest.write_all_at(&buf[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::Store;
    use cairn_layer::digest::Digest;

    #[test]
    fn ingests_verifies_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s")).unwrap();
        let data: Vec<u8> = (0..(20 << 20) + 123).map(|i| (i * 7 % 251) as u8).collect();
        let src = dir.path().join("src");
        std::fs::write(&src, &data).unwrap();
        let want = (Digest::of(&data), data.len() as u64);
        let info = store.ingest_file(&src, Some(want)).unwrap();
        assert_eq!((info.digest, info.size), want);
        assert_eq!(std::fs::read(store.blob_path(&info.digest)).unwrap(), data);
        // Again: a no-op.
        assert_eq!(store.ingest_file(&src, Some(want)).unwrap().digest, want.0);
        // A wrong expectation leaves nothing behind.
        let other = dir.path().join("other");
        std::fs::write(&other, b"not it").unwrap();
        let err = store
            .ingest_file(&other, Some((Digest::of(b"x"), 6)))
            .unwrap_err();
        assert!(err.to_string().contains("sha256"), "{err}");
        assert_eq!(std::fs::read_dir(store.layout().tmp()).unwrap().count(), 0);
        // Empty files work too.
        let empty = dir.path().join("empty");
        std::fs::write(&empty, b"").unwrap();
        assert_eq!(store.ingest_file(&empty, None).unwrap().size, 0);
    }
}
