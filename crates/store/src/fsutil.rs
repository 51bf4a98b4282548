//! Small durable-file helpers: write to a temp name, fsync, rename, fsync the dir.

use crate::error::{Result, StoreError};
use std::fs::File;
use std::io::Write;
use std::path::Path;

/// fsync a directory so a rename into it survives a crash.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StoreError::io("fsync directory", dir))
}

/// Replace `dest` with `bytes` atomically: readers see the old or the new file, never half.
/// The temp file is made in `tmp_dir`, which must be on the same filesystem.
pub fn write_atomic(dest: &Path, tmp_dir: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = tempfile::NamedTempFile::new_in(tmp_dir)
        .map_err(StoreError::io("create temp file in", tmp_dir))?;
    tmp.write_all(bytes)
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(StoreError::io("write", tmp.path().to_path_buf()))?;
    tmp.persist(dest)
        .map_err(|e| StoreError::io("rename into", dest)(e.error))?;
    if let Some(parent) = dest.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}
