//! `store.lock`: every process holds it shared while it works; GC holds it
//! exclusive, so it never sweeps a blob another process is about to name.

use crate::error::{Result, StoreError};
use rustix::fs::{flock, FlockOperation};
use std::fs::{File, OpenOptions};
use std::path::Path;

/// How a store handle holds `store.lock`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockMode {
    /// Ordinary work: many processes at once.
    Shared,
    /// Garbage collection: no one else in the store.
    Exclusive,
}

/// A held flock; released when dropped (closing the file releases it).
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
    mode: LockMode,
}

impl StoreLock {
    /// Block until the lock is held in `mode`.
    pub fn acquire(path: &Path, mode: LockMode) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(StoreError::io("open lock file", path))?;
        let op = match mode {
            LockMode::Shared => FlockOperation::LockShared,
            LockMode::Exclusive => FlockOperation::LockExclusive,
        };
        flock(&file, op).map_err(|e| StoreError::Io {
            action: "lock",
            path: path.to_path_buf(),
            source: e.into(),
        })?;
        Ok(StoreLock { _file: file, mode })
    }

    pub fn mode(&self) -> LockMode {
        self.mode
    }
}
